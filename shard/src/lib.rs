//! The d2ae shard format: the one place that `d2ae-ingest` writes and the loader reads.
//!
//! A dataset is a directory (or bucket prefix) holding:
//! - `index.json` ([`DatasetIndex`]), written last, so a dataset without it is incomplete;
//! - `<split>-NNNNNN.tar.zst` shards: zstd-compressed POSIX tars in webdataset layout, each sample a run
//!   of adjacent members `<key>.jpg|png`, `<key>.cls`, `<key>.json` ([`SampleMeta`]);
//! - `rejects.jsonl`: one [`Reject`] per input that did not make it in.
//!
//! [`container`] owns the shard bytes (the tar+zstd writer and reader, member names, `.cls`);
//! [`assemble`] turns a member stream back into samples.
//!
//! `docs/FORMAT.md` is the user-facing description; this crate is the executable one.
//! [`store`] opens a dataset URL (local path, `file://`, `s3://`, `gs://`, `az://`) as an
//! `object_store`, so ingest, loader, trainer and evaluator all reach data the same way.

pub mod assemble;
pub mod container;
pub mod index;
pub mod key;
pub mod sample;
pub mod store;

pub use assemble::{Assembler, ImageKind, RawSample};
pub use container::{
    encode_class, member_name, parse_class, read_members, split_member_name, ContainerError,
    Member, MemberLimits, ShardWriter, WrittenShard, MAX_MEMBER_BYTES,
};
pub use index::{
    DatasetIndex, IdentityEntry, ImageSpec, ShardEntry, SplitIndex, FORMAT_NAME, FORMAT_VERSION,
    INDEX_FILE, MAX_INDEX_BYTES, REJECTS_FILE,
};
pub use key::{sample_key, shard_name};
pub use sample::{Reject, SampleMeta};
pub use store::{
    open_dataset, redact_credentials, DatasetLocation, ReadIndexError, StoreError, StoreOptions,
    DEFAULT_IDLE_TIMEOUT,
};

/// Hex SHA-256 of a byte slice: the checksum recorded for each shard in `index.json`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
