//! Errors: one enum per operation family. Each call returns its family's error, with no
//! catch-all above them: the journal's [`JournalError`], the runtime's [`RuntimeError`], and
//! start-up's [`StartError`], which wraps the others' as its `source()`. The other families
//! live beside their code: `stream::StreamError` and `stream::ImageError`,
//! `snapshot::Unusable`, `engine::EngineError` (with `ReplayError`, `CodecError`,
//! `ModelSnapshotError`), `manifest::ManifestError`, `config::ConfigError`,
//! `protocol::ProtocolError`, `resp::RequestError`, `client::ClientError`. `anyhow` is for
//! the binaries only.
//!
//! Failures that come from outside (disk, network, clients, operators) are typed errors that
//! keep their cause through `source()`. A broken internal invariant is a panic, not an error.

use std::io;
use std::path::PathBuf;

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
    Poisoned {
        reason: String,
        /// The I/O error that poisoned it (shared: every append of the failed frame and
        /// every later one reports it).
        #[source]
        source: Option<std::sync::Arc<io::Error>>,
    },
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

/// Why evringd could not start (or stop cleanly). Each says what to do; the cause, where
/// there is one, is its `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(
        "this evringd was built with the durability rule {0:?} broken on purpose \
         (EVRING_DURABILITY_MUTANT, for the negative controls): rebuild without it"
    )]
    Mutant(&'static str),
    #[error("io_uring is unavailable: {hint}")]
    IoUring {
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "the filesystem of data directory {} does not support direct I/O (O_DIRECT); put the \
         data directory on a filesystem that does (ext4, xfs)",
        data_dir.display()
    )]
    DirectIo {
        data_dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {what} {}", path.display())]
    Path {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "data directory {} is in use by another evringd (it holds the lock on {})",
        data_dir.display(),
        lock.display()
    )]
    Locked { data_dir: PathBuf, lock: PathBuf },
    #[error("listen address {value:?} is not host:port")]
    ListenAddress {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error(
        "cannot listen on {addr}{what}: the address is in use (another evringd or another \
         program listens there; waited {waited_secs} s for it to go)"
    )]
    PortInUse {
        addr: std::net::SocketAddr,
        what: String,
        waited_secs: u64,
    },
    #[error("cannot listen on {addr}{what}")]
    Listen {
        addr: std::net::SocketAddr,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("shard_ports = {base}: shard {shard}'s port {port} {problem}")]
    ShardPort {
        base: u16,
        shard: usize,
        port: u32,
        problem: &'static str,
    },
    #[error("the open-file limit (RLIMIT_NOFILE) cannot be {0}")]
    OpenFileLimit(&'static str, #[source] io::Error),
    #[error(
        "the open-file limit (RLIMIT_NOFILE, hard limit {hard}) leaves no room for client \
         connections: evringd keeps about {reserved} files open for {partitions} partitions; \
         raise it (LimitNOFILE= in the systemd unit, ulimit -n)"
    )]
    NoFilesForConnections {
        hard: u64,
        reserved: u64,
        partitions: u32,
    },
    #[error("cannot serve metrics on {addr:?}")]
    Metrics {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("partition {partition}")]
    Journal {
        partition: u32,
        #[source]
        source: JournalError,
    },
    #[error("partition {partition}: key-value store")]
    KvStore {
        partition: u32,
        #[source]
        source: crate::engine::EngineError,
    },
    #[error("model {name}")]
    Model {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "partition {partition}: the journal starts at segment {first_segment} (retention \
         removed the segments before it) and no usable snapshot covers them; restore the \
         partition's snapshot files (see the log for why each was not usable)"
    )]
    RetainedWithoutSnapshot { partition: u32, first_segment: u64 },
    #[error(
        "partition {partition}: snapshot {} covers LSNs below {from} but the journal does not \
         continue from there (journal ends at {journal_end}, first record scanned \
         {first_scanned:?}); acknowledged data may be missing. Run `evring-inspect verify`; \
         moving the snapshot aside makes evringd recover from the journal alone",
        snapshot.display()
    )]
    SnapshotGap {
        partition: u32,
        snapshot: PathBuf,
        from: u64,
        journal_end: u64,
        first_scanned: Option<u64>,
    },
    #[error(
        "partition {partition} holds stream {stream:?}, whose name routes to partition \
         {routes_to}: the partition directories were moved, or the data directory was \
         written by an evringd that routed names with braces by the whole name, not by their \
         hash tag ({{tag}}). Put the directories back; for the older evringd, start it, read \
         the stream out (evring read) and delete it (evring delete), then start this one and \
         append it again"
    )]
    MisroutedStream {
        partition: u32,
        stream: String,
        routes_to: u32,
    },
    #[error("cannot start shard {shard}'s thread")]
    Thread {
        shard: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("shard {shard} failed to start")]
    Shard {
        shard: usize,
        #[source]
        source: Box<StartError>,
    },
    #[error("shard {0} exited during start-up")]
    ShardExited(usize),
    #[error("a shard thread failed: {0}")]
    ShardPanicked(String),
}
