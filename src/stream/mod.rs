//! The stream layer: one partition's streams on its journal and ring.
mod error;
mod partition;

pub use partition::*;
