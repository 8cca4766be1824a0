//! std-or-loom atomics shim (placeholder).
