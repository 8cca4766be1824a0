//! The stream layer: one partition's streams on its journal and ring.
mod partition;

pub use partition::*;
