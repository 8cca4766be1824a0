//! The atomics the partition ring uses, from std normally and from loom under
//! `--cfg evring_loom` (a crate-specific cfg: `cfg(test)` is never set for a dependency, and
//! dependencies that read plain `cfg(loom)` stay untouched).
//!
//! Every atomic in `src/ring/` is imported from here, so the loom models in `loom-tests/`
//! check the very code the server runs.

#[cfg(evring_loom)]
pub use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(evring_loom)]
pub use loom::sync::Arc;

#[cfg(not(evring_loom))]
pub use std::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(evring_loom))]
pub use std::sync::Arc;
