//! The durable journal: one per partition, a directory of fixed-size segment files written
//! with O_DIRECT group commit (O_DSYNC writes, or writes then fdatasync), recovered exactly
//! after any crash.
//!
//! - [`format`]: segment header, frame header and record layouts (docs/FORMAT.md).
//! - [`device`]: the storage traits the journal is generic over, and a read-only `std::fs`
//!   back end for offline tools.
//! - [`DiskStorage`]: production O_DIRECT files, written through [`uring`], the shard's
//!   own io_uring (frames submitted as they are sealed, completions reaped as they arrive).
//! - [`SimStorage`]: the deterministic simulated disk used by tests (crashes, torn and
//!   misdirected writes, bit flips, EIO, ENOSPC).
//! - [`scan`]: the frame-by-frame scan shared by recovery and `evring-inspect`, and the rule
//!   that tells a torn tail from corruption of acknowledged data.
//! - [`Journal`]: the group-commit writer, recovery at open, and the reader.
//!
//! The durability contract: [`Journal::append`] resolves `Ok` only after the durable write (or
//! write then fdatasync) of the frame holding the records, and of every earlier frame,
//! returned; after that, no crash
//! loses the records, and recovery either restores them byte for byte or refuses to start,
//! naming the segment, offset and failed check.

pub mod backup;
pub mod device;
mod disk;
pub mod format;
pub mod scan;
mod sim;
pub mod uring;
mod writer;

pub use device::{block_on, SegmentFile, StdStorage, Storage};
pub use disk::{DiskFile, DiskStorage, WriteMode};
pub use format::{OwnedRecord, RecordRef, RecordView, StoreId};
pub use sim::{FaultPlan, SimStats, SimStorage};
pub use writer::{
    hex, Appended, Journal, JournalConfig, JournalStats, PendingAppend, RecoveryReport, Resume,
    ScanNext,
};
