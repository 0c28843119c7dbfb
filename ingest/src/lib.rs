//! `d2ae-ingest`: raw face photo collections → training-ready shards (paper §4.1 preprocessing).
//!
//! The steps, one module each, in the order data flows:
//! 1. [`source`] lists a raw dataset (folders, CelebA, CSV/JSONL manifest) into one item list;
//! 2. [`plan`] assigns splits, class indices, keys and the (seeded, identity-mixing) write order;
//! 3. [`make`] turns one photo into a sample: decode ([`image_io`]), detect ([`detect`]), align
//!    ([`align`]), encode; or a reject with a reason;
//! 4. [`run`] does 3 on all cores and writes the results in plan order as tar + zstd shards
//!    (`d2ae_shard::ShardWriter`) through [`sink`] (local disk or object store), keeping [`journal`] receipts so a
//!    killed run resumes; [`index`] writes `index.json` and `rejects.jsonl` last;
//! 5. [`verify`] re-reads a finished dataset and checks it.
//!
//! [`bench`] measures end-to-end ingest against the Python references. [`cli`] holds the command-line flags, [`progress`] the progress bar and summary; [`synth`] makes a
//! synthetic CelebA-layout dataset with known factors for tests and demos.

pub mod align;
pub mod bench;
pub mod cli;
pub mod detect;
pub mod face;
pub mod image_io;
pub mod index;
pub mod journal;
pub mod make;
pub mod plan;
pub mod progress;
pub mod run;
pub mod sink;
pub mod source;
pub mod synth;
pub mod verify;

/// `d2ae-ingest <version>`, recorded in `index.json`.
pub fn tool_version() -> String {
    format!("d2ae-ingest {}", env!("CARGO_PKG_VERSION"))
}
