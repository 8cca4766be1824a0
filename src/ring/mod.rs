//! Partition ring (placeholder).
