//! The group-commit writer: one per partition, owned by the partition's shard thread.
//!
//! ## Algorithm
//!
//! An append encodes its records straight into the *open frame* (a direct-I/O buffer of
//! `frame_bytes_max`, reused from frame to frame), takes the next LSNs, and waits on the
//! frame's completion signal. Sealing (header written, padded to a block) hands the frame
//! to the device as one write at the segment's tail followed by one fdatasync (skipped when
//! the file's writes are durable on completion: `O_DSYNC`); the production device submits
//! it to the kernel at once (`uring.rs`). When the open frame is sealed:
//!
//! - with no frame in flight, at once (a lone append waits for nobody);
//! - when a release frees a slot, at once: the open frame holds what the producers woken
//!   by earlier releases appended, and the disk should not wait for the next burst;
//! - when an append arrives while frames are in flight, at the end of the current burst:
//!   the sealer task is woken, and glommio runs it after the tasks that are ready now, so
//!   one frame carries everything they append rather than each append sealing a frame of
//!   its own;
//! - when the open frame is full and a slot is free, at once.
//!
//! In each case only when fewer than `in_flight_max` frames are in flight and, while any
//! is, the frame holds at least `pipeline_min_bytes` (or is full): many small frames side by
//! side cost more CPU per record (one I/O, interrupt and completion each) than one larger
//! frame a moment later, while large frames gain from overlapping. Until then appends keep
//! filling the open frame: that is the group commit, with no timer. When the open frame is
//! full too, appends wait (back-pressure), so buffered bytes never exceed
//! `(in_flight_max + 1) × frame_bytes_max`.
//!
//! Completions may arrive in any order; they are *released* strictly in LSN order: the oldest
//! in-flight frame is popped only when its own write and sync are done, and only then are its
//! appends answered. A frame counts as in flight until released, which is what bounds the
//! recovery look-ahead (see `scan.rs`): frame n is submitted only after frame
//! n − `in_flight_max` was released.
//!
//! ## Invariants
//!
//! - No append resolves `Ok` before its frame, and every frame before it, is durable: the
//!   fdatasync covering it returned `Ok`, or (O_DSYNC) its write did.
//! - A block that holds a submitted frame is never written again: the tail only moves forward,
//!   and each frame starts on a fresh block.
//! - Any write or fdatasync error poisons the journal: that frame, every frame after it and
//!   every later append fail with [`JournalError::Poisoned`]; nothing is retried (a retried
//!   fsync can falsely succeed after the kernel dropped the dirty pages).
//! - The writer never pipelines across a segment boundary: it drains, then moves to the next
//!   segment (prepared in the background ahead of time). Failing to prepare one for lack of
//!   space fails appends with [`JournalError::DiskFull`] without poisoning; they succeed again
//!   once a segment can be prepared.
//! - Every frame carries `acked_lsn`, the release watermark when it was sealed, so recovery
//!   can prove a damaged frame was acknowledged.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::device::{FrameBuf, SegmentFile, Storage};
use super::format::{
    align_up, check_frame_body, decode_frame_header, seal_frame, FrameExpect, FrameMeta,
    OwnedRecord, RecordIter, RecordRef, RecordView, SegmentMeta, StoreId,
};
use super::scan::{scan, DirtyTail, FrameInfo, IndexEntry, ScanConfig, ScanReport};
use crate::constants::{
    BLOCK_BYTES, FRAME_BYTES_MAX_DEFAULT, FRAME_BYTES_MAX_LIMIT, FRAME_HEADER_BYTES,
    INDEX_STRIDE_BYTES, IN_FLIGHT_FRAMES_DEFAULT, IN_FLIGHT_FRAMES_LIMIT,
    JOURNAL_READ_WINDOW_BYTES, PIPELINE_MIN_BYTES_DEFAULT, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MIN, SEGMENT_FIRST_BYTES, SEGMENT_HEADER_BLOCKS, SPARE_SEGMENTS_MAX,
};
use crate::error::JournalError;
use crate::log_limit::LogLimit;

/// Configuration of one partition's journal.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub store_id: StoreId,
    pub partition: u32,
    pub segment_bytes: u64,
    pub frame_bytes_max: usize,
    pub in_flight_max: usize,
    /// While other frames are in flight, the open frame is sealed only once it holds this
    /// many bytes (or is full); with nothing in flight it is sealed at once.
    pub pipeline_min_bytes: usize,
}

impl JournalConfig {
    pub fn new(store_id: StoreId, partition: u32) -> Self {
        JournalConfig {
            store_id,
            partition,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            in_flight_max: IN_FLIGHT_FRAMES_DEFAULT,
            pipeline_min_bytes: PIPELINE_MIN_BYTES_DEFAULT,
        }
    }

    pub fn validate(&self) -> Result<(), JournalError> {
        let fail = |m: String| Err(JournalError::Config(m));
        if self.frame_bytes_max < BLOCK_BYTES
            || self.frame_bytes_max % BLOCK_BYTES != 0
            || self.frame_bytes_max > FRAME_BYTES_MAX_LIMIT
        {
            return fail(format!(
                "frame_bytes_max must be a multiple of {BLOCK_BYTES} between {BLOCK_BYTES} and \
                 {FRAME_BYTES_MAX_LIMIT}, got {}",
                self.frame_bytes_max
            ));
        }
        if self.segment_bytes % BLOCK_BYTES as u64 != 0
            || self.segment_bytes < SEGMENT_BYTES_MIN
            || self.segment_bytes
                < SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64 + self.frame_bytes_max as u64
        {
            return fail(format!(
                "segment_bytes must be a multiple of {BLOCK_BYTES}, at least {SEGMENT_BYTES_MIN} \
                 and hold two header blocks plus one maximal frame, got {}",
                self.segment_bytes
            ));
        }
        if self.in_flight_max == 0 || self.in_flight_max > IN_FLIGHT_FRAMES_LIMIT {
            return fail(format!(
                "in_flight_max must be between 1 and {IN_FLIGHT_FRAMES_LIMIT}, got {}",
                self.in_flight_max
            ));
        }
        Ok(())
    }

    /// The size of segment `seq`: the first segment holds [`SEGMENT_FIRST_BYTES`] (or two
    /// header blocks and one maximal frame, if that is more), and each next one twice the
    /// previous, up to `segment_bytes`. A new journal thus writes a few MiB before its first
    /// frame, not `segment_bytes`, and a busy one reaches full-size segments after a few rolls.
    pub fn segment_bytes_for(&self, seq: u64) -> u64 {
        let first = SEGMENT_FIRST_BYTES
            .max(SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64 + self.frame_bytes_max as u64)
            .min(self.segment_bytes);
        first
            .checked_shl(seq.min(63) as u32)
            .filter(|b| *b >> seq.min(63) == first)
            .map_or(self.segment_bytes, |b| b.min(self.segment_bytes))
    }

    fn scan_config(&self) -> ScanConfig {
        ScanConfig {
            store_id: Some(self.store_id),
            frame_bytes_max: self.frame_bytes_max,
            in_flight_max: self.in_flight_max,
            first_segment: None,
        }
    }
}

/// Where recovery may start when a snapshot covers the journal's beginning: frames are
/// scanned from `first_segment` on, and `index` (the sparse LSN index of the segments before
/// it, saved with the snapshot) stands in for what their scan would have built.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    pub first_segment: u64,
    pub index: Vec<IndexEntry>,
}

/// The LSNs an append was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_lsn: u64,
    pub last_lsn: u64,
}

/// Counters of one journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub frames_written: u64,
    pub records_written: u64,
    pub bytes_written: u64,
    pub appends_waited_for_space: u64,
    pub segments_created: u64,
    /// The most frames that were in flight at once.
    pub in_flight_peak: u64,
}

/// What recovery found, for logs.
#[derive(Clone, Debug)]
pub struct RecoveryReport {
    pub segments: usize,
    /// The oldest segment present (above 0 once retention removed segments).
    pub first_segment: u64,
    pub frames: u64,
    pub records: u64,
    pub next_lsn: u64,
    pub bytes_scanned: u64,
    pub torn_tail_zeroed: Option<DirtyTail>,
    pub elapsed: std::time::Duration,
}

/// Why a journal refuses appends: what failed, and the I/O error behind it.
#[derive(Clone, Debug)]
struct Poison {
    reason: String,
    source: Option<Arc<io::Error>>,
}

impl Poison {
    fn error(&self) -> JournalError {
        JournalError::Poisoned {
            reason: self.reason.clone(),
            source: self.source.clone(),
        }
    }
}

/// Durability signal shared by the appends of one frame.
/// The most waker slots a new frame's signal starts with ([`State::waiters_hint`]).
const WAITERS_HINT_MAX: usize = 4096;

#[derive(Default)]
struct FrameSignal {
    result: RefCell<Option<Result<(), Poison>>>,
    wakers: RefCell<Vec<Waker>>,
}

impl FrameSignal {
    /// Settles the frame with `result` and wakes its waiters: how many there were.
    fn finish(&self, result: Result<(), Poison>) -> usize {
        if self.result.borrow().is_some() {
            return 0;
        }
        *self.result.borrow_mut() = Some(result);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        let woken = wakers.len();
        for w in wakers {
            w.wake();
        }
        woken
    }
}

/// An append placed in the open frame, not yet durable.
pub struct PendingAppend {
    signal: Rc<FrameSignal>,
    appended: Appended,
}

impl PendingAppend {
    /// The LSNs the records were given.
    pub fn appended(&self) -> Appended {
        self.appended
    }

    /// Resolves once the frame holding these records (and every earlier frame) is durable.
    pub async fn durable(self) -> Result<Appended, JournalError> {
        self.settled().await;
        self.settled_result()
    }

    /// Whether [`Self::durable`] would resolve at once: the frame is durable, or the journal
    /// failed.
    pub fn is_settled(&self) -> bool {
        self.signal.result.borrow().is_some()
    }

    /// Resolves once [`Self::is_settled`] (leaving the result to [`Self::settled_result`]).
    pub fn settled(&self) -> impl Future<Output = ()> + 'static {
        let signal = self.signal.clone();
        async move {
            let _ = WaitSignal(signal).await;
        }
    }

    /// [`Self::durable`]'s result, once [`Self::is_settled`] (asserted).
    pub fn settled_result(self) -> Result<Appended, JournalError> {
        match self.signal.result.borrow().as_ref() {
            Some(Ok(())) => Ok(self.appended),
            Some(Err(poison)) => Err(poison.error()),
            None => panic!("an append's result taken before its frame settled"),
        }
    }
}

struct WaitSignal(Rc<FrameSignal>);

impl Future for WaitSignal {
    type Output = Result<(), Poison>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.0.result.borrow().as_ref() {
            return Poll::Ready(r.clone());
        }
        self.0.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

struct OpenFrame<B> {
    buf: B,
    /// Header + encoded records so far.
    used: usize,
    first_lsn: u64,
    count: u32,
    signal: Rc<FrameSignal>,
}

struct Submission<F: SegmentFile> {
    id: u64,
    file: Rc<F>,
    buf: F::Buf,
    offset: u64,
    prepare: Option<(u64, u64)>,
}

struct Flight {
    id: u64,
    submitted: Instant,
    bytes: u64,
    first_lsn: u64,
    end_lsn: u64,
    /// Where the frame is written: segment and offset (its length is `bytes`).
    segment_seq: u64,
    offset: u64,
    done: Option<io::Result<()>>,
    signal: Rc<FrameSignal>,
}

enum NextSegment<F> {
    None,
    Preparing,
    /// The next segment, prepared, and its size.
    Ready(Rc<F>, u64),
}

struct State<F: SegmentFile> {
    file: Rc<F>,
    seg_seq: u64,
    /// The size of the tail segment (`JournalConfig::segment_bytes_for` when it was made).
    seg_bytes: u64,
    /// A roll to the next segment is under way: nothing more goes into this one.
    rolling: bool,
    offset: u64,
    prev_crc: u32,
    next_lsn: u64,
    acked_lsn: u64,
    /// Where the acknowledged frames end: the segment of the last one and the offset after
    /// it. The bytes before never change ([`Journal::stable_end`]).
    acked_end: (u64, u64),
    oldest_lsn: u64,
    open: Option<OpenFrame<F::Buf>>,
    /// About as many waiters as the last frames made durable woke (the last one's count,
    /// or a larger earlier count decaying by an eighth per frame): the next frame's waker
    /// list starts with room for as many (at most [`WAITERS_HINT_MAX`]), instead of growing
    /// by doubling. Waiters, not records: an append placed without a task waits through its
    /// partition's completer, one waiter for many records, and a list sized by records
    /// would be a large allocation per frame that is never used.
    waiters_hint: usize,
    in_flight: VecDeque<Flight>,
    next_flight_id: u64,
    poisoned: Option<Poison>,
    next_segment: NextSegment<F>,
    /// Producers waiting for room (pipeline, roll or segment preparation).
    space_waiters: Vec<Waker>,
    /// A seal was asked for while frames are in flight; the sealer task does it.
    seal_wanted: bool,
    /// The sealer task, parked until a seal is wanted.
    sealer: Option<Waker>,
    generation: u64,
    index: Vec<IndexEntry>,
    last_indexed: Option<(u64, u64)>,
    stats: JournalStats,
}

/// Metric handles of one journal, looked up once at open.
struct JournalMetrics {
    flush_latency: metrics::Histogram,
    frames: metrics::Counter,
    bytes: metrics::Counter,
    in_flight: metrics::Gauge,
    segment_prepare_failures: metrics::Counter,
    /// 0 from the open on, 1 once a write or fdatasync failed.
    poisoned: metrics::Gauge,
}

impl JournalMetrics {
    fn new(partition: u32) -> JournalMetrics {
        let p = partition.to_string();
        let poisoned =
            metrics::gauge!(crate::metrics::PARTITION_POISONED, "partition" => p.clone());
        poisoned.set(0.0);
        JournalMetrics {
            flush_latency: metrics::histogram!(crate::metrics::FLUSH_LATENCY_SECONDS, "partition" => p.clone()),
            frames: metrics::counter!(crate::metrics::FRAMES_WRITTEN_TOTAL, "partition" => p.clone()),
            bytes: metrics::counter!(crate::metrics::JOURNAL_BYTES_WRITTEN_TOTAL, "partition" => p.clone()),
            in_flight: metrics::gauge!(crate::metrics::FRAMES_IN_FLIGHT, "partition" => p.clone()),
            segment_prepare_failures: metrics::counter!(crate::metrics::SEGMENT_PREPARE_FAILURES, "partition" => p),
            poisoned,
        }
    }
}

struct Shared<S: Storage> {
    storage: S,
    cfg: JournalConfig,
    metrics: JournalMetrics,
    state: RefCell<State<S::File>>,
    closed: Cell<bool>,
    /// The log of failures to prepare the next segment (a full disk repeats them at every
    /// append).
    prepare_failures: LogLimit,
    /// [`SealHold`]s alive: while any is, the open frame is sealed only when it is full.
    seal_holds: Cell<u32>,
    /// Segments opened for reading ([`Journal::visit`]), the latest last, with their length
    /// (fixed: a segment is preallocated whole): at most [`READ_FILES_KEPT`], so a reader
    /// that comes back to the same segment (a consumer group reading behind the ring, in a
    /// full segment or the tail) does not open it (two files) and stat it again each time.
    /// A segment leaves before it is removed or recycled.
    read_files: RefCell<Vec<ReadFile<S::File>>>,
    /// The last frames a visit read and checked, by segment and offset, oldest first, at
    /// most `frame_bytes_max` bytes of them together: readers behind the ring that come
    /// back to the same frames (consumers of one group, each taking the next few entries)
    /// read and check each once. An acknowledged frame never changes, and a segment number
    /// is never used twice, so they cannot go stale.
    last_frames: RefCell<VecDeque<ReadFrame>>,
    /// The headers of the last [`READ_HEADERS_KEPT`] frames a visit read, by segment and
    /// offset, oldest first: a visit walks the frames from an index entry (up to
    /// `INDEX_STRIDE_BYTES` of them) to the one it wants, and readers coming back to the
    /// same stretch do not read those headers again. Immutable for the same reason as
    /// `last_frames`.
    read_headers: RefCell<VecDeque<(u64, u64, FrameMeta)>>,
    /// The bytes a visit last read from a segment at once ([`Journal::read_span`]).
    read_window: RefCell<ReadWindow>,
}

/// [`JOURNAL_READ_WINDOW_BYTES`] of a segment, read at once by a visit: the frames after the
/// one it wanted come from memory, one disk read per window rather than two per frame
/// (header and body). It holds only bytes before [`Journal::stable_end`], which never change
/// while the segment exists, and a segment number is never used twice, so it cannot go
/// stale.
#[derive(Default)]
struct ReadWindow {
    /// The segment (`None`: empty) and the offset of `bytes` in it.
    at: Option<(u64, u64)>,
    bytes: Vec<u8>,
}

/// The most frame headers a journal keeps ([`Shared::read_headers`]): 64 bytes each.
const READ_HEADERS_KEPT: usize = 256;

/// A frame read by a visit and checked: where it is and its bytes.
struct ReadFrame {
    seq: u64,
    offset: u64,
    frame: Rc<KeptFrame>,
}

/// A kept frame's bytes, and where in its body the last visit of it stopped.
struct KeptFrame {
    bytes: Vec<u8>,
    /// The LSN of a record of the body and its byte offset there: the record the last visit
    /// stopped at. A visit that wants this LSN or a later one starts there instead of at
    /// the body's first record — consumers of one group, each taking the next few entries
    /// of a frame of thousands, would otherwise pass over all the records before theirs,
    /// once each (9% of the shard in groups-consume). Records below the wanted LSN are
    /// skipped either way, so the start changes how many are passed over, never which are
    /// visited.
    resume: Cell<(u64, usize)>,
}

/// The most segments a journal keeps open for reading ([`Shared::read_files`]).
const READ_FILES_KEPT: usize = 2;

/// A segment kept open for reading, and its length.
struct ReadFile<F> {
    seq: u64,
    file: Rc<F>,
    /// Its length: fixed from its creation, which preallocates the whole segment.
    len: u64,
}

/// Keeps the open frame open while it lives ([`Journal::hold_seal`]); its drop seals the
/// frame as an append would have.
pub struct SealHold<S: Storage + 'static> {
    journal: Journal<S>,
}

impl<S: Storage + 'static> Drop for SealHold<S> {
    fn drop(&mut self) {
        let holds = &self.journal.shared.seal_holds;
        holds.set(holds.get() - 1);
        self.journal.request_seal();
    }
}

/// One partition's journal. Cloning gives another handle on the same journal.
pub struct Journal<S: Storage + 'static> {
    shared: Rc<Shared<S>>,
}

impl<S: Storage + 'static> Clone for Journal<S> {
    fn clone(&self) -> Self {
        Journal {
            shared: self.shared.clone(),
        }
    }
}

enum Place {
    Placed(Rc<FrameSignal>, Appended),
    Wait,
    Roll,
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl<S: Storage + 'static> Journal<S> {
    /// Opens (recovering) or initializes the journal in `storage`. `on_frame` sees every
    /// valid frame in LSN order (to rebuild in-memory state).
    ///
    /// Must run inside a glommio executor: frames are written by tasks it spawns.
    pub async fn open(
        storage: S,
        cfg: JournalConfig,
        on_frame: impl FnMut(&FrameInfo, &[u8]),
    ) -> Result<(Self, RecoveryReport), JournalError> {
        Self::open_resuming(storage, cfg, None, on_frame).await
    }

    /// [`Journal::open`], scanning frames only from `resume.first_segment` on (a snapshot
    /// holds the state before it). `on_frame` sees the frames scanned.
    pub async fn open_resuming(
        storage: S,
        cfg: JournalConfig,
        resume: Option<Resume>,
        on_frame: impl FnMut(&FrameInfo, &[u8]),
    ) -> Result<(Self, RecoveryReport), JournalError> {
        cfg.validate()?;
        let started = Instant::now();
        let report = scan_store(&storage, &cfg, resume.as_ref(), on_frame).await?;
        let ScanReport {
            tail,
            next_lsn,
            prev_crc,
            dirty,
            index: scanned_index,
            ..
        } = report.clone();
        let index = resumed_index(resume.as_ref(), &report, scanned_index);
        let (seg_seq, offset, file, seg_bytes) = open_tail(&storage, &cfg, &report, tail).await?;
        // Negative control (build.rs): the torn-tail zeroing starts one block early, on the
        // last block of the last acknowledged frame.
        #[cfg(evring_mutant = "rewrite_acked_block")]
        let dirty = dirty.map(|mut d| {
            if d.offset > SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64 {
                d.offset -= BLOCK_BYTES as u64;
                d.len += BLOCK_BYTES as u64;
            }
            d
        });
        if let Some(dirty) = dirty {
            zero_dirty_tail(&storage, &cfg, &file, seg_seq, dirty).await?;
        }
        let oldest_lsn = index
            .first()
            .map(|e| e.first_lsn)
            .or_else(|| report.segments.first().and_then(|s| s.first_lsn))
            .unwrap_or(next_lsn);
        // Spare segments after the tail (prepared before the crash) are kept for use.
        let next_segment = NextSegment::None;
        let shared = Rc::new(Shared {
            storage,
            metrics: JournalMetrics::new(cfg.partition),
            cfg,
            state: RefCell::new(State {
                file,
                seg_seq,
                seg_bytes,
                rolling: false,
                offset,
                prev_crc,
                next_lsn,
                acked_lsn: next_lsn,
                // What recovery found is durable; beyond it the torn tail was zeroed above.
                acked_end: (seg_seq, offset),
                oldest_lsn,
                open: None,
                waiters_hint: 0,
                in_flight: VecDeque::new(),
                next_flight_id: 0,
                poisoned: None,
                next_segment,
                space_waiters: Vec::new(),
                seal_wanted: false,
                sealer: None,
                generation: 0,
                last_indexed: index.last().map(|e| (e.segment_seq, e.offset)),
                index,
                stats: JournalStats::default(),
            }),
            closed: Cell::new(false),
            prepare_failures: LogLimit::default(),
            seal_holds: Cell::new(0),
            read_files: RefCell::new(Vec::new()),
            last_frames: RefCell::new(VecDeque::new()),
            read_headers: RefCell::new(VecDeque::new()),
            read_window: RefCell::new(ReadWindow::default()),
        });
        let journal = Journal { shared };
        journal.adopt_spare_segment().await;
        glommio::spawn_local(sealer(Rc::downgrade(&journal.shared))).detach();
        let recovery = RecoveryReport::new(&report, dirty, started.elapsed());
        Ok((journal, recovery))
    }

    /// Uses an already prepared segment after the tail, if one exists.
    async fn adopt_spare_segment(&self) {
        let next_seq = self.shared.state.borrow().seg_seq + 1;
        let exists = self
            .shared
            .storage
            .list_segments()
            .await
            .map(|s| s.contains(&next_seq))
            .unwrap_or(false);
        if exists {
            let storage = &self.shared.storage;
            if let (Ok(file), Ok(bytes)) = (
                storage.open_segment(next_seq).await,
                storage.segment_len(next_seq).await,
            ) {
                self.shared.state.borrow_mut().next_segment =
                    NextSegment::Ready(Rc::new(file), bytes);
            }
        }
    }

    /// Appends `records` atomically (one frame) and resolves once they are durable.
    pub async fn append(&self, records: &[RecordRef<'_>]) -> Result<Appended, JournalError> {
        loop {
            match self.try_append(records)? {
                Some(pending) => return pending.durable().await,
                None => self.wait_for_room(records).await?,
            }
        }
    }

    /// Places `records` in the open frame now if there is room, without waiting: the LSNs
    /// are assigned at once (so a caller can check and assign stream versions in the same
    /// synchronous step), durability comes later through [`PendingAppend::durable`].
    /// `Ok(None)` means no room: call [`Self::wait_for_room`] and try again.
    pub fn try_append(
        &self,
        records: &[RecordRef<'_>],
    ) -> Result<Option<PendingAppend>, JournalError> {
        // Completions that arrived release their frames first (one may poison the journal,
        // which the check below must then see).
        self.shared.storage.poll_completions();
        let need = self.check_append(records)?;
        match self.try_place(records, need) {
            Place::Placed(signal, appended) => {
                self.request_seal();
                Ok(Some(PendingAppend { signal, appended }))
            }
            Place::Wait | Place::Roll => Ok(None),
        }
    }

    /// Keeps the open frame from being sealed (but when full) until the hold drops: records
    /// placed meanwhile, without a yield between them, share one frame — durable together —
    /// unless they outgrow it. For a transaction; the hold must not outlive it (appends of
    /// others placed meanwhile wait in the frame too).
    pub fn hold_seal(&self) -> SealHold<S> {
        self.shared.seal_holds.set(self.shared.seal_holds.get() + 1);
        SealHold {
            journal: self.clone(),
        }
    }

    /// Waits until `records` may fit: a frame was released, or the tail moved to a new
    /// segment (which this call performs when it is due).
    pub async fn wait_for_room(&self, records: &[RecordRef<'_>]) -> Result<(), JournalError> {
        let need = self.check_append(records)?;
        let roll_due = {
            let st = self.shared.state.borrow();
            let end = st.offset + align_up(FRAME_HEADER_BYTES + need, BLOCK_BYTES) as u64;
            st.open.is_none() && st.in_flight.is_empty() && end > st.seg_bytes
        };
        if roll_due {
            self.roll().await
        } else {
            self.shared
                .state
                .borrow_mut()
                .stats
                .appends_waited_for_space += 1;
            self.wait_change().await;
            Ok(())
        }
    }

    /// Validates an append and returns its encoded size.
    fn check_append(&self, records: &[RecordRef<'_>]) -> Result<usize, JournalError> {
        if let Some(poison) = &self.shared.state.borrow().poisoned {
            return Err(poison.error());
        }
        if self.shared.closed.get() {
            return Err(JournalError::Closed);
        }
        if records.is_empty() {
            return Err(JournalError::InvalidRecord(
                "an append needs at least one record",
            ));
        }
        let mut need = 0usize;
        for r in records {
            r.validate().map_err(JournalError::InvalidRecord)?;
            need += r.encoded_len();
        }
        let max = self.shared.cfg.frame_bytes_max - FRAME_HEADER_BYTES;
        if need > max {
            return Err(JournalError::TooLarge { bytes: need, max });
        }
        Ok(need)
    }

    /// Places the records in the open frame if they fit, sealing the open frame first when
    /// it is full and the pipeline has room.
    fn try_place(&self, records: &[RecordRef<'_>], need: usize) -> Place {
        let mut sealed = None;
        let place = self.try_place_locked(records, need, &mut sealed);
        if let Some(sub) = sealed {
            self.submit(sub);
        }
        place
    }

    fn try_place_locked(
        &self,
        records: &[RecordRef<'_>],
        need: usize,
        sealed: &mut Option<Submission<S::File>>,
    ) -> Place {
        let cfg = &self.shared.cfg;
        let mut st = self.shared.state.borrow_mut();
        // While a roll is under way the segment takes nothing more: the writer never has
        // frames of two segments in flight, and the roll zeroes the block after the last one.
        let seg_end = if st.rolling { st.offset } else { st.seg_bytes };
        loop {
            if let Some(open) = &st.open {
                let fits_frame = open.used + need <= cfg.frame_bytes_max;
                let fits_segment =
                    st.offset + align_up(open.used + need, BLOCK_BYTES) as u64 <= seg_end;
                if fits_frame && fits_segment {
                    break;
                }
                if st.in_flight.len() < cfg.in_flight_max && sealed.is_none() {
                    *sealed = self.seal(&mut st);
                    continue;
                }
                return Place::Wait;
            }
            let fits_segment =
                st.offset + align_up(FRAME_HEADER_BYTES + need, BLOCK_BYTES) as u64 <= seg_end;
            if !fits_segment {
                return if st.in_flight.is_empty() {
                    Place::Roll
                } else {
                    Place::Wait
                };
            }
            let buf = st.file.alloc_buf(cfg.frame_bytes_max);
            st.open = Some(OpenFrame {
                buf,
                used: FRAME_HEADER_BYTES,
                first_lsn: st.next_lsn,
                count: 0,
                signal: Rc::new(FrameSignal {
                    result: RefCell::new(None),
                    wakers: RefCell::new(Vec::with_capacity(st.waiters_hint)),
                }),
            });
            break;
        }
        let first_lsn = st.next_lsn;
        let open = st.open.as_mut().expect("open frame exists");
        let mut at = open.used;
        for (i, r) in records.iter().enumerate() {
            let len = r.encoded_len();
            r.encode(
                first_lsn + i as u64,
                &mut open.buf.bytes_mut()[at..at + len],
            );
            at += len;
        }
        open.used = at;
        open.count += records.len() as u32;
        let signal = open.signal.clone();
        st.next_lsn += records.len() as u64;
        Place::Placed(
            signal,
            Appended {
                first_lsn,
                last_lsn: first_lsn + records.len() as u64 - 1,
            },
        )
    }

    /// Seals the open frame; the caller starts its write + fdatasync with [`Self::submit`]
    /// once it no longer borrows the state (the device may call back before it returns).
    fn seal(&self, st: &mut State<S::File>) -> Option<Submission<S::File>> {
        let mut open = st.open.take()?;
        let cfg = &self.shared.cfg;
        let padded = align_up(open.used, BLOCK_BYTES);
        open.buf.bytes_mut()[open.used..padded].fill(0);
        open.buf.trim(padded);
        let meta = FrameMeta {
            header_crc: 0,
            body_crc: 0,
            store_id: cfg.store_id,
            segment_seq: st.seg_seq,
            first_lsn: open.first_lsn,
            record_count: open.count,
            body_len: (open.used - FRAME_HEADER_BYTES) as u32,
            padded_len: padded as u32,
            block_index: (st.offset / BLOCK_BYTES as u64) as u32,
            prev_crc: st.prev_crc,
            partition: cfg.partition,
            acked_lsn: st.acked_lsn,
        };
        st.prev_crc = seal_frame(open.buf.bytes_mut(), &meta);
        let offset = st.offset;
        let index_due = match st.last_indexed {
            Some((seq, at)) => seq != st.seg_seq || offset >= at + INDEX_STRIDE_BYTES,
            None => true,
        };
        if index_due {
            st.index.push(IndexEntry {
                first_lsn: open.first_lsn,
                segment_seq: st.seg_seq,
                offset,
            });
            st.last_indexed = Some((st.seg_seq, offset));
        }
        st.offset += padded as u64;
        st.stats.frames_written += 1;
        st.stats.records_written += u64::from(open.count);
        st.stats.bytes_written += padded as u64;
        let id = st.next_flight_id;
        st.next_flight_id += 1;
        assert!(
            st.in_flight
                .back()
                .is_none_or(|prev| prev.end_lsn == open.first_lsn),
            "frames go out in LSN order, without a gap"
        );
        st.in_flight.push_back(Flight {
            id,
            submitted: Instant::now(),
            bytes: padded as u64,
            first_lsn: open.first_lsn,
            end_lsn: open.first_lsn + u64::from(open.count),
            segment_seq: st.seg_seq,
            offset,
            done: None,
            signal: open.signal,
        });
        st.stats.in_flight_peak = st.stats.in_flight_peak.max(st.in_flight.len() as u64);
        // Prepare the next segment in the background once this one is half used.
        let mut prepare = None;
        if st.offset > st.seg_bytes / 2 && matches!(st.next_segment, NextSegment::None) {
            st.next_segment = NextSegment::Preparing;
            prepare = Some((st.seg_seq + 1, st.next_lsn));
        }
        Some(Submission {
            id,
            file: st.file.clone(),
            buf: open.buf,
            offset,
            prepare,
        })
    }

    /// Starts the write + fdatasync of a sealed frame (and a segment preparation if due).
    fn submit(&self, sub: Submission<S::File>) {
        let Submission {
            id,
            file,
            buf,
            offset,
            prepare,
        } = sub;
        let journal = self.clone();
        // Durable when the write returns on an O_DSYNC file; otherwise after fdatasync.
        #[cfg(not(evring_mutant = "ack_before_durable"))]
        file.write_durable(
            buf,
            offset,
            Box::new(move |result| journal.complete(id, result)),
        );
        // Negative control (build.rs): the frame is released as soon as it is submitted,
        // whatever its write and fdatasync then do.
        #[cfg(evring_mutant = "ack_before_durable")]
        {
            file.write_durable(buf, offset, Box::new(|_| {}));
            journal.complete(id, Ok(()));
        }
        if let Some((seq, base)) = prepare {
            let journal = self.clone();
            glommio::spawn_local(async move {
                journal.prepare_segment(seq, base).await;
            })
            .detach();
        }
    }

    async fn prepare_segment(&self, seq: u64, base_lsn: u64) {
        let created = create_segment(&self.shared.storage, &self.shared.cfg, seq, base_lsn).await;
        let mut st = self.shared.state.borrow_mut();
        match created {
            Ok(file) => {
                st.stats.segments_created += 1;
                st.next_segment =
                    NextSegment::Ready(Rc::new(file), self.shared.cfg.segment_bytes_for(seq));
                self.shared.prepare_failures.cleared();
            }
            Err(e) => {
                self.segment_failed(&e);
                st.next_segment = NextSegment::None;
            }
        }
        wake_all(&mut st);
    }

    /// Before the tail moves to the next segment: zeroes the block after the last frame of
    /// the current one, durably, unless the segment ends there. A recycled segment holds the
    /// bytes of its former life after its frames; recovery tells a roll from a lost tail by
    /// the zero block where the frames end (docs/FORMAT.md), so it must be there before the
    /// next segment holds a frame. The block holds no frame: no acknowledged data is touched.
    async fn end_segment(&self) -> Result<(), JournalError> {
        let (file, seq, offset, seg_bytes) = {
            let st = self.shared.state.borrow();
            (st.file.clone(), st.seg_seq, st.offset, st.seg_bytes)
        };
        if offset + BLOCK_BYTES as u64 > seg_bytes {
            return Ok(());
        }
        let io = |source| JournalError::Io {
            path: self.shared.storage.describe(seq),
            source,
        };
        let mut buf = file.alloc_buf(BLOCK_BYTES);
        buf.bytes_mut().fill(0);
        file.write_at(buf, offset).await.map_err(io)?;
        file.sync().await.map_err(io)
    }

    /// Counts a failure to prepare the next segment and logs it, at most once per
    /// [`crate::log_limit::REPEAT_PERIOD`]: on a full disk every append retries and fails.
    fn segment_failed(&self, e: &JournalError) {
        self.shared.metrics.segment_prepare_failures.increment(1);
        if let Some(repeats) = self.shared.prepare_failures.occurred(Instant::now()) {
            tracing::warn!(
                partition = self.shared.cfg.partition,
                error = %e,
                repeats_since_last_logged = repeats,
                "preparing the next journal segment failed; appends that need it get error 20 \
                 until it succeeds (retried as appends come; logged at most every {} s)",
                crate::log_limit::REPEAT_PERIOD.as_secs()
            );
        }
    }

    /// Moves the tail to the next segment. Called only when nothing is in flight.
    async fn roll(&self) -> Result<(), JournalError> {
        enum Step<F> {
            Switch(Rc<F>, u64),
            Wait,
            Create(u64, u64),
        }
        loop {
            let step = {
                let mut st = self.shared.state.borrow_mut();
                if !st.in_flight.is_empty() || st.open.is_some() {
                    return Ok(()); // someone else is writing; the caller re-checks.
                }
                st.rolling = true;
                match std::mem::replace(&mut st.next_segment, NextSegment::Preparing) {
                    NextSegment::Ready(file, bytes) => {
                        st.next_segment = NextSegment::None;
                        Step::Switch(file, bytes)
                    }
                    NextSegment::Preparing => Step::Wait,
                    NextSegment::None => Step::Create(st.seg_seq + 1, st.next_lsn),
                }
            };
            let (file, bytes) = match step {
                Step::Switch(file, bytes) => (file, bytes),
                Step::Wait => {
                    self.wait_change().await;
                    continue;
                }
                Step::Create(seq, base) => {
                    let created =
                        create_segment(&self.shared.storage, &self.shared.cfg, seq, base).await;
                    let mut st = self.shared.state.borrow_mut();
                    st.next_segment = NextSegment::None;
                    wake_all(&mut st);
                    if let Err(e) = &created {
                        st.rolling = false;
                        self.segment_failed(e);
                    } else {
                        self.shared.prepare_failures.cleared();
                    }
                    let file = created?;
                    st.stats.segments_created += 1;
                    (Rc::new(file), self.shared.cfg.segment_bytes_for(seq))
                }
            };
            if let Err(e) = self.end_segment().await {
                // An I/O error like any other: fatal for the journal.
                let mut st = self.shared.state.borrow_mut();
                let reason = format!("ending a segment failed: {e}");
                tracing::error!(%reason, "journal poisoned");
                self.shared.metrics.poisoned.set(1.0);
                let poison = Poison {
                    reason,
                    source: match e {
                        JournalError::Io { source, .. } => Some(Arc::new(source)),
                        _ => None,
                    },
                };
                st.poisoned = Some(poison.clone());
                st.rolling = false;
                // The next segment stays ready for the restart's recovery to adopt or ignore.
                st.next_segment = NextSegment::Ready(file, bytes);
                wake_all(&mut st);
                // Like a failed frame: this append and every later one get the poison error.
                return Err(poison.error());
            }
            let mut st = self.shared.state.borrow_mut();
            st.file = file;
            st.seg_seq += 1;
            st.seg_bytes = bytes;
            st.rolling = false;
            st.offset = SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64;
            st.prev_crc = 0;
            wake_all(&mut st);
            return Ok(());
        }
    }

    /// Asks for the open frame to be sealed after an append: at once when nothing is in
    /// flight (a lone append waits for nobody), otherwise by the sealer task, which glommio
    /// runs after the tasks that are ready now, so one frame carries everything they append
    /// (the producers a release just woke, the requests a connection just decoded).
    fn request_seal(&self) {
        if self.shared.seal_holds.get() > 0 {
            return;
        }
        let sealer = {
            let mut st = self.shared.state.borrow_mut();
            if st.open.is_none() {
                return;
            }
            if st.in_flight.is_empty() {
                None
            } else {
                // A running sealer has no waker stored; it sees the flag before it parks.
                st.seal_wanted = true;
                Some(st.sealer.take())
            }
        };
        match sealer {
            None => self.kick(),
            Some(waker) => waker.into_iter().for_each(Waker::wake),
        }
    }

    /// Seals the open frame if the pipeline has room: at once when nothing is in flight,
    /// else once the frame holds `pipeline_min_bytes` (small frames side by side cost more
    /// per event than one frame twice as large a moment later).
    fn kick(&self) {
        if self.shared.seal_holds.get() > 0 {
            return;
        }
        let sealed = {
            let mut st = self.shared.state.borrow_mut();
            let cfg = &self.shared.cfg;
            let worth_it = |st: &State<S::File>| {
                st.in_flight.is_empty()
                    || st
                        .open
                        .as_ref()
                        .is_some_and(|o| o.used >= cfg.pipeline_min_bytes)
            };
            if st.open.is_some()
                && st.in_flight.len() < cfg.in_flight_max
                && st.poisoned.is_none()
                && worth_it(&st)
            {
                self.seal(&mut st)
            } else {
                None
            }
        };
        if let Some(sub) = sealed {
            self.submit(sub);
        }
    }

    /// Records a frame's completion and releases completed frames in LSN order.
    fn complete(&self, id: u64, result: io::Result<()>) {
        {
            let mut st = self.shared.state.borrow_mut();
            // A device completes each frame it was given exactly once.
            let f = st
                .in_flight
                .iter_mut()
                .find(|f| f.id == id)
                .expect("a completion belongs to a frame in flight");
            assert!(f.done.is_none(), "a frame completes once");
            f.done = Some(result);
            while st.in_flight.front().is_some_and(|f| f.done.is_some()) {
                let flight = st.in_flight.pop_front().expect("front exists");
                let done = flight.done.expect("checked above");
                match (&st.poisoned, done) {
                    (None, Ok(())) => {
                        // Released strictly in LSN order: this frame starts where the
                        // acknowledged prefix ends.
                        assert_eq!(
                            flight.first_lsn, st.acked_lsn,
                            "frames release in LSN order"
                        );
                        self.shared.storage.acknowledged(
                            flight.segment_seq,
                            flight.offset,
                            flight.bytes,
                        );
                        let m = &self.shared.metrics;
                        m.flush_latency
                            .record(flight.submitted.elapsed().as_secs_f64());
                        m.frames.increment(1);
                        m.bytes.increment(flight.bytes);
                        st.acked_lsn = flight.end_lsn;
                        st.acked_end = (flight.segment_seq, flight.offset + flight.bytes);
                        let woken = flight.signal.finish(Ok(()));
                        // The hint follows a frame with more waiters at once and one with
                        // fewer slowly, so frames of varying size seldom outgrow it.
                        let decayed = st.waiters_hint - st.waiters_hint / 8;
                        st.waiters_hint = woken.max(decayed).min(WAITERS_HINT_MAX);
                    }
                    (None, Err(e)) => {
                        let reason = format!(
                            "write or fdatasync of {} failed: {e}",
                            self.shared.storage.describe(st.seg_seq)
                        );
                        tracing::error!(%reason, "journal poisoned");
                        self.shared.metrics.poisoned.set(1.0);
                        let poison = Poison {
                            reason,
                            source: Some(Arc::new(e)),
                        };
                        st.poisoned = Some(poison.clone());
                        flight.signal.finish(Err(poison.clone()));
                        if let Some(open) = st.open.take() {
                            open.signal.finish(Err(poison));
                        }
                    }
                    (Some(poison), _) => {
                        flight.signal.finish(Err(poison.clone()));
                    }
                }
            }
            self.shared.metrics.in_flight.set(st.in_flight.len() as f64);
            wake_all(&mut st);
        }
        // The open frame holds what the producers woken by earlier releases appended: it goes
        // out now, into the slot this release freed.
        self.kick();
    }

    /// Waits until the writer's state changes (a release, a roll, a prepared segment).
    async fn wait_change(&self) {
        let start = self.shared.state.borrow().generation;
        std::future::poll_fn(|cx| {
            let mut st = self.shared.state.borrow_mut();
            if st.generation != start {
                Poll::Ready(())
            } else {
                st.space_waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> u64 {
        self.shared.state.borrow().next_lsn
    }

    /// Every LSN below this is durable and acknowledged.
    pub fn acked_lsn(&self) -> u64 {
        self.shared.state.borrow().acked_lsn
    }

    /// The oldest LSN still held in the journal.
    pub fn oldest_lsn(&self) -> u64 {
        self.shared.state.borrow().oldest_lsn
    }

    /// Deletes the segments wholly below segment `keep_from` (a snapshot covers them),
    /// oldest first, while `want(seq, bytes, age)` says so (bytes: all segments' bytes
    /// before removing this one; age: the segment file's age). Never the segment being
    /// written. Returns the LSN of the oldest record still held.
    pub async fn remove_segments_below(
        &self,
        keep_from: u64,
        mut want: impl FnMut(u64, u64, std::time::Duration) -> bool,
    ) -> Result<u64, JournalError> {
        let storage = &self.shared.storage;
        let io = |seq: u64| {
            move |source| JournalError::Io {
                path: storage.describe(seq),
                source,
            }
        };
        let seqs = storage.list_segments().await.map_err(io(keep_from))?;
        let mut total = 0u64;
        for &seq in &seqs {
            total += storage.segment_len(seq).await.map_err(io(seq))?;
        }
        let current = self.shared.state.borrow().seg_seq;
        for seq in seqs {
            if seq >= keep_from || seq >= current {
                break;
            }
            let age = storage.segment_age(seq).await.unwrap_or_default();
            if !want(seq, total, age) {
                break;
            }
            let len = storage.segment_len(seq).await.map_err(io(seq))?;
            // Full-size segments are kept as spares for the next segments (up to
            // `SPARE_SEGMENTS_MAX`): recycling one writes three blocks instead of zero-filling
            // the whole file.
            let spares = storage.list_spares().await.map_or(usize::MAX, |s| s.len());
            // Not kept open for reading any more: a recycled segment's file holds another
            // segment's frames next.
            self.shared.read_files.borrow_mut().retain(|k| k.seq != seq);
            if len == self.shared.cfg.segment_bytes && spares < SPARE_SEGMENTS_MAX {
                storage.retire_segment(seq).await.map_err(io(seq))?;
            } else {
                storage.remove_segment(seq).await.map_err(io(seq))?;
            }
            total -= len;
            let mut st = self.shared.state.borrow_mut();
            st.index.retain(|e| e.segment_seq > seq);
            st.oldest_lsn = st.index.first().map_or(st.next_lsn, |e| e.first_lsn);
            tracing::info!(
                segment = %storage.describe(seq),
                oldest_lsn = st.oldest_lsn,
                "journal segment removed by retention"
            );
        }
        Ok(self.oldest_lsn())
    }

    /// Where a recovery that already has the state of every LSN below `lsn` may start: the
    /// segment of the last index entry at or below `lsn`, and the index of the segments
    /// before it.
    pub fn resume_point(&self, lsn: u64) -> Resume {
        let st = self.shared.state.borrow();
        let pos = st.index.partition_point(|e| e.first_lsn <= lsn);
        let first_segment = match pos.checked_sub(1) {
            Some(i) => st.index[i].segment_seq,
            None => st.index.first().map_or(st.seg_seq, |e| e.segment_seq),
        };
        Resume {
            first_segment,
            index: st
                .index
                .iter()
                .copied()
                .take_while(|e| e.segment_seq < first_segment)
                .collect(),
        }
    }

    /// Why the journal refuses appends, if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.shared
            .state
            .borrow()
            .poisoned
            .as_ref()
            .map(|p| p.reason.clone())
    }

    /// The error every append gets once the journal is poisoned (the I/O error as its
    /// `source()`).
    pub fn poison_error(&self) -> Option<JournalError> {
        self.shared
            .state
            .borrow()
            .poisoned
            .as_ref()
            .map(Poison::error)
    }

    pub fn stats(&self) -> JournalStats {
        self.shared.state.borrow().stats
    }

    pub fn frames_in_flight(&self) -> usize {
        self.shared.state.borrow().in_flight.len()
    }

    /// Waits until every frame submitted so far is released and a segment being prepared in
    /// the background is ready (so a clean stop leaves no half-written temporary file), then
    /// stops accepting appends.
    pub async fn close(&self) {
        loop {
            self.kick();
            let idle = {
                let st = self.shared.state.borrow();
                st.in_flight.is_empty()
                    && st.open.is_none()
                    && !matches!(st.next_segment, NextSegment::Preparing)
            };
            if idle {
                break;
            }
            self.wait_change().await;
        }
        self.shared.closed.set(true);
        let sealer = self.shared.state.borrow_mut().sealer.take();
        if let Some(w) = sealer {
            w.wake();
        }
    }

    /// Reads up to `max` acknowledged records with LSN ≥ `from`, in LSN order.
    pub async fn read(&self, from: u64, max: usize) -> Result<Vec<OwnedRecord>, JournalError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        self.visit(from, |r| {
            out.push(r.to_owned());
            if out.len() < max {
                ScanNext::From(r.lsn + 1)
            } else {
                ScanNext::Stop
            }
        })
        .await?;
        Ok(out)
    }

    /// Visits acknowledged records in LSN order, starting at LSN `from`: each record at or
    /// above the LSN wanted next goes to `visit`, which names the next LSN it wants (above
    /// the record's) or stops the scan. Records below the wanted LSN are passed over without
    /// a copy; a frame that ends at or below it is passed over on its header alone (its body
    /// is not read), and when the sparse index places the wanted LSN beyond the scan's
    /// position the scan jumps there. So a read of a few scattered records reads the frames
    /// that hold them (plus at most `INDEX_STRIDE_BYTES` of frame headers before each), and
    /// memory holds one frame at a time whatever the caller keeps.
    pub async fn visit(
        &self,
        from: u64,
        mut visit: impl FnMut(&RecordView<'_>) -> ScanNext,
    ) -> Result<(), JournalError> {
        let oldest = self.shared.state.borrow().oldest_lsn;
        if from < oldest {
            return Err(JournalError::Truncated { oldest });
        }
        // Where the scan stands: segment, offset of the next frame, the open file, its length.
        let mut at: Option<VisitCursor<S::File>> = None;
        let mut want = from;
        loop {
            let (acked, tail_seq, entry) = self.visit_position(want);
            if want >= acked {
                return Ok(());
            }
            let Some(entry) = entry else {
                return Ok(()); // nothing written yet
            };
            let jump = at
                .as_ref()
                .is_none_or(|at| (entry.segment_seq, entry.offset) > (at.seq, at.offset));
            if jump {
                at = Some(self.visit_segment(entry.segment_seq, entry.offset).await?);
            }
            let cursor = at.as_mut().expect("positioned above");
            if cursor.offset + BLOCK_BYTES as u64 > cursor.len {
                if cursor.seq >= tail_seq {
                    return Ok(());
                }
                let first_frame = SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64;
                *cursor = self.visit_segment(cursor.seq + 1, first_frame).await?;
                continue;
            }
            let Some(meta) = self.visit_header(cursor).await? else {
                // End of this segment's frames: the next segment continues.
                cursor.offset = cursor.len;
                continue;
            };
            if meta.first_lsn >= acked {
                return Ok(());
            }
            if meta.end_lsn() <= want {
                cursor.offset += u64::from(meta.padded_len);
                continue;
            }
            if self
                .visit_frame(cursor, &meta, acked, &mut want, &mut visit)
                .await?
            {
                return Ok(());
            }
            cursor.offset += u64::from(meta.padded_len);
        }
    }

    /// Where a visit that wants LSN `want` next stands: the LSN acknowledged, the tail's
    /// segment, and the last index entry at or below `want` (`None`: nothing written yet).
    fn visit_position(&self, want: u64) -> (u64, u64, Option<IndexEntry>) {
        let st = self.shared.state.borrow();
        let pos = st.index.partition_point(|e| e.first_lsn <= want);
        (
            st.acked_lsn,
            st.seg_seq,
            pos.checked_sub(1).map(|i| st.index[i]),
        )
    }

    /// Opens segment `seq` for a visit, at `offset` (kept open: [`Shared::read_files`]).
    async fn visit_segment(
        &self,
        seq: u64,
        offset: u64,
    ) -> Result<VisitCursor<S::File>, JournalError> {
        let kept = {
            let kept = self.shared.read_files.borrow();
            kept.iter()
                .find(|k| k.seq == seq)
                .map(|k| (k.file.clone(), k.len))
        };
        let (file, len) = match kept {
            Some(kept) => kept,
            None => {
                let storage = &self.shared.storage;
                let file = storage
                    .open_segment(seq)
                    .await
                    .map_err(io_at(storage, seq))?;
                let len = storage
                    .segment_len(seq)
                    .await
                    .map_err(io_at(storage, seq))?;
                let file = Rc::new(file);
                // The tail too: a segment's length is fixed from its creation (preallocated
                // whole), and a visit reads only acknowledged frames, wherever the tail ends.
                let mut kept = self.shared.read_files.borrow_mut();
                kept.retain(|k| k.seq != seq);
                if kept.len() == READ_FILES_KEPT {
                    kept.remove(0);
                }
                kept.push(ReadFile {
                    seq,
                    file: file.clone(),
                    len,
                });
                (file, len)
            }
        };
        Ok(VisitCursor {
            seq,
            offset,
            file,
            len,
        })
    }

    /// The header of the frame at `cursor`; `None` past its segment's last frame.
    async fn visit_header(
        &self,
        cursor: &VisitCursor<S::File>,
    ) -> Result<Option<FrameMeta>, JournalError> {
        let storage = &self.shared.storage;
        let (seq, offset) = (cursor.seq, cursor.offset);
        let kept = self
            .shared
            .read_headers
            .borrow()
            .iter()
            .rev()
            .find(|(s, o, _)| (*s, *o) == (seq, offset))
            .map(|(_, _, meta)| *meta);
        if kept.is_some() {
            return Ok(kept);
        }
        let kept_frame = self.last_frame(seq, offset);
        let read;
        let head: &[u8] = match &kept_frame {
            Some(frame) => &frame.bytes[..BLOCK_BYTES],
            None => {
                read = self.read_span(cursor, offset, BLOCK_BYTES).await?;
                &read
            }
        };
        let expect = FrameExpect {
            store_id: self.shared.cfg.store_id,
            segment_seq: seq,
            block_index: (offset / BLOCK_BYTES as u64) as u32,
            frame_bytes_max: self.shared.cfg.frame_bytes_max,
        };
        match decode_frame_header(head, &expect) {
            Ok(meta) => {
                // Only an acknowledged frame is kept: it never changes.
                if meta.first_lsn < self.shared.state.borrow().acked_lsn {
                    let mut kept = self.shared.read_headers.borrow_mut();
                    if kept.len() == READ_HEADERS_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back((seq, offset, meta));
                }
                Ok(Some(meta))
            }
            Err(super::format::FrameFault::Empty) => Ok(None),
            Err(fault) => Err(read_corrupt(storage.describe(seq), offset, fault)),
        }
    }

    /// Reads the frame at `cursor` (its header `meta`) and passes its records from `want`
    /// on, below `acked`, to `visit`, which moves `want`. Returns true once the visit is
    /// over: `visit` stopped it, or a record is not acknowledged.
    async fn visit_frame(
        &self,
        cursor: &VisitCursor<S::File>,
        meta: &FrameMeta,
        acked: u64,
        want: &mut u64,
        visit: &mut impl FnMut(&RecordView<'_>) -> ScanNext,
    ) -> Result<bool, JournalError> {
        let storage = &self.shared.storage;
        let (seq, offset) = (cursor.seq, cursor.offset);
        let frame = match self.last_frame(seq, offset) {
            Some(frame) => frame,
            None => {
                let bytes = self
                    .read_span(cursor, offset, meta.padded_len as usize)
                    .await?;
                check_frame_body(&bytes, meta)
                    .map_err(|fault| read_corrupt(storage.describe(seq), offset, fault))?;
                let frame = Rc::new(KeptFrame {
                    bytes,
                    resume: Cell::new((meta.first_lsn, 0)),
                });
                let mut kept = self.shared.last_frames.borrow_mut();
                kept.push_back(ReadFrame {
                    seq,
                    offset,
                    frame: frame.clone(),
                });
                let max = self.shared.cfg.frame_bytes_max;
                while kept.len() > 1
                    && kept.iter().map(|f| f.frame.bytes.len()).sum::<usize>() > max
                {
                    kept.pop_front();
                }
                frame
            }
        };
        assert_eq!(
            frame.bytes.len(),
            meta.padded_len as usize,
            "a kept frame is whole"
        );
        let body = &frame.bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + meta.body_len as usize];
        let (resume_lsn, resume_at) = frame.resume.get();
        let start = if resume_lsn <= *want { resume_at } else { 0 };
        let mut records = RecordIter::starting_at(body, start);
        loop {
            let at = records.position();
            let Some(record) = records.next() else { break };
            let record = record.map_err(|_| {
                read_corrupt(
                    storage.describe(seq),
                    offset,
                    super::format::FrameFault::Records,
                )
            })?;
            if record.lsn >= acked {
                frame.resume.set((record.lsn, at));
                return Ok(true);
            }
            if record.lsn < *want {
                continue;
            }
            match visit(&record) {
                ScanNext::Stop => {
                    frame.resume.set((record.lsn, at));
                    return Ok(true);
                }
                ScanNext::From(next) => {
                    assert!(next > record.lsn, "a scan moves forward");
                    *want = next;
                }
            }
        }
        Ok(false)
    }

    /// The `len` bytes at `offset` of the cursor's segment (fewer only at its end), from the
    /// read window when it holds them. Otherwise, when they are stable, the window is read
    /// again from `offset` on (as much of [`JOURNAL_READ_WINDOW_BYTES`] as is stable), and
    /// they come from it; bytes not yet stable are read on their own, never kept.
    async fn read_span(
        &self,
        cursor: &VisitCursor<S::File>,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, JournalError> {
        let storage = &self.shared.storage;
        let seq = cursor.seq;
        let end = offset + len as u64;
        {
            let window = self.shared.read_window.borrow();
            if let Some((at_seq, at)) = window.at {
                if at_seq == seq && at <= offset && end <= at + window.bytes.len() as u64 {
                    let from = (offset - at) as usize;
                    return Ok(window.bytes[from..from + len].to_vec());
                }
            }
        }
        let stable_end = self.stable_end(seq).min(cursor.len);
        if len > JOURNAL_READ_WINDOW_BYTES || end > stable_end {
            return cursor
                .file
                .read_at(offset, len)
                .await
                .map_err(io_at(storage, seq));
        }
        // Out of the cell while the read waits: a visit meanwhile finds no window.
        let mut window = self.shared.read_window.take();
        window.at = None;
        let want = (stable_end - offset).min(JOURNAL_READ_WINDOW_BYTES as u64) as usize;
        cursor
            .file
            .read_into(offset, want, &mut window.bytes)
            .await
            .map_err(io_at(storage, seq))?;
        window.at = Some((seq, offset));
        let got = &window.bytes[..len.min(window.bytes.len())];
        let bytes = got.to_vec();
        *self.shared.read_window.borrow_mut() = window;
        Ok(bytes)
    }

    /// The offset in segment `seq` before which its bytes never change while it exists:
    /// the end of its acknowledged frames in the segment of the last one, the whole of an
    /// earlier segment (its frames are acknowledged, and the zero block after them was
    /// written before the next segment took a frame), nothing of a later one.
    fn stable_end(&self, seq: u64) -> u64 {
        let (acked_seq, acked_end) = self.shared.state.borrow().acked_end;
        match seq.cmp(&acked_seq) {
            std::cmp::Ordering::Less => u64::MAX,
            std::cmp::Ordering::Equal => acked_end,
            std::cmp::Ordering::Greater => 0,
        }
    }

    /// The frame at `offset` of segment `seq`, if it is one of the last a visit read.
    fn last_frame(&self, seq: u64, offset: u64) -> Option<Rc<KeptFrame>> {
        let kept = self.shared.last_frames.borrow();
        kept.iter()
            .rev()
            .find(|f| f.seq == seq && f.offset == offset)
            .map(|f| f.frame.clone())
    }
}

/// Where a [`Journal::visit`] stands: a segment, the offset of the next frame in it, the
/// open file and its length.
struct VisitCursor<F> {
    seq: u64,
    offset: u64,
    file: Rc<F>,
    len: u64,
}

/// The error of an I/O on segment `seq`.
fn io_at<S: Storage>(storage: &S, seq: u64) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: storage.describe(seq),
        source,
    }
}

/// What a [`Journal::visit`] scan does after a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanNext {
    /// Go on to the records from this LSN (above the one just visited).
    From(u64),
    /// Stop the scan.
    Stop,
}

/// The sealer task of one journal (see [`Journal::request_seal`]): parked until a seal is
/// wanted, then seals if the pipeline rules allow. Ends once the journal is closed or gone.
async fn sealer<S: Storage + 'static>(shared: std::rc::Weak<Shared<S>>) {
    loop {
        let wanted = std::future::poll_fn(|cx| {
            let Some(shared) = shared.upgrade() else {
                return Poll::Ready(false);
            };
            if shared.closed.get() {
                return Poll::Ready(false);
            }
            let mut st = shared.state.borrow_mut();
            if std::mem::take(&mut st.seal_wanted) {
                Poll::Ready(true)
            } else {
                st.sealer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if !wanted {
            return;
        }
        if let Some(shared) = shared.upgrade() {
            Journal { shared }.kick();
        }
    }
}

fn read_corrupt(path: String, offset: u64, fault: super::format::FrameFault) -> JournalError {
    JournalError::Corrupt(crate::error::Corruption {
        path,
        segment_seq: 0,
        offset,
        reason: format!("while reading: {fault}"),
    })
}

fn wake_all<F: SegmentFile>(st: &mut State<F>) {
    st.generation += 1;
    for w in st.space_waiters.drain(..) {
        w.wake();
    }
}

impl RecoveryReport {
    /// What recovery did: the scan's `report`, the torn tail zeroed, the time it took.
    fn new(
        report: &ScanReport,
        torn_tail_zeroed: Option<DirtyTail>,
        elapsed: std::time::Duration,
    ) -> RecoveryReport {
        RecoveryReport {
            segments: report.segments.len().max(1),
            first_segment: report.segments.first().map_or(0, |s| s.seq),
            frames: report.frames,
            records: report.records,
            next_lsn: report.next_lsn,
            bytes_scanned: report.bytes_scanned,
            torn_tail_zeroed,
            elapsed,
        }
    }
}

/// Scans the journal in `storage` (from `resume.first_segment` on, if given) for
/// [`Journal::open_resuming`].
async fn scan_store<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    resume: Option<&Resume>,
    on_frame: impl FnMut(&FrameInfo, &[u8]),
) -> Result<ScanReport, JournalError> {
    // Scan with the store id the segments carry, then compare it with the configured one,
    // so a journal of another store gets its own error rather than a corruption report.
    let scan_cfg = ScanConfig {
        store_id: None,
        first_segment: resume.map(|r| r.first_segment),
        ..cfg.scan_config()
    };
    let report = scan(storage, &scan_cfg, on_frame, |_| {}).await?;
    if let Some(found) = report.store_id {
        if found != cfg.store_id {
            return Err(JournalError::WrongStore {
                expected: hex(&cfg.store_id),
                found: hex(&found),
            });
        }
    }
    Ok(report)
}

/// The index of a recovered journal: `scanned`, what the scan built, after the saved index
/// of the segments a resume skipped.
fn resumed_index(
    resume: Option<&Resume>,
    report: &ScanReport,
    scanned: Vec<IndexEntry>,
) -> Vec<IndexEntry> {
    // The saved index of the skipped segments, then what the scan built.
    // (Entries of segments retention has removed are dropped.)
    let first_present = report.segments.first().map_or(0, |s| s.seq);
    match resume {
        Some(r) => r
            .index
            .iter()
            .copied()
            .filter(|e| e.segment_seq < r.first_segment && e.segment_seq >= first_present)
            .chain(scanned)
            .collect(),
        None => scanned,
    }
}

/// The segment a recovered journal goes on writing in: the scan's `tail` (segment and
/// offset), or segment 0, created, for an empty journal. Returns its sequence number, where
/// the next frame goes, the segment and its size in bytes.
async fn open_tail<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    report: &ScanReport,
    tail: Option<(u64, u64)>,
) -> Result<(u64, u64, Rc<S::File>, u64), JournalError> {
    match tail {
        Some((seq, offset)) => {
            let file = storage
                .open_segment(seq)
                .await
                .map_err(|source| JournalError::Io {
                    path: storage.describe(seq),
                    source,
                })?;
            let bytes = report
                .segments
                .iter()
                .find(|s| s.seq == seq)
                .expect("the tail is in a scanned segment")
                .bytes;
            Ok((seq, offset, Rc::new(file), bytes))
        }
        None => {
            let file = create_segment(storage, cfg, 0, 0).await?;
            let bytes = cfg.segment_bytes_for(0);
            Ok((
                0,
                SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64,
                Rc::new(file),
                bytes,
            ))
        }
    }
}

/// Zeroes `dirty`, in the tail segment `seg_seq` (`file`).
async fn zero_dirty_tail<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    file: &S::File,
    seg_seq: u64,
    dirty: DirtyTail,
) -> Result<(), JournalError> {
    // Leftovers of unacknowledged writes: zero them so no later recovery can mistake
    // them for frames, and make that durable before the first new write.
    let mut at = 0u64;
    while at < dirty.len {
        let len = (dirty.len - at).min(cfg.frame_bytes_max as u64) as usize;
        let mut buf = file.alloc_buf(len);
        buf.bytes_mut().fill(0);
        file.write_at(buf, dirty.offset + at)
            .await
            .map_err(|source| JournalError::Io {
                path: storage.describe(seg_seq),
                source,
            })?;
        at += len as u64;
    }
    file.sync().await.map_err(|source| JournalError::Io {
        path: storage.describe(seg_seq),
        source,
    })
}

async fn create_segment<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    seq: u64,
    base_lsn: u64,
) -> Result<S::File, JournalError> {
    let meta = SegmentMeta {
        store_id: cfg.store_id,
        partition: cfg.partition,
        segment_seq: seq,
        base_lsn,
        segment_bytes: cfg.segment_bytes_for(seq),
        created_unix_ns: now_unix_ns(),
    };
    let bytes = cfg.segment_bytes_for(seq);
    // A spare of the right size (a segment retention retired) needs no zero-fill.
    let spare = storage
        .list_spares()
        .await
        .ok()
        .and_then(|spares| spares.into_iter().find(|&(_, b)| b == bytes));
    if let Some((spare, _)) = spare {
        match storage
            .recycle_segment(spare, seq, &meta.encode_block())
            .await
        {
            Ok(file) => {
                tracing::info!(
                    segment = %storage.describe(seq),
                    from = spare,
                    "journal segment recycled from a retired one"
                );
                return Ok(file);
            }
            Err(e) => tracing::warn!(
                segment = %storage.describe(seq),
                error = %e,
                "recycling a retired segment failed; creating a new one"
            ),
        }
    }
    storage
        .create_segment(seq, bytes, &meta.encode_block())
        .await
        .map_err(|source| {
            if source.kind() == io::ErrorKind::StorageFull
                || source.raw_os_error() == Some(libc::ENOSPC)
            {
                JournalError::DiskFull {
                    reason: format!("{}: {source}", storage.describe(seq)),
                }
            } else {
                JournalError::Io {
                    path: storage.describe(seq),
                    source,
                }
            }
        })
}

/// Lower-case hex of a store id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
