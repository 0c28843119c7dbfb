//! Samples as they come out of a tar: member names parsed into key and extension, adjacent
//! members with the same key gathered into one [`RawSample`].
//!
//! Member names are only ever split into strings here; nothing is created on a file system, so a
//! name like `../../etc/passwd.jpg` is just an odd key.

use bytes::Bytes;

/// How an image member is encoded, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
}

impl ImageKind {
    fn from_ext(ext: &str) -> Option<ImageKind> {
        match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(ImageKind::Jpeg),
            "png" => Some(ImageKind::Png),
            _ => None,
        }
    }
}

/// The undecoded members of one sample.
#[derive(Debug, Clone, Default)]
pub struct RawSample {
    /// The key shared by the members.
    pub key: String,
    /// The image member, if present.
    pub image: Option<(ImageKind, Bytes)>,
    /// The `.cls` member.
    pub cls: Option<Bytes>,
    /// The `.json` member.
    pub json: Option<Bytes>,
}

impl RawSample {
    /// Bytes held (for memory accounting and the bytes counter).
    pub fn size(&self) -> usize {
        self.image.as_ref().map_or(0, |(_, b)| b.len())
            + self.cls.as_ref().map_or(0, Bytes::len)
            + self.json.as_ref().map_or(0, Bytes::len)
    }
}

/// `key.ext` → (`key`, `ext`), split at the first dot of the last path component (webdataset's
/// rule). `None` for names without an extension or with an empty key.
pub fn split_member_name(name: &str) -> Option<(&str, &str)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = base_start + name[base_start..].find('.')?;
    let (key, ext) = (&name[..dot], &name[dot + 1..]);
    (!key.is_empty() && !ext.is_empty()).then_some((key, ext))
}

/// Gathers adjacent members into samples.
#[derive(Default)]
pub struct Assembler {
    current: Option<RawSample>,
}

impl Assembler {
    /// Add member `name` with `data`; returns the previous sample when this member starts a new
    /// one. Unknown extensions are ignored (the format may grow members).
    pub fn push(&mut self, key: &str, ext: &str, data: Bytes) -> Option<RawSample> {
        let finished = match &self.current {
            Some(s) if s.key != key => self.current.take(),
            _ => None,
        };
        let sample = self.current.get_or_insert_with(|| RawSample {
            key: key.to_owned(),
            ..Default::default()
        });
        if let Some(kind) = ImageKind::from_ext(ext) {
            sample.image = Some((kind, data));
        } else if ext == "cls" {
            sample.cls = Some(data);
        } else if ext == "json" {
            sample.json = Some(data);
        }
        finished
    }

    /// The last sample, at the end of the tar.
    pub fn finish(&mut self) -> Option<RawSample> {
        self.current.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_member_name("abc_12.jpg"), Some(("abc_12", "jpg")));
        assert_eq!(split_member_name("abc.seg.png"), Some(("abc", "seg.png")));
        assert_eq!(split_member_name("d.x/abc.json"), Some(("d.x/abc", "json")));
        assert_eq!(split_member_name("noext"), None);
        assert_eq!(split_member_name(".hidden"), None);
        assert_eq!(
            split_member_name("../../etc/passwd.jpg"),
            Some(("../../etc/passwd", "jpg"))
        );
    }

    #[test]
    fn adjacent_members_form_one_sample() {
        let mut a = Assembler::default();
        assert!(a.push("a", "jpg", Bytes::from_static(b"J")).is_none());
        assert!(a.push("a", "cls", Bytes::from_static(b"3")).is_none());
        assert!(a.push("a", "txt", Bytes::from_static(b"ignored")).is_none());
        let first = a.push("b", "json", Bytes::from_static(b"{}")).unwrap();
        assert_eq!(first.key, "a");
        assert_eq!(first.image.as_ref().unwrap().0, ImageKind::Jpeg);
        assert_eq!(first.cls.as_deref(), Some(&b"3"[..]));
        assert!(first.json.is_none());
        let last = a.finish().unwrap();
        assert_eq!((last.key.as_str(), last.size()), ("b", 2));
        assert!(a.finish().is_none());
    }
}
