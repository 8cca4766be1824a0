//! loom models of the partition ring live here (built with `--cfg evring_loom`).
