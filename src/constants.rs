//! Every size and limit of evring in one place, with compile-time assertions tying them.
//!
//! Values that an operator may change live in the configuration structs (with these as
//! defaults); the bounds that keep the on-disk format and the buffers consistent are checked
//! here once, at compile time, and again when a configuration is validated.

/// The unit of every journal offset and length, whatever the device reports.
pub const BLOCK_BYTES: usize = 4096;

/// Sector size at which the simulated device may tear a write (and real disks may too).
pub const SECTOR_BYTES: usize = 512;

/// Segment header copies occupy blocks 0 and 1; the first frame starts at this block.
pub const SEGMENT_HEADER_BLOCKS: u64 = 2;

/// Default size of one segment file.
pub const SEGMENT_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// The first segment of a journal: each later one doubles, up to `segment_bytes`
/// (`JournalConfig::segment_bytes_for`), so a new store's footprint is proportionate.
pub const SEGMENT_FIRST_BYTES: u64 = 4 * 1024 * 1024;

/// Segments retention retires that a journal keeps as spares for its next segments (the
/// rest are deleted).
pub const SPARE_SEGMENTS_MAX: usize = 2;

/// Smallest segment accepted: the two header blocks plus room for one maximal frame.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// Largest frame (header + records + padding) by default: one group commit.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// Hard upper bound on a frame, whatever the configuration says (bounds recovery look-ahead
/// and the memory of the in-flight buffers).
pub const FRAME_BYTES_MAX_LIMIT: usize = 16 * 1024 * 1024;

/// Frames being written at once by default (write + fdatasync each).
pub const IN_FLIGHT_FRAMES_DEFAULT: usize = 4;
/// Bytes the open frame must hold before it is sealed while other frames are in flight.
pub const PIPELINE_MIN_BYTES_DEFAULT: usize = 64 * 1024;

/// Upper bound on frames in flight.
pub const IN_FLIGHT_FRAMES_LIMIT: usize = 64;

/// Submission-queue entries of each shard's journal io_uring (completion queue: four times
/// as many). Frames are submitted as they are sealed, so the queue holds at most the
/// entries of one submission unless the kernel pushes back.
pub const JOURNAL_RING_ENTRIES: usize = 256;

/// Free frame buffers a shard keeps for reuse (beyond those held by open and in-flight
/// frames), so frames reuse memory already faulted in.
pub const FRAME_BUF_POOL_MAX: usize = IN_FLIGHT_FRAMES_DEFAULT + 4;

/// Size of the frame header at the start of every frame.
pub const FRAME_HEADER_BYTES: usize = 96;

/// Size of the fixed part of a record (before its variable-length fields).
pub const RECORD_HEADER_BYTES: usize = 72;

/// Records and their fields are aligned to this many bytes inside a frame body.
pub const RECORD_ALIGN: usize = 8;

/// Longest stream name or event type, in bytes (they are length-prefixed by u16 on the wire).
pub const NAME_BYTES_MAX: usize = u16::MAX as usize;

/// The largest frame a connection may send before its HELLO is accepted: a HELLO with the
/// longest client name and token (two u16-length strings after the u16 version), so an
/// unauthenticated connection makes the server buffer at most this much.
pub const HELLO_FRAME_BYTES_MAX: u32 = 16 + 2 + 2 * (2 + NAME_BYTES_MAX as u32);

/// A recovery reads the journal in chunks of this many bytes.
pub const SCAN_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// A read of the journal behind the ring (`Journal::visit`) reads this many bytes of a
/// segment at once and keeps them, so that the frames after the one wanted come from memory.
pub const JOURNAL_READ_WINDOW_BYTES: usize = 1024 * 1024;

/// The journal remembers one (LSN → position) checkpoint at least every this many bytes, so a
/// read from an arbitrary LSN scans at most this much of a segment.
pub const INDEX_STRIDE_BYTES: u64 = 64 * 1024;

const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(BLOCK_BYTES % SECTOR_BYTES == 0);
const _: () = assert!(FRAME_BYTES_MAX_DEFAULT % BLOCK_BYTES == 0);
const _: () = assert!(JOURNAL_READ_WINDOW_BYTES % BLOCK_BYTES == 0);
const _: () = assert!(FRAME_BYTES_MAX_LIMIT % BLOCK_BYTES == 0);
const _: () = assert!(FRAME_BYTES_MAX_DEFAULT <= FRAME_BYTES_MAX_LIMIT);
const _: () = assert!(FRAME_HEADER_BYTES % RECORD_ALIGN == 0);
const _: () = assert!(RECORD_HEADER_BYTES % RECORD_ALIGN == 0);
const _: () = assert!(FRAME_HEADER_BYTES + RECORD_HEADER_BYTES <= BLOCK_BYTES);
const _: () = assert!(SEGMENT_BYTES_DEFAULT % BLOCK_BYTES as u64 == 0);
const _: () = assert!(
    SEGMENT_BYTES_DEFAULT
        >= SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64 + FRAME_BYTES_MAX_DEFAULT as u64
);
const _: () = assert!(SEGMENT_BYTES_MIN % BLOCK_BYTES as u64 == 0);
const _: () = assert!(SEGMENT_FIRST_BYTES % BLOCK_BYTES as u64 == 0);
const _: () = assert!(SEGMENT_FIRST_BYTES <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(IN_FLIGHT_FRAMES_DEFAULT <= IN_FLIGHT_FRAMES_LIMIT);
// A frame is at most two entries (write, fdatasync): one journal's whole pipeline fits.
const _: () = assert!(2 * IN_FLIGHT_FRAMES_LIMIT <= JOURNAL_RING_ENTRIES);
const _: () = assert!(SCAN_CHUNK_BYTES >= FRAME_BYTES_MAX_DEFAULT);
const _: () = assert!(SCAN_CHUNK_BYTES % BLOCK_BYTES == 0);
