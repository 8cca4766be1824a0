//! Time-window aggregations (placeholder).
