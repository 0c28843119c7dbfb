// The same libtorch linking as the trainer: see train/build.rs for why.
include!("../train/build.rs");
