//! The partition ring's source (`src/ring/`, `src/sync.rs`), compiled here so the loom models
//! in `tests/` check the very code the server runs. Built normally this crate is the same
//! ring on std atomics; under `--cfg evring_loom` every atomic is loom's.

#[path = "../../src/sync.rs"]
pub mod sync;

#[path = "../../src/ring/mod.rs"]
pub mod ring;
