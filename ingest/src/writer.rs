//! One shard: a POSIX (ustar) tar in webdataset layout, zstd-compressed as it is written.
//!
//! Headers are fully deterministic (mode 0644, uid/gid 0, mtime 0, no user names), so the same
//! samples in the same order give byte-identical shards: that is what makes `--workers` invisible
//! in the output and lets a resumed run reproduce an interrupted one. The compressed stream goes
//! straight to the destination ([`crate::sink`]), hashed and counted on the way, so a 256 MiB shard
//! never sits in memory whole.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// zstd level: JPEG members do not compress, so a higher level would only cost time.
pub const ZSTD_LEVEL: i32 = 3;

/// Counts and hashes what passes through to `inner`.
pub struct Counted<W> {
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

/// A finished shard's compressed size and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
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

    /// Append one sample's members, in the order given, as `<key>.<ext>`.
    pub fn append_sample(&mut self, key: &str, members: &[(&str, &[u8])]) -> io::Result<()> {
        for (ext, data) in members {
            let mut header = tar::Header::new_ustar();
            header.set_path(format!("{key}.{ext}"))?;
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            self.tar.append(&header, *data)?;
        }
        // End the zstd block here, so `compressed_bytes` is exact at sample boundaries and shard
        // rollover does not lag by zstd's buffer (~128 KiB, more than a whole small shard). It
        // costs a few bytes of block header per sample; JPEG members do not compress anyway.
        self.tar.get_mut().flush()?;
        self.samples += 1;
        Ok(())
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
    pub fn finish(self) -> io::Result<(W, Finished)> {
        let encoder = self.tar.into_inner()?;
        let counted = encoder.finish()?;
        let finished = Finished {
            num_samples: self.samples,
            bytes: counted.bytes,
            sha256: hex::encode(counted.hash.finalize()),
        };
        Ok((counted.inner, finished))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn shard(samples: &[(&str, &[u8])]) -> (Vec<u8>, Finished) {
        let mut w = ShardWriter::new(Vec::new()).unwrap();
        for (key, img) in samples {
            w.append_sample(key, &[("jpg", img), ("cls", b"3"), ("json", b"{}")])
                .unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn writes_a_readable_deterministic_tar_zst() {
        let (bytes, fin) = shard(&[("k1", b"abc"), ("k2", &[7u8; 1000])]);
        assert_eq!(fin.num_samples, 2);
        assert_eq!(fin.bytes, bytes.len() as u64);
        assert_eq!(fin.sha256, d2ae_shard::sha256_hex(&bytes));
        assert_eq!(shard(&[("k1", b"abc"), ("k2", &[7u8; 1000])]).0, bytes);

        let mut tar_bytes = Vec::new();
        zstd::Decoder::new(&bytes[..])
            .unwrap()
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            assert_eq!(entry.header().mode().unwrap(), 0o644);
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            names.push((entry.path().unwrap().display().to_string(), data.len()));
        }
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
        let (_, fin) = w.finish().unwrap();
        assert!(fin.bytes > 390_000);
    }
}
