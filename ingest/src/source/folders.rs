//! The `folders` layout: `root/<identity>/<image>`, identity = the first-level folder name.
//!
//! Images may sit deeper under an identity folder (`root/<identity>/a/b.jpg`); files directly in
//! the root and non-image files are skipped. Symlinks are followed, so a dataset can be assembled
//! from links into other trees. Listing is sorted, so it does not depend on the file system.

use std::path::{Path, PathBuf};

use super::{is_image, relative_source, Layout, SourceDataset, SourceError, SourceItem};

/// List `root/<identity>/**/<image>`.
pub fn load(root: &Path) -> Result<SourceDataset, SourceError> {
    let mut items = Vec::new();
    for identity_dir in sorted_entries(root)? {
        if !identity_dir.is_dir() || is_hidden(&identity_dir) {
            continue;
        }
        let identity = identity_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = Vec::new();
        collect_images(&identity_dir, &mut files)?;
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

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    for path in sorted_entries(dir)? {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_identities_recursively_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "bob/2.jpg",
            "bob/1.PNG",
            "alice/sub/x.jpeg",
            "alice/notes.txt",
            "top.jpg",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        std::fs::create_dir_all(root.join(".cache")).unwrap();
        std::fs::write(root.join(".cache/y.jpg"), b"x").unwrap();
        let ds = load(root).unwrap();
        let listed: Vec<_> = ds
            .items
            .iter()
            .map(|i| (i.identity.as_str(), i.source.as_str()))
            .collect();
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
}
