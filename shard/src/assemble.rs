//! Samples out of a shard's member stream: member names split into key and extension (the
//! container's rule), adjacent members with the same key gathered into one [`RawSample`].

use bytes::Bytes;

use crate::container::{CLASS_EXT, META_EXT};

/// How an image member is encoded, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
}

impl ImageKind {
    /// The kind of an image member with extension `ext` (`jpg`, `jpeg`, `png`, any case).
    pub fn from_ext(ext: &str) -> Option<ImageKind> {
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
    /// What was irregular about the members, one line each: an unknown extension (its data is
    /// dropped; the format may grow members) or a member that came twice (the later one is
    /// kept). Readers may log these; `verify` reports them.
    pub irregular: Vec<String>,
    /// A member was refused for its size (noted in `irregular`): the sample must not be used.
    pub refused: bool,
}

impl RawSample {
    /// Whether every member the format requires (image, `.cls`, `.json`) is here and none was
    /// refused.
    pub fn is_complete(&self) -> bool {
        !self.refused && self.image.is_some() && self.cls.is_some() && self.json.is_some()
    }

    /// Bytes held (for memory accounting and the bytes counter).
    pub fn size(&self) -> usize {
        self.image.as_ref().map_or(0, |(_, b)| b.len())
            + self.cls.as_ref().map_or(0, Bytes::len)
            + self.json.as_ref().map_or(0, Bytes::len)
    }
}

/// Gathers adjacent members into samples.
#[derive(Default)]
pub struct Assembler {
    current: Option<RawSample>,
}

impl Assembler {
    /// The sample that member key `key` belongs to, and the previous sample if `key` starts a
    /// new one.
    fn sample_for(&mut self, key: &str) -> (Option<RawSample>, &mut RawSample) {
        let finished = match &self.current {
            Some(s) if s.key != key => self.current.take(),
            _ => None,
        };
        let sample = self.current.get_or_insert_with(|| RawSample {
            key: key.to_owned(),
            ..Default::default()
        });
        (finished, sample)
    }

    /// Add member `key.ext` with `data`; returns the previous sample when this member starts a
    /// new one. Unknown extensions and repeats are noted in [`RawSample::irregular`].
    pub fn push(&mut self, key: &str, ext: &str, data: Bytes) -> Option<RawSample> {
        let (finished, sample) = self.sample_for(key);
        let repeated = if let Some(kind) = ImageKind::from_ext(ext) {
            sample.image.replace((kind, data)).is_some()
        } else if ext == CLASS_EXT {
            sample.cls.replace(data).is_some()
        } else if ext == META_EXT {
            sample.json.replace(data).is_some()
        } else {
            sample
                .irregular
                .push(format!("unexpected member extension {ext:?}"));
            false
        };
        if repeated {
            let what = if ImageKind::from_ext(ext).is_some() {
                format!("a second image member (.{ext})")
            } else {
                format!("member .{ext} appears twice")
            };
            sample.irregular.push(what);
        }
        finished
    }

    /// Note member `key.ext` of `size` bytes, refused unread for being over `limit`: its sample
    /// is marked [`RawSample::refused`]. Returns the previous sample as [`Assembler::push`] does.
    pub fn push_refused(
        &mut self,
        key: &str,
        ext: &str,
        size: u64,
        limit: u64,
    ) -> Option<RawSample> {
        let (finished, sample) = self.sample_for(key);
        sample.refused = true;
        sample.irregular.push(format!(
            "member .{ext} is {size} bytes, over the {limit}-byte limit for this dataset's samples"
        ));
        finished
    }

    /// The key of the sample being gathered.
    pub fn current_key(&self) -> Option<&str> {
        self.current.as_ref().map(|s| s.key.as_str())
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
    fn adjacent_members_form_one_sample() {
        let mut a = Assembler::default();
        assert!(a.push("a", "jpg", Bytes::from_static(b"J")).is_none());
        assert!(a.push("a", "cls", Bytes::from_static(b"3")).is_none());
        assert!(a.push("a", "txt", Bytes::from_static(b"ignored")).is_none());
        assert!(a.push("a", "cls", Bytes::from_static(b"4")).is_none());
        let first = a.push("b", "json", Bytes::from_static(b"{}")).unwrap();
        assert_eq!(first.key, "a");
        assert_eq!(first.image.as_ref().unwrap().0, ImageKind::Jpeg);
        assert_eq!(first.cls.as_deref(), Some(&b"4"[..]));
        assert!(first.json.is_none());
        assert_eq!(
            first.irregular,
            [
                "unexpected member extension \"txt\"",
                "member .cls appears twice"
            ]
        );
        let last = a.finish().unwrap();
        assert_eq!((last.key.as_str(), last.size()), ("b", 2));
        assert!(a.finish().is_none());
    }

    #[test]
    fn image_kinds_follow_the_extension() {
        assert_eq!(ImageKind::from_ext("JPEG"), Some(ImageKind::Jpeg));
        assert_eq!(ImageKind::from_ext("png"), Some(ImageKind::Png));
        assert_eq!(ImageKind::from_ext("gif"), None);
    }
}
