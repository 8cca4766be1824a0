//! # evring
//!
//! A durable, thread-per-core event store for Linux. Every acknowledged write is on disk
//! (its fdatasync completed) before the acknowledgement leaves; recent events are served from
//! per-partition in-memory rings.
//!
//! The map:
//! - [`journal`]: the per-partition write-ahead journal: on-disk format, group-commit writer
//!   over O_DIRECT io_uring files, crash recovery that tells a torn tail from corruption, the
//!   reader, and a deterministic simulated disk for fault tests.
//! - [`ring`]: the single-writer, multi-reader partition ring with lock-free stable views.
//! - [`aggregate`]: time-window aggregations over ring columns.
//! - [`resp`]: the Redis protocol layer (RESP2 and RESP3): a request parser that accepts
//!   and refuses exactly what Redis 7.0 does, with its error texts, and a reply encoder.
//! - [`shard`]: glommio executors pinned to cores, sized to the locked-memory limit.
//! - [`constants`]: every size and limit, tied by compile-time assertions.
//! - [`error`]: one error enum per operation family.
//! - [`sync`]: the std-or-loom atomics shim.

pub mod aggregate;
pub mod cli;
pub mod client;
pub mod config;
pub mod constants;
pub mod durable;
pub mod engine;
pub mod error;
pub mod journal;
pub mod log_limit;
pub mod manifest;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod protocol;
pub mod resp;
pub mod rfc3339;
pub mod ring;
pub mod server;
pub mod shard;
pub mod snapshot;
pub mod stream;
pub mod sync;
pub mod window;
