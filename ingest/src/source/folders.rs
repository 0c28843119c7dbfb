//! The `folders` layout: `root/<identity>/<image>`, identity = the first-level folder name.
//!
//! Images may sit deeper under an identity folder (`root/<identity>/a/b.jpg`); files directly in
//! the root and non-image files are skipped. Symlinks are followed, so a dataset can be assembled
//! from links into other trees, but each directory is walked once: a link back up the tree
//! (`erin/loop -> ..`) or to a directory already listed is skipped with a warning, so no photo is
//! listed twice or under a second identity. Listing is sorted, so it does not depend on the file
//! system.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{is_image, relative_source, Layout, SourceDataset, SourceError, SourceItem};

/// List `root/<identity>/**/<image>`.
pub fn load(root: &Path) -> Result<SourceDataset, SourceError> {
    let mut items = Vec::new();
    let mut walked = HashSet::new();
    if let Some(id) = dir_id(root) {
        walked.insert(id);
    }
    for identity_dir in sorted_entries(root)? {
        if !identity_dir.is_dir() || is_hidden(&identity_dir) {
            continue;
        }
        let identity = identity_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = Vec::new();
        collect_images(&identity_dir, &mut walked, &mut files)?;
        for path in files {
            items.push(SourceItem {
                source: relative_source(root, &path),
                path,
                identity: identity.clone(),
                landmarks: None,
                face_box: None,
                attributes: Vec::new(),
                factors: Vec::new(),
                split: None,
            });
        }
    }
    Ok(SourceDataset {
        layout: Layout::Folders,
        root: root.to_owned(),
        items,
        attributes: Vec::new(),
        factors: Vec::new(),
    })
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| SourceError::io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SourceError::io(dir, e))?;
    entries.sort();
    Ok(entries)
}

/// A directory's identity on its file system (device, inode), through symlinks.
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Images under `dir`, skipping directories already in `walked` (cycles, second links).
fn collect_images(
    dir: &Path,
    walked: &mut HashSet<(u64, u64)>,
    out: &mut Vec<PathBuf>,
) -> Result<(), SourceError> {
    if let Some(id) = dir_id(dir) {
        if !walked.insert(id) {
            tracing::warn!(
                "skipping {}: it leads to a directory already listed (a symlink loop or a second \
                 link to the same folder)",
                dir.display()
            );
            return Ok(());
        }
    }
    for path in sorted_entries(dir)? {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            collect_images(&path, walked, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Create each of `files` (with its directories) under `root`.
    fn touch(root: &Path, files: &[&str]) {
        for f in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
    }

    /// (identity, source) of each listed item.
    fn listed(ds: &SourceDataset) -> Vec<(&str, &str)> {
        ds.items
            .iter()
            .map(|i| (i.identity.as_str(), i.source.as_str()))
            .collect()
    }

    #[test]
    fn lists_identities_recursively_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(
            root,
            &[
                "bob/2.jpg",
                "bob/1.PNG",
                "alice/sub/x.jpeg",
                "alice/notes.txt",
                "top.jpg",
            ],
        );
        std::fs::create_dir_all(root.join(".cache")).unwrap();
        std::fs::write(root.join(".cache/y.jpg"), b"x").unwrap();
        let ds = load(root).unwrap();
        let listed = listed(&ds);
        assert_eq!(
            listed,
            vec![
                ("alice", "alice/sub/x.jpeg"),
                ("bob", "bob/1.PNG"),
                ("bob", "bob/2.jpg")
            ]
        );
        assert_eq!(ds.items[0].path, root.join("alice/sub/x.jpeg"));
    }

    #[test]
    fn symlink_loops_and_second_links_are_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(root, &["dave/d.jpg", "erin/e.jpg", "erin/anim.gif"]);
        std::os::unix::fs::symlink("..", root.join("erin/loop")).unwrap();
        std::os::unix::fs::symlink(".", root.join("erin/self")).unwrap();
        std::os::unix::fs::symlink("../dave", root.join("erin/dave-again")).unwrap();
        // A link to a folder outside the root is followed (datasets assembled from links).
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("frank")).unwrap();
        let ds = load(root).unwrap();
        let listed = listed(&ds);
        assert_eq!(
            listed,
            vec![
                ("dave", "dave/d.jpg"),
                ("erin", "erin/anim.gif"),
                ("erin", "erin/e.jpg"),
                ("frank", "frank/f.jpg")
            ]
        );
    }
}
