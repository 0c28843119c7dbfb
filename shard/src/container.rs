//! The shard container: a POSIX (ustar) tar in webdataset layout, zstd-compressed.
//!
//! Everything that turns samples into shard bytes and shard bytes back into members lives here,
//! so the writer (`d2ae-ingest`), the reader (the loader), `d2ae-ingest verify` and the tests
//! cannot disagree on a member name, a `.cls` encoding or a header field.
//!
//! Writing: headers are fully deterministic (mode 0644, uid/gid 0, mtime 0, no user names), so
//! the same samples in the same order give byte-identical shards; that is what makes ingest's
//! `--workers` invisible in the output and lets a resumed run reproduce an interrupted one. The
//! compressed stream goes straight to `W`, hashed and counted on the way, so a shard never sits in
//! memory whole.
//!
//! Reading: [`read_members`] streams a shard member by member from any `Read`; only the member
//! being looked at is ever in memory, and only if the caller asks for its body.

use std::io::{self, BufReader, Read, Write};
use std::ops::ControlFlow;

use sha2::{Digest, Sha256};

/// zstd level: JPEG members do not compress, so a higher level would only cost time.
pub const ZSTD_LEVEL: i32 = 3;

/// Largest member a reader takes into memory; anything bigger is not a face crop or its metadata.
pub const MAX_MEMBER_BYTES: u64 = 64 << 20;

/// How large each member of a sample may be, for a dataset whose images are `width × height`:
/// readers refuse a larger member before reading it, so their memory is bounded by the index's
/// image size, not by what a shard claims. An image member may hold up to twice the raw pixels
/// plus 1 MiB (a q100 JPEG or a PNG of noise stays far below), capped at [`MAX_MEMBER_BYTES`];
/// `.cls`, `.json` and any other member up to 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLimits {
    pub image: u64,
    pub other: u64,
}

impl MemberLimits {
    /// The limits for images of `width × height` pixels.
    pub fn for_image(width: u32, height: u32) -> MemberLimits {
        let raw = 3 * u64::from(width) * u64::from(height);
        MemberLimits {
            image: (2 * raw + (1 << 20)).min(MAX_MEMBER_BYTES),
            other: 1 << 20,
        }
    }

    /// The limit for a member with extension `ext`.
    pub fn for_ext(&self, ext: &str) -> u64 {
        if crate::assemble::ImageKind::from_ext(ext).is_some() {
            self.image
        } else {
            self.other
        }
    }

    /// The largest sample a reader can hold: an image and two other members.
    pub fn max_sample(&self) -> u64 {
        self.image + 2 * self.other
    }
}

/// Extension of the class-index member.
pub const CLASS_EXT: &str = "cls";

/// Extension of the sample-metadata member.
pub const META_EXT: &str = "json";

/// The tar member name of `key`'s `ext` member: `<key>.<ext>`.
pub fn member_name(key: &str, ext: &str) -> String {
    format!("{key}.{ext}")
}

/// `key.ext` → (`key`, `ext`), split at the first dot of the last path component: webdataset's
/// rule, so `a.b/c.seg.png` is key `a.b/c` with extension `seg.png`. `None` for names without an
/// extension, whose file name starts with a dot, or that are unsafe as keys: absolute, with a `..`
/// component, or with a control character (newline, NUL, ...). Such members belong to no sample.
///
/// Member names are only ever split into strings; nothing is created on a file system. Unsafe
/// names are refused anyway, since keys end up in logs, feature files and other tools' paths.
pub fn split_member_name(name: &str) -> Option<(&str, &str)> {
    let unsafe_name = name.starts_with('/')
        || name.split('/').any(|part| part == "..")
        || name.chars().any(char::is_control);
    if unsafe_name {
        return None;
    }
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = base_start + name[base_start..].find('.')?;
    let (key, ext) = (&name[..dot], &name[dot + 1..]);
    (dot > base_start && !ext.is_empty()).then_some((key, ext))
}

/// The `.cls` member of a sample of class `identity`: ASCII decimal, no newline.
pub fn encode_class(identity: u32) -> Vec<u8> {
    identity.to_string().into_bytes()
}

/// The class index in a `.cls` member: ASCII decimal, surrounding whitespace allowed (other
/// webdataset writers end it with a newline). `None` for anything else.
pub fn parse_class(bytes: &[u8]) -> Option<u32> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Counts and hashes what passes through to `inner`.
struct Counted<W> {
    inner: W,
    bytes: u64,
    hash: Sha256,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A finished shard's sample count, compressed size and checksum: its entry in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenShard {
    pub num_samples: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Writes samples into a zstd-compressed tar on `W`.
pub struct ShardWriter<W: Write> {
    tar: tar::Builder<zstd::Encoder<'static, Counted<W>>>,
    samples: u64,
}

impl<W: Write> ShardWriter<W> {
    /// Start a shard on `out`.
    pub fn new(out: W) -> io::Result<Self> {
        let counted = Counted {
            inner: out,
            bytes: 0,
            hash: Sha256::new(),
        };
        let encoder = zstd::Encoder::new(counted, ZSTD_LEVEL)?;
        let mut tar = tar::Builder::new(encoder);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(ShardWriter { tar, samples: 0 })
    }

    /// Append one sample's members, in the order given, as `<key>.<ext>`, and count the sample.
    pub fn append_sample(&mut self, key: &str, members: &[(&str, &[u8])]) -> io::Result<()> {
        for (ext, data) in members {
            self.append_member(&member_name(key, ext), data)?;
        }
        // End the zstd block here, so `compressed_bytes` is exact at sample boundaries and shard
        // rollover does not lag by zstd's buffer (~128 KiB, more than a whole small shard). It
        // costs a few bytes of block header per sample; JPEG members do not compress anyway.
        self.tar.get_mut().flush()?;
        self.samples += 1;
        Ok(())
    }

    /// Append one member named exactly `name`, not counted as a sample. For tools and tests that
    /// build shards member by member (including deliberately broken ones).
    pub fn append_member(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.tar.append(&header, data)
    }

    /// Samples written so far.
    pub fn num_samples(&self) -> u64 {
        self.samples
    }

    /// Compressed bytes emitted so far (exact after each sample).
    pub fn compressed_bytes(&self) -> u64 {
        self.tar.get_ref().get_ref().bytes
    }

    /// Write the tar trailer, flush zstd, and hand back the output with the shard's size and hash.
    pub fn finish(self) -> io::Result<(W, WrittenShard)> {
        let encoder = self.tar.into_inner()?;
        let counted = encoder.finish()?;
        let written = WrittenShard {
            num_samples: self.samples,
            bytes: counted.bytes,
            sha256: hex::encode(counted.hash.finalize()),
        };
        Ok((counted.inner, written))
    }
}

/// Why a shard could not be read to its end. Members read before the error stand.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("zstd: {0}")]
    Zstd(#[source] io::Error),
    #[error("tar header: {0}")]
    Header(#[source] io::Error),
    #[error("member {name:?} is {size} bytes, over the {limit} limit")]
    MemberTooLarge { name: String, size: u64, limit: u64 },
    #[error("member {name:?}: {source}")]
    Body {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// One tar member as [`read_members`] meets it. Its body is read only on request.
pub struct Member<'a> {
    name: &'a str,
    size: u64,
    is_file: bool,
    body: &'a mut dyn Read,
}

impl<'a> Member<'a> {
    /// The member's full name (lossily UTF-8), directories included.
    /// Borrowed for the whole visit, not from `self`, so a caller can hold the name (or the key
    /// and extension split from it) while reading the body.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The body's size as the header gives it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether this is a regular file; directories, links and devices belong to no sample.
    pub fn is_file(&self) -> bool {
        self.is_file
    }

    /// Read the body into memory, refusing one larger than `limit` bytes before allocating.
    pub fn read_body(&mut self, limit: u64) -> Result<Vec<u8>, ContainerError> {
        if self.size > limit {
            return Err(ContainerError::MemberTooLarge {
                name: self.name.to_owned(),
                size: self.size,
                limit,
            });
        }
        let mut data = Vec::with_capacity(self.size as usize);
        self.body
            .read_to_end(&mut data)
            .map_err(|source| ContainerError::Body {
                name: self.name.to_owned(),
                source,
            })?;
        Ok(data)
    }
}

/// Stream the members of the zstd-compressed tar read from `reader`, calling `visit` on each
/// until it returns `Break` or the tar ends. A body `visit` does not read is skipped without
/// being copied.
pub fn read_members<R: Read>(
    reader: R,
    mut visit: impl FnMut(Member<'_>) -> ControlFlow<()>,
) -> Result<(), ContainerError> {
    let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::new(reader))
        .map_err(ContainerError::Zstd)?;
    let mut archive = tar::Archive::new(decoder);
    let entries = archive.entries().map_err(ContainerError::Header)?;
    for entry in entries {
        let mut entry = entry.map_err(ContainerError::Header)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = entry.size();
        let is_file = entry.header().entry_type().is_file();
        let member = Member {
            name: &name,
            size,
            is_file,
            body: &mut entry,
        };
        if visit(member).is_break() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(samples: &[(&str, &[u8])]) -> (Vec<u8>, WrittenShard) {
        let mut w = ShardWriter::new(Vec::new()).unwrap();
        for (key, img) in samples {
            w.append_sample(key, &[("jpg", img), ("cls", b"3"), ("json", b"{}")])
                .unwrap();
        }
        w.finish().unwrap()
    }

    /// Every member's name and body, through [`read_members`].
    fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        read_members(bytes, |mut m| {
            let body = m.read_body(MAX_MEMBER_BYTES).unwrap();
            out.push((m.name().to_owned(), body));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[test]
    fn writes_a_deterministic_tar_zst_that_reads_back() {
        let (bytes, written) = shard(&[("k1", b"abc"), ("k2", &[7u8; 1000])]);
        assert_eq!(written.num_samples, 2);
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.sha256, crate::sha256_hex(&bytes));
        assert_eq!(shard(&[("k1", b"abc"), ("k2", &[7u8; 1000])]).0, bytes);

        let names: Vec<(String, usize)> = members(&bytes)
            .into_iter()
            .map(|(n, b)| (n, b.len()))
            .collect();
        assert_eq!(
            names,
            [
                ("k1.jpg".to_string(), 3),
                ("k1.cls".into(), 1),
                ("k1.json".into(), 2),
                ("k2.jpg".into(), 1000),
                ("k2.cls".into(), 1),
                ("k2.json".into(), 2)
            ]
        );

        // The headers are the deterministic ones FORMAT.md promises.
        let tar_bytes = zstd::decode_all(&bytes[..]).unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            assert_eq!(entry.header().mode().unwrap(), 0o644);
            assert_eq!(entry.header().uid().unwrap(), 0);
        }
    }

    #[test]
    fn compressed_size_grows_as_samples_are_added() {
        let mut w = ShardWriter::new(Vec::new()).unwrap();
        // xorshift64 noise: incompressible, like JPEG data.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..400_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        w.append_sample("a", &[("jpg", &noise)]).unwrap();
        assert!(w.compressed_bytes() > 200_000, "{}", w.compressed_bytes());
        let (_, written) = w.finish().unwrap();
        assert!(written.bytes > 390_000);
    }

    #[test]
    fn member_names_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_member_name("abc_12.jpg"), Some(("abc_12", "jpg")));
        assert_eq!(split_member_name("abc.seg.png"), Some(("abc", "seg.png")));
        assert_eq!(split_member_name("d.x/abc.json"), Some(("d.x/abc", "json")));
        assert_eq!(
            split_member_name("a.b/c.d/e.f.g"),
            Some(("a.b/c.d/e", "f.g"))
        );
        assert_eq!(split_member_name("dir/noext"), None);
        assert_eq!(split_member_name("d.x/noext"), None);
        assert_eq!(split_member_name("noext"), None);
        assert_eq!(split_member_name(".hidden"), None);
        assert_eq!(split_member_name("dir/.hidden"), None);
        assert_eq!(split_member_name("trailing."), None);
        for unsafe_name in [
            "../../etc/passwd.jpg",
            "a/../b.jpg",
            "/abs/k.jpg",
            "new\nline.jpg",
            "nul\0.jpg",
        ] {
            assert_eq!(split_member_name(unsafe_name), None, "{unsafe_name:?}");
        }
        assert_eq!(split_member_name("a..b.jpg"), Some(("a", ".b.jpg")));
        for (key, ext) in [("k", "jpg"), ("a/b", "seg.png"), ("x-1_2", "cls")] {
            assert_eq!(
                split_member_name(&member_name(key, ext)),
                Some((key, ext)),
                "{key}.{ext}"
            );
        }
    }

    #[test]
    fn class_members_round_trip_and_reject_junk() {
        for n in [0, 17, u32::MAX] {
            assert_eq!(parse_class(&encode_class(n)), Some(n));
        }
        assert_eq!(encode_class(17), b"17");
        assert_eq!(parse_class(b"5\n"), Some(5));
        for junk in [&b""[..], b"-1", b"x", b"1.5", b"4294967296", &[0xff, 0x31]] {
            assert_eq!(parse_class(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn oversized_members_are_refused_before_reading_and_unread_bodies_are_skipped() {
        let mut w = ShardWriter::new(Vec::new()).unwrap();
        w.append_member("big.jpg", &[1u8; 5000]).unwrap();
        w.append_member("small.cls", b"7").unwrap();
        let (bytes, _) = w.finish().unwrap();
        let mut seen = Vec::new();
        read_members(&bytes[..], |mut m| {
            match m.read_body(1000) {
                Ok(body) => seen.push(format!("{}={}", m.name(), body.len())),
                Err(e) => seen.push(e.to_string()),
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                "member \"big.jpg\" is 5000 bytes, over the 1000 limit".to_string(),
                "small.cls=1".into()
            ]
        );
    }

    #[test]
    fn a_truncated_shard_keeps_the_members_before_the_break() {
        let (bytes, _) = shard(&[("k1", &[1u8; 3000]), ("k2", &[2u8; 3000])]);
        let cut = &bytes[..bytes.len() - 40];
        let mut names = Vec::new();
        let result = read_members(cut, |mut m| {
            if m.read_body(MAX_MEMBER_BYTES).is_ok() {
                names.push(m.name().to_owned());
            }
            ControlFlow::Continue(())
        });
        assert!(result.is_err() || names.len() < 6, "{names:?}");
        assert!(names.starts_with(&["k1.jpg".to_string()]), "{names:?}");
    }

    #[test]
    fn reading_stops_when_the_visitor_breaks() {
        let (bytes, _) = shard(&[("k1", b"a"), ("k2", b"b")]);
        let mut n = 0;
        read_members(&bytes[..], |_| {
            n += 1;
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(n, 2);
    }
}
