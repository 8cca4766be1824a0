//! Errors: one enum per operation family, folded into [`Error`].
//!
//! Failures that come from outside (disk, network, clients, operators) are typed errors that
//! keep their cause through `source()`. A broken internal invariant is a panic, not an error.

use std::io;

/// Where and how a journal was found corrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Path of the segment file (or a simulator name).
    pub path: String,
    pub segment_seq: u64,
    /// Byte offset in the segment where the damaged frame starts.
    pub offset: u64,
    /// The check that failed.
    pub reason: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "journal corrupt in {} at offset {}: {}",
            self.path, self.offset, self.reason
        )
    }
}

/// Errors of the journal: opening, recovery, appends and reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error(
        "{0}; acknowledged data may be damaged, so evring refuses to start. \
         Run `evring-inspect verify` on the data directory for details"
    )]
    Corrupt(Corruption),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A write or fdatasync failed earlier: the journal accepts nothing until restart.
    #[error("partition unavailable: the journal is poisoned after an I/O failure ({reason}); restart evringd to recover from what is on disk")]
    Poisoned { reason: String },
    /// No room to prepare the next segment. Appends resume once space is freed.
    /// The journal was closed (shutdown in progress).
    #[error("shutting down: the journal is closed")]
    Closed,
    #[error("disk full: cannot prepare the next journal segment ({reason})")]
    DiskFull { reason: String },
    #[error(
        "record too large: {bytes} bytes encoded, a frame holds at most {max} bytes of records"
    )]
    TooLarge { bytes: usize, max: usize },
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    #[error("invalid journal configuration: {0}")]
    Config(String),
    /// The requested LSN is below the oldest record the journal still holds.
    #[error("history truncated before LSN {oldest}")]
    Truncated { oldest: u64 },
    #[error("the journal belongs to store {found}, the manifest names {expected}")]
    WrongStore { expected: String, found: String },
}

/// Errors of the runtime: executors, CPU placement, locked memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(
        "locked-memory limit (RLIMIT_MEMLOCK) is {have_kib} KiB but evring needs at least \
         {need_kib} KiB for io_uring; raise it, e.g. `ulimit -l 8192`, or `LimitMEMLOCK=64M` \
         in the systemd unit"
    )]
    MemlockTooLow { have_kib: u64, need_kib: u64 },
    #[error("cannot start the shard executor on CPU {cpu}: {source}")]
    Executor {
        cpu: usize,
        #[source]
        source: io::Error,
    },
}

/// Every evring error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
