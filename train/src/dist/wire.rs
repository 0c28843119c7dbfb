//! The frames exchanged between ranks: a 24-byte header (magic, kind, sequence number, payload
//! length, all little-endian) and the payload. The sequence number is the collective's index, so a
//! rank that called a different collective, or skipped one, is reported rather than misread.

use std::io::{self, Read, Write};

const MAGIC: u32 = 0xD2AE_0001;
pub const HEADER_BYTES: usize = 24;
/// Refuse absurd lengths from a confused or foreign peer instead of allocating them.
pub const MAX_PAYLOAD: u64 = 1 << 36;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// rendezvous, rank → 0: rank, world size, protocol version.
    Hello = 1,
    /// rendezvous, 0 → rank: the shared payload (NCCL unique id or session id).
    Welcome = 2,
    Heartbeat = 3,
    /// all-reduce contribution, rank → 0 (f32 little-endian).
    Reduce = 4,
    /// all-reduce result, 0 → rank.
    Result = 5,
    /// broadcast data (raw bytes), from the root or relayed by rank 0.
    Broadcast = 6,
    /// a rank gives up; payload is the reason (UTF-8).
    Abort = 7,
    Barrier = 8,
    /// clean shutdown: later EOF on this link is expected.
    Bye = 9,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Heartbeat,
            4 => Kind::Reduce,
            5 => Kind::Result,
            6 => Kind::Broadcast,
            7 => Kind::Abort,
            8 => Kind::Barrier,
            9 => Kind::Bye,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub seq: u64,
    pub len: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_BYTES]) -> io::Result<Header> {
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let long = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if word(0) != MAGIC {
            return Err(invalid(format!(
                "bad frame magic {:#010x} (not a d2ae peer, or a corrupted stream)",
                word(0)
            )));
        }
        let kind = Kind::from_u32(word(4))
            .ok_or_else(|| invalid(format!("unknown frame kind {}", word(4))))?;
        let len = long(16);
        if len > MAX_PAYLOAD {
            return Err(invalid(format!("frame of {len} bytes is too large")));
        }
        Ok(Header {
            kind,
            seq: long(8),
            len,
        })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Write one frame (header and payload) with a single buffered write where it is small.
pub fn write_frame(w: &mut impl Write, kind: Kind, seq: u64, payload: &[u8]) -> io::Result<()> {
    let header = Header {
        kind,
        seq,
        len: payload.len() as u64,
    }
    .encode();
    if payload.len() <= 4096 {
        let mut buf = Vec::with_capacity(HEADER_BYTES + payload.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(payload);
        w.write_all(&buf)?;
    } else {
        w.write_all(&header)?;
        w.write_all(payload)?;
    }
    w.flush()
}

/// Read one frame's header; `Ok(None)` on a clean EOF before any byte.
pub fn read_header(r: &mut impl Read) -> io::Result<Option<Header>> {
    let mut b = [0u8; HEADER_BYTES];
    let mut got = 0;
    while got < HEADER_BYTES {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Header::decode(&b).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Reduce, 7, &[1, 2, 3]).unwrap();
        let big = vec![9u8; 10_000];
        write_frame(&mut buf, Kind::Broadcast, 8, &big).unwrap();
        assert_eq!(buf.len(), 2 * HEADER_BYTES + 3 + 10_000);
        let mut r = &buf[..];
        let h = read_header(&mut r).unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                kind: Kind::Reduce,
                seq: 7,
                len: 3
            }
        );
        let mut p = [0u8; 3];
        r.read_exact(&mut p).unwrap();
        assert_eq!(p, [1, 2, 3]);
        let h = read_header(&mut r).unwrap().unwrap();
        assert_eq!((h.kind, h.seq, h.len), (Kind::Broadcast, 8, 10_000));
        r = &r[10_000..];
        assert!(read_header(&mut r).unwrap().is_none());
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut b = Header {
            kind: Kind::Bye,
            seq: 0,
            len: 0,
        }
        .encode();
        b[0] = 0;
        assert!(Header::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut b = Header {
            kind: Kind::Bye,
            seq: 0,
            len: 0,
        }
        .encode();
        b[4] = 99;
        assert!(Header::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("kind 99"));
        // A truncated header is an error, not a clean EOF.
        let mut r = &b[..10];
        assert_eq!(
            read_header(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
