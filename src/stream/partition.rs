//! One partition on its owning shard: the journal, the stream index, expected versions, the
//! idempotency window, placement in arrival order, publication in LSN order, reads, and the
//! partition's subscribers.
//!
//! ## Invariants
//!
//! - Expected-version checks, stream-version assignment and LSN assignment happen in one
//!   synchronous step (`Journal::try_append`), so appends to a stream get consecutive versions
//!   in LSN order even when many are pipelined.
//! - An event becomes visible (reads, stream info, subscribers) only once it is durable and
//!   every LSN before it is too: `published_lsn` is the visibility horizon, advanced in LSN
//!   order by `publish`.
//! - A failed frame poisons the journal; the versions assigned to its appends stay beyond the
//!   visibility horizon forever (until restart recovers from disk).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use super::change::{
    apply_change, in_database, is_list_push, ChangeRequest, Deleted, StreamChange, StreamMeta,
    SADD_TYPE, SET_TYPE,
};
use super::error::StreamError;
use super::idempotency::{check_ids, IdemEntry, Retry};
use super::image::{ImageCopier, Rebuild, IMAGE_SLICE};
use super::payload::{record_reply_bytes, reply_bytes, to_recorded, InMemory};
use super::turns::{Turn, TurnWait, Turns};
use super::view::{PartitionView, StreamIds};
use super::waiters::{WaitEnd, WaitKey, Waiters};
use super::PartitionImage;
use crate::aggregate::groups::Plan;
use crate::journal::device::Storage;
use crate::journal::format::{RECORD_KIND_CHANGE, RECORD_KIND_EVENT};
use crate::journal::{DiskStorage, Journal, RecordRef, RecordView, ScanNext};
use crate::protocol::{
    expected, AppendResult, Direction, Event, Groups, RecordedEvent, StreamId, StreamInfo,
};
use crate::ring::{RingConfig, RingStats};

/// Limits a partition enforces.
#[derive(Clone, Copy, Debug)]
pub struct PartitionLimits {
    pub idempotency_window: usize,
    pub max_read_count: usize,
    /// A READ reply stops adding events past this many bytes (it always holds one).
    pub max_read_bytes: usize,
    pub ring: RingConfig,
    /// The most consumer-group entries (pending entries, consumers, groups) the partition
    /// holds, over all its streams (docs/OPERATIONS.md).
    pub max_group_entries: u64,
    /// How the partition's journal makes frames durable.
    pub write_mode: crate::journal::WriteMode,
}

/// One stream in the index. Invariant: `lsns` and `ids` have one entry per version; `lsns`
/// grow strictly, `ids` never decrease, and an ID equal to the one before it is a deleted
/// version's (lowered by XSETID, see `change`). `newest` is the last of both (asserted in
/// debug builds where it is read).
#[derive(Default)]
pub(super) struct StreamEntry {
    /// `lsns[v]` is the LSN of version `v`.
    pub(super) lsns: Vec<u64>,
    /// `ids[v]` is the stream ID of version `v`.
    pub(super) ids: Vec<StreamId>,
    /// The newest version's LSN and ID (`lsns.last()`, `ids.last()`), beside the vectors'
    /// headers: placing an append reads and checks them here, without a load from the
    /// vectors' tails, which with many streams are not in cache (that load was a tenth of
    /// the shard's time at 50 × 16 single-event appends over 1,000 streams).
    newest: Option<(u64, StreamId)>,
    /// The versions deleted (XDEL, XTRIM).
    pub(super) deleted: Deleted,
    /// What XSETID set.
    pub(super) meta: StreamMeta,
    /// Its consumer groups ([`super::groups`]).
    pub(super) groups: super::groups::StreamGroups,
}

impl StreamEntry {
    /// A stream of the index as a snapshot holds it.
    pub(super) fn from_parts(
        lsns: Vec<u64>,
        ids: Vec<StreamId>,
        mut deleted: Deleted,
        meta: StreamMeta,
        groups: super::groups::StreamGroups,
    ) -> StreamEntry {
        assert_eq!(lsns.len(), ids.len(), "one ID per version");
        // A snapshot written before deletions at the front moved the trim holds them in
        // the set (`Deleted`'s invariant).
        deleted.absorb_front();
        let newest = lsns.last().copied().zip(ids.last().copied());
        StreamEntry {
            lsns,
            ids,
            newest,
            deleted,
            meta,
            groups,
        }
    }

    /// The newest version's LSN and ID.
    fn newest(&self) -> Option<(u64, StreamId)> {
        debug_assert_eq!(
            self.newest,
            self.lsns.last().copied().zip(self.ids.last().copied()),
            "newest is the vectors' last"
        );
        self.newest
    }

    /// How many of its versions have an LSN below `lsn`: with `lsn` the partition's
    /// published LSN, its visible versions (all but the newest few, whose frames are not
    /// durable yet, so searched from the newest: [`super::search`]).
    pub(super) fn visible_below(&self, lsn: u64) -> usize {
        super::search::partition_point_near(&self.lsns, self.lsns.len(), |&l| l < lsn)
    }

    /// The last ID given out in the stream, or set by XSETID (0-0 before either).
    pub(super) fn last_id(&self) -> StreamId {
        let newest = self.newest().map_or(StreamId::ZERO, |(_, id)| id);
        newest.max(self.meta.last_id)
    }

    /// Lowers the IDs of the newest versions above `last` to it (XSETID, which is refused
    /// unless those versions are all deleted; `change`).
    pub(super) fn lower_ids_to(&mut self, last: StreamId) {
        for v in (0..self.ids.len()).rev() {
            if self.ids[v] <= last {
                break;
            }
            assert!(
                self.deleted.contains(v as u64),
                "XSETID lowers only deleted versions' IDs"
            );
            self.ids[v] = last;
        }
        self.newest = self.lsns.last().copied().zip(self.ids.last().copied());
    }

    /// Adds version `lsns.len()` at `lsn` with `id`. (Not checked against what XSETID set:
    /// recovery from a snapshot may replay appends older than the XSETID the snapshot's copy
    /// of the stream already carries.)
    pub(super) fn push(&mut self, lsn: u64, id: StreamId) {
        let newest = self.newest();
        assert!(newest.is_none_or(|(l, _)| l < lsn), "LSNs grow");
        assert!(newest.is_none_or(|(_, last)| last < id), "stream IDs grow");
        self.lsns.push(lsn);
        self.ids.push(id);
        self.newest = Some((lsn, id));
    }
}

/// Whether a stream of the index exists for listings (the RESP port's KEYS, SCAN, EXISTS,
/// TYPE, DBSIZE): once its first event is visible (an append not yet durable, or lost with a
/// failed frame, makes no stream). The one place that decides it, so that a stream marked
/// deleted is left out here.
fn stream_exists(entry: &StreamEntry, published_lsn: u64) -> bool {
    entry.groups.created || entry.lsns.first().is_some_and(|&lsn| lsn < published_lsn)
}

/// What a stream is to the RESP port (`StreamMeta::kind`): a stream, or a Redis list, string
/// or set, told by its first event's type ([`StreamKind::of_event`]). Kept in snapshots as
/// postcard's enum tag (a varint of the variant's index: 0 stream, 1 list, 2 string, 3 set;
/// docs/FORMAT.md), the bytes of the `bool` an older file has for "is a list": new variants
/// go at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamKind {
    #[default]
    Stream,
    List,
    String,
    Set,
}

impl StreamKind {
    fn of(entry: &StreamEntry) -> StreamKind {
        entry.meta.kind
    }

    /// The kind of a stream whose events have this type: list pushes make a list, `$set`
    /// events a string, `$sadd` events a set, any other an event stream.
    pub fn of_event(event_type: &[u8]) -> StreamKind {
        if is_list_push(event_type) {
            StreamKind::List
        } else if event_type == SET_TYPE.as_bytes() {
            StreamKind::String
        } else if event_type == SADD_TYPE.as_bytes() {
            StreamKind::Set
        } else {
            StreamKind::Stream
        }
    }

    /// Its name as Redis's TYPE answers it.
    pub fn redis_type(self) -> &'static str {
        match self {
            StreamKind::Stream => "stream",
            StreamKind::List => "list",
            StreamKind::String => "string",
            StreamKind::Set => "set",
        }
    }
}

/// The stream ID an append asks for its (first) event; later events of the same append get
/// the next IDs, as [`IdSpec::Auto`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSpec {
    /// The next ID by the clock ([`StreamId::next_after`]): Redis's `*`.
    Auto,
    /// This ID, which must be above the stream's last: Redis's `ms-seq`.
    Exact(StreamId),
    /// Milliseconds `ms` and the next sequence number there: Redis's `ms-*`.
    Seq(u64),
}

/// The IDs of `n` events appended after `last` as `spec` asks, at clock time `now_ms`.
fn assign_ids(
    stream: &str,
    last: StreamId,
    spec: IdSpec,
    n: usize,
    now_ms: u64,
) -> Result<Ids, StreamError> {
    let too_small = || StreamError::IdNotAbove {
        stream: stream.to_string(),
        last,
    };
    let first = match spec {
        IdSpec::Auto => StreamId::next_after(last, now_ms),
        IdSpec::Exact(id) if id == StreamId::ZERO => return Err(StreamError::IdZero),
        IdSpec::Exact(id) if id <= last => return Err(too_small()),
        IdSpec::Exact(id) => Some(id),
        IdSpec::Seq(ms) if ms < last.ms => return Err(too_small()),
        IdSpec::Seq(ms) if ms == last.ms => match last.seq.checked_add(1) {
            Some(seq) => Some(StreamId::new(ms, seq)),
            None => return Err(too_small()),
        },
        IdSpec::Seq(ms) => Some(StreamId::new(ms, 0)),
    };
    // The error is built only when it happens (it allocates the stream's name).
    let exhausted = || StreamError::IdsExhausted {
        stream: stream.to_string(),
    };
    if n == 1 {
        return Ok(Ids::One([first.ok_or_else(exhausted)?]));
    }
    let mut ids = Vec::with_capacity(n);
    let mut next = first;
    for _ in 0..n {
        let id = next.ok_or_else(exhausted)?;
        ids.push(id);
        next = StreamId::next_after(id, now_ms);
    }
    Ok(Ids::Many(ids))
}

/// The stream IDs of an append's events ([`assign_ids`]): on the stack for one event, the
/// usual append.
enum Ids {
    One([StreamId; 1]),
    Many(Vec<StreamId>),
}

impl std::ops::Deref for Ids {
    type Target = [StreamId];
    fn deref(&self) -> &[StreamId] {
        match self {
            Ids::One(one) => one,
            Ids::Many(many) => many,
        }
    }
}

/// The most batches the list kept by [`Partition::publish`] keeps room for.
const PUBLISH_READY_KEPT: usize = 64;

/// A sink for events published by this partition (a subscriber).
pub trait PublishSink {
    /// Offers one append's events (all of `stream`), in LSN order; returns false to be
    /// removed (gone or too slow).
    fn offer(&self, stream: &str, events: &[RecordedEvent]) -> bool;
}

/// One append's events, durable, waiting for their turn to be published (in LSN order).
pub(super) struct Durable {
    pub(super) stream: String,
    pub(super) first_version: u64,
    pub(super) events: Vec<Event>,
    /// A stream change (one record, no events), not an append.
    pub(super) change: bool,
}

impl Durable {
    /// A durable stream change of `stream`.
    pub(super) fn change(stream: &str) -> Durable {
        Durable {
            stream: stream.to_string(),
            first_version: 0,
            events: Vec::new(),
            change: true,
        }
    }

    /// The events as subscribers get them, from LSN `first_lsn` of `partition`, and their
    /// stream.
    fn into_recorded(self, first_lsn: u64, partition: u32) -> (String, Vec<RecordedEvent>) {
        let Durable {
            stream,
            first_version,
            events,
            ..
        } = self;
        let recorded = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| RecordedEvent {
                stream: stream.clone(),
                stream_version: first_version + i as u64,
                lsn: first_lsn + i as u64,
                partition,
                event,
            })
            .collect();
        (stream, recorded)
    }
}

/// The most streams a partition has for [`Partition::stream_counts`] to check its counts
/// against a listing of them (a broken count crashes where tests run; beyond, the check
/// would cost what the counts save).
pub const STREAM_COUNTS_CHECKED: usize = 4096;

pub(super) struct State {
    pub(super) mem: InMemory,
    pub(super) streams: super::streams::Streams,
    /// The streams' ids (hashes of their names), and those two names share.
    stream_ids: StreamIds,
    pub(super) idem: HashMap<[u8; 16], IdemEntry>,
    pub(super) idem_order: VecDeque<[u8; 16]>,
    pub(super) published_lsn: u64,
    /// Consumer-group entries (pending entries, consumers, groups) over every stream
    /// (bounded by `PartitionLimits::max_group_entries`).
    pub(super) group_entries: u64,
    pending_publish: BTreeMap<u64, Durable>,
    /// Streams made by an append not published yet: the LSN of their first version, in LSN
    /// order; dropped once published. With `Streams`' counts by database, what
    /// [`Partition::stream_counts`] needs to count the streams that exist without a listing.
    fresh: VecDeque<(u64, Box<str>)>,
    /// The streams (and databases: `true`) deleted most recently, with when (ns), at most
    /// [`RECENTLY_DELETED`] ([`Partition::deleted_lately`]).
    deleted: VecDeque<(String, bool, u64)>,
    /// Retries waiting for the append they repeat to become visible (or fail).
    publish_waiters: Vec<std::task::Waker>,
    /// The order appends are placed in.
    pub(super) turns: Turns,
    sinks: Vec<Rc<dyn PublishSink>>,
    /// Readers waiting for streams' next entries (blocking XREAD).
    pub(super) waiters: Waiters,
    appends: u64,
    events_appended: u64,
    bytes_appended: u64,
    pub(super) errors: u64,
    /// Server-clock time (ns since the Unix epoch) of the last acknowledged append that wrote
    /// events (a retry writes none); 0: none since start.
    last_append_time_ns: u64,
    /// The ring's eviction count already added to the metric.
    evicted_counted: u64,
    /// `appends`, `events_appended` and `bytes_appended` as the metrics have them.
    appends_reported: (u64, u64, u64),
    /// Whether the ring's first eviction since start was logged.
    eviction_logged: bool,
}

/// One partition, owned by one shard. Generic over the journal's storage so the same code
/// runs on real files (glommio, the default) and on the simulated disk in crash tests.
pub struct Partition<S: Storage + 'static = DiskStorage> {
    pub id: u32,
    pub(super) journal: Journal<S>,
    pub(super) limits: PartitionLimits,
    pub(super) state: RefCell<State>,
    ring_events_gauge: metrics::Gauge,
    ring_bytes_gauge: metrics::Gauge,
    ring_evicted_counter: metrics::Counter,
    /// The batches one [`Partition::publish`] makes visible, empty between calls: kept, so
    /// that publishing allocates no list of its own.
    publish_ready: RefCell<Vec<(u64, Durable)>>,
    /// Handles looked up once: a lookup per append (label string, key hash, registry map)
    /// costs more than the increment.
    appends_counter: metrics::Counter,
    events_counter: metrics::Counter,
    bytes_counter: metrics::Counter,
    waits_gauge: metrics::Gauge,
    /// Set while a [`MetricsDeferred`] of this partition lives: appends and publishes leave
    /// the counters and ring gauges to it.
    metrics_deferred: Cell<bool>,
}

/// Defers a partition's append counters and ring gauges to its drop
/// ([`Partition::defer_metrics`]): a batch of appends finished together reports once.
pub struct MetricsDeferred<'a, S: Storage + 'static> {
    part: &'a Partition<S>,
}

impl<S: Storage + 'static> Drop for MetricsDeferred<'_, S> {
    fn drop(&mut self) {
        self.part.metrics_deferred.set(false);
        self.part.report_metrics(&mut self.part.state.borrow_mut());
    }
}

/// The stream deletions a partition remembers ([`Partition::deleted_lately`]).
const RECENTLY_DELETED: usize = 64;

/// A stream as XINFO STREAM describes it ([`Partition::stream_summary`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub length: u64,
    pub last_id: StreamId,
    pub entries_added: u64,
    pub max_deleted_id: StreamId,
    pub first_id: StreamId,
}

/// Counters for STATS and metrics.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct PartitionStats {
    pub partition: u32,
    pub streams: u64,
    pub appends: u64,
    pub events_appended: u64,
    pub bytes_appended: u64,
    pub errors: u64,
    pub published_lsn: u64,
    pub frames_written: u64,
    pub frames_in_flight: u64,
    pub journal_bytes_written: u64,
    pub poisoned: bool,
    /// Server-clock time, in ns since the Unix epoch, of the last acknowledged append that
    /// wrote events to the partition; 0 when none since start.
    pub last_append_time_ns: u64,
    pub ring: RingStats,
}

/// Gives the events without a timestamp the clock read `now` (nanoseconds).
fn stamp(events: &mut [Event], now: u64) {
    for e in events {
        if e.timestamp_ns == 0 {
            e.timestamp_ns = now;
        }
    }
}

pub(super) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// An append placed at once by [`Partition::try_append_now`]: its frame to wait for
/// ([`PlacedAppend::settled`]), then [`Partition::finish_append`].
pub struct PlacedAppend {
    pending: crate::journal::PendingAppend,
    stream: String,
    first_version: u64,
    first_id: StreamId,
    events: Vec<Event>,
    /// The clock read at its arrival.
    now: u64,
}

impl PlacedAppend {
    /// Whether its frame is durable (or the journal failed).
    pub fn is_settled(&self) -> bool {
        self.pending.is_settled()
    }

    /// Resolves once [`Self::is_settled`].
    pub fn settled(&self) -> impl std::future::Future<Output = ()> + 'static {
        self.pending.settled()
    }
}

/// What [`Partition::try_append_now`] did.
pub enum AppendNow {
    /// Placed: to finish once its frame settles.
    Placed(PlacedAppend),
    /// Refused (its checks, its expected version, its IDs, or the journal).
    Failed(StreamError),
    /// Not placed now — another append, change or transaction waits for or holds its turn,
    /// the journal has no room, or it repeats events (idempotency) —: the stream and events
    /// given back, for [`Partition::append_with_id`].
    Later { stream: String, events: Vec<Event> },
}

/// What one attempt to place an append did.
pub(super) enum Placed {
    /// It repeats events already written (or in flight): answer with theirs.
    Retry(Retry),
    /// Placed: its durability to wait for, its first version and that version's stream ID.
    Pending(crate::journal::PendingAppend, u64, StreamId),
    /// The journal has no room now.
    NoRoom,
}

/// What one attempt to place a change did.
pub(super) enum ChangePlaced {
    /// Nothing to delete or set (or no such stream): not journaled.
    Nothing,
    /// Placed: its durability to wait for, and what it deleted (1 for an XSETID).
    Pending(crate::journal::PendingAppend, u64),
    /// The journal has no room now for the change's record (its data).
    NoRoom(Vec<u8>),
}

/// The record of a change of `stream` whose data is `data` (docs/FORMAT.md, kind 4).
pub(super) fn change_record<'a>(stream: &'a str, data: &'a [u8]) -> RecordRef<'a> {
    RecordRef {
        kind: RECORD_KIND_CHANGE,
        id: None,
        stream_version: 0,
        timestamp_ns: now_ns(),
        event_id: [0; 16],
        value: f64::NAN,
        stream: stream.as_bytes(),
        event_type: b"",
        data,
        metadata: b"",
    }
}

/// An append's arguments, checked before it waits for its turn: a stream name, at least one
/// event, an expected version that means something.
pub(super) fn check_append(
    stream: &str,
    expected_version: i64,
    events: &[Event],
) -> Result<(), StreamError> {
    if stream.is_empty() {
        return Err(StreamError::EmptyStreamName);
    }
    if events.is_empty() {
        return Err(StreamError::NoEvents);
    }
    if expected_version < expected::STREAM_EXISTS {
        return Err(StreamError::BadExpectedVersion(expected_version));
    }
    Ok(())
}

/// The journal record (and ring entry) of event `e`, version `stream_version` of `stream`
/// with stream ID `id`.
fn event_record<'a>(
    stream: &'a str,
    stream_version: u64,
    id: StreamId,
    e: &'a Event,
) -> RecordRef<'a> {
    RecordRef {
        kind: RECORD_KIND_EVENT,
        id: Some(id),
        stream_version,
        timestamp_ns: e.timestamp_ns,
        event_id: e.id,
        value: e.value,
        stream: stream.as_bytes(),
        event_type: e.event_type.as_bytes(),
        data: &e.data,
        metadata: &e.metadata,
    }
}

/// The journal records of `events` appended to `stream` from version `first_version` on,
/// with `ids` (none: all zero, for a size check).
pub(super) fn event_records<'a>(
    stream: &'a str,
    first_version: u64,
    ids: Option<&[StreamId]>,
    events: &'a [Event],
) -> Vec<RecordRef<'a>> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let id = ids.map_or(StreamId::ZERO, |ids| ids[i]);
            event_record(stream, first_version + i as u64, id, e)
        })
        .collect()
}

/// The ID of `stream`'s last visible entry, if it has one (a list, string or set has no
/// stream entries).
fn last_visible_id(st: &State, stream: &str) -> Option<StreamId> {
    let entry = st
        .streams
        .get(stream)
        .filter(|e| e.meta.kind == StreamKind::Stream)?;
    let visible = entry.visible_below(st.published_lsn);
    visible.checked_sub(1).map(|v| entry.ids[v])
}

/// A wait registered at a partition ([`Partition::wait_for_entries`]): forgotten when this
/// is dropped, whether the wait ended or its future was dropped.
struct Registered<'a, S: Storage + 'static> {
    part: &'a Partition<S>,
    key: WaitKey,
    streams: &'a [(String, StreamId)],
}

impl<S: Storage + 'static> Drop for Registered<'_, S> {
    fn drop(&mut self) {
        let mut st = self.part.state.borrow_mut();
        st.waiters.remove(self.key, self.streams);
        self.part.waits_gauge.set(st.waiters.len() as f64);
    }
}

fn wake_all(waiters: &mut Vec<std::task::Waker>) {
    for w in waiters.drain(..) {
        w.wake();
    }
}

impl<S: Storage + 'static> Partition<S> {
    /// Wraps a recovered journal and the state rebuilt from it.
    pub fn new(
        id: u32,
        journal: Journal<S>,
        rebuilt: Rebuild,
        limits: PartitionLimits,
    ) -> Partition<S> {
        let mut idem = HashMap::new();
        let mut idem_order = VecDeque::new();
        for (id, entry) in rebuilt.idem {
            idem_order.push_back(id);
            idem.insert(id, entry);
        }
        let published_lsn = journal.acked_lsn();
        let label = id.to_string();
        let ring_events_gauge =
            metrics::gauge!(crate::metrics::RING_EVENTS, "partition" => label.clone());
        let ring_bytes_gauge =
            metrics::gauge!(crate::metrics::RING_BYTES, "partition" => label.clone());
        let ring_evicted_counter =
            metrics::counter!(crate::metrics::RING_EVICTED, "partition" => label.clone());
        let appends_counter =
            metrics::counter!(crate::metrics::APPENDS_TOTAL, "partition" => label.clone());
        let events_counter =
            metrics::counter!(crate::metrics::EVENTS_APPENDED_TOTAL, "partition" => label.clone());
        let bytes_counter =
            metrics::counter!(crate::metrics::APPEND_BYTES_TOTAL, "partition" => label.clone());
        let waits_gauge = metrics::gauge!(crate::metrics::XREAD_WAITS, "partition" => label);
        waits_gauge.set(0.0);
        let rs = rebuilt.mem.ring.stats();
        let mut stream_ids = StreamIds::default();
        let mut group_entries = 0;
        for (name, entry) in &rebuilt.streams {
            stream_ids.note(name.as_bytes());
            entry.groups.check();
            group_entries += entry.groups.entries();
        }
        ring_events_gauge.set(rs.count as f64);
        ring_bytes_gauge.set(rs.payload_bytes as f64);
        Partition {
            id,
            journal,
            limits,
            ring_events_gauge,
            ring_bytes_gauge,
            ring_evicted_counter,
            publish_ready: RefCell::new(Vec::new()),
            appends_counter,
            events_counter,
            bytes_counter,
            waits_gauge,
            metrics_deferred: Cell::new(false),
            state: RefCell::new(State {
                mem: rebuilt.mem,
                streams: rebuilt.streams,
                stream_ids,
                idem,
                idem_order,
                published_lsn,
                group_entries,
                pending_publish: BTreeMap::new(),
                fresh: VecDeque::new(),
                deleted: VecDeque::new(),
                publish_waiters: Vec::new(),
                turns: Turns::default(),
                sinks: Vec::new(),
                waiters: Waiters::default(),
                appends: 0,
                events_appended: 0,
                bytes_appended: 0,
                errors: 0,
                last_append_time_ns: 0,
                // Evictions while the ring was rebuilt at start-up are not counted.
                evicted_counted: rs.evicted,
                appends_reported: (0, 0, 0),
                eviction_logged: false,
            }),
        }
    }

    pub fn journal(&self) -> &Journal<S> {
        &self.journal
    }

    /// A copy of the partition's published state, for a snapshot: a consistent cut at the
    /// published LSN taken on the shard. Synchronous; [`Partition::image_yielding`] is the
    /// same copy in slices.
    pub fn image(&self) -> PartitionImage {
        let lsn = self.state.borrow().published_lsn;
        let mut copier = ImageCopier::new(self, lsn);
        while !copier.step(self, usize::MAX) {}
        copier.finish(self)
    }

    /// [`Partition::image`] in slices of about `IMAGE_SLICE` items, yielding to the executor
    /// between them so appends go on while a snapshot is copied. The cut stays consistent:
    /// stream versions and ring events are taken below the LSN fixed at the start (appends
    /// only add above it); an idempotency entry or ring event evicted meanwhile is simply not
    /// in the image (both are bounded windows, and the ring is a cache).
    pub async fn image_yielding(&self) -> PartitionImage {
        let lsn = self.state.borrow().published_lsn;
        let mut copier = ImageCopier::new(self, lsn);
        while !copier.step(self, IMAGE_SLICE) {
            futures_lite::future::yield_now().await;
        }
        copier.finish(self)
    }

    /// Appends `events` to `stream` if its last version matches `expected_version`; resolves
    /// once they are durable and visible.
    pub async fn append(
        &self,
        stream: &str,
        expected_version: i64,
        events: Vec<Event>,
    ) -> Result<AppendResult, StreamError> {
        self.append_with_id(stream.to_string(), expected_version, events, IdSpec::Auto)
            .await
            .map(|(appended, _)| appended)
    }

    /// [`Partition::append`] with the stream ID of the first event as `id` asks (the others
    /// follow it as [`IdSpec::Auto`]). A retry (idempotency) gets the IDs its original got.
    /// Also returns the stream ID the first event got (`None` only for a retry whose stream
    /// no longer holds its original).
    pub async fn append_with_id(
        &self,
        stream: String,
        expected_version: i64,
        mut events: Vec<Event>,
        id: IdSpec,
    ) -> Result<(AppendResult, Option<StreamId>), StreamError> {
        check_append(&stream, expected_version, &events)?;
        let now = now_ns();
        stamp(&mut events, now);
        let (pending, first_version, first_id) = match self
            .place_in_turn(&stream, expected_version, &events, id, now)
            .await?
        {
            // Boxed, as the other rare waits below: an append's future stays small, and every
            // append's task is allocated and moved at its size.
            Placed::Retry(retry) => {
                let first_id = self.stream_id_of(&stream, retry.first_version);
                let appended = Box::pin(self.await_retry(retry)).await?;
                return Ok((appended, first_id));
            }
            // The first ID as placed: a deletion placed while this append waits cannot hide it.
            Placed::Pending(pending, first_version, first_id) => {
                (pending, first_version, Some(first_id))
            }
            Placed::NoRoom => unreachable!("the loop goes on while there is no room"),
        };
        debug_assert_eq!(first_id, self.stream_id_of(&stream, first_version));
        let appended = self.await_durable(pending).await?;
        let result = self.published(appended, stream, first_version, events, now);
        Ok((result, first_id))
    }

    /// [`Partition::append_with_id`] without a task to wait in: places the append at once
    /// when its turn is free (no append, change or transaction holds or waits for one, so
    /// placing now keeps the order of arrival) and the journal has room. A placed append is
    /// finished by [`Partition::finish_append`] once its frame settles; anything else that
    /// would wait is given back ([`AppendNow::Later`]).
    pub fn try_append_now(
        &self,
        stream: String,
        expected_version: i64,
        mut events: Vec<Event>,
        id: IdSpec,
    ) -> AppendNow {
        if let Err(e) = check_append(&stream, expected_version, &events) {
            return AppendNow::Failed(e);
        }
        let turns_free = {
            let st = self.state.borrow();
            st.turns.serving == st.turns.next_ticket
        };
        if !turns_free {
            return AppendNow::Later { stream, events };
        }
        let now = now_ns();
        stamp(&mut events, now);
        match self.place(&stream, expected_version, &events, id, now) {
            Err(e) => AppendNow::Failed(e),
            Ok(Placed::Pending(pending, first_version, first_id)) => {
                debug_assert_eq!(Some(first_id), self.stream_id_of(&stream, first_version));
                AppendNow::Placed(PlacedAppend {
                    pending,
                    stream,
                    first_version,
                    first_id,
                    events,
                    now,
                })
            }
            Ok(Placed::Retry(_) | Placed::NoRoom) => {
                // Given back as it came: `append_with_id` stamps the events with the clock
                // reading its IDs come from. (An event that came with this very nanosecond
                // as its timestamp is stamped again, a few microseconds later.)
                for e in &mut events {
                    if e.timestamp_ns == now {
                        e.timestamp_ns = 0;
                    }
                }
                AppendNow::Later { stream, events }
            }
        }
    }

    /// Finishes an append [`Partition::try_append_now`] placed, once its frame settled
    /// (asserted): what [`Partition::append_with_id`] returns for it.
    pub fn finish_append(
        &self,
        placed: PlacedAppend,
    ) -> Result<(AppendResult, Option<StreamId>), StreamError> {
        assert!(placed.is_settled(), "an append finished before its frame");
        let appended = placed
            .pending
            .settled_result()
            .map_err(|e| self.durable_failed(e))?;
        let result = self.published(
            appended,
            placed.stream,
            placed.first_version,
            placed.events,
            placed.now,
        );
        Ok((result, Some(placed.first_id)))
    }

    /// A durable append's last steps: counted, published, and its result.
    fn published(
        &self,
        appended: crate::journal::Appended,
        stream: String,
        first_version: u64,
        events: Vec<Event>,
        now: u64,
    ) -> AppendResult {
        let n = events.len() as u64;
        self.count_appended(&events, now);
        self.publish(
            appended.first_lsn,
            Durable {
                stream,
                first_version,
                events,
                change: false,
            },
        );
        AppendResult {
            first_version,
            last_version: first_version + n - 1,
            partition: self.id,
            lsn: appended.first_lsn,
        }
    }

    /// The stream ID of version `version` of `stream`, if the stream holds it.
    fn stream_id_of(&self, stream: &str, version: u64) -> Option<StreamId> {
        let st = self.state.borrow();
        let entry = st.streams.get(stream)?;
        entry.ids.get(usize::try_from(version).ok()?).copied()
    }

    /// Places an append in the journal, in its turn, waiting for room in the journal as long
    /// as there is none: never [`Placed::NoRoom`].
    async fn place_in_turn(
        &self,
        stream: &str,
        expected_version: i64,
        events: &[Event],
        id: IdSpec,
        now_ns: u64,
    ) -> Result<Placed, StreamError> {
        // Appends are placed in the order they reach the partition: one waiting for room in
        // the journal holds back later ones, so pipelined appends of one connection (and of
        // any two clients, by arrival) get versions in the order they were sent.
        let turn = self.take_turn().await;
        let placed = loop {
            match self.place(stream, expected_version, events, id, now_ns)? {
                Placed::NoRoom => {
                    // Only the sizes matter to the room check: versions and IDs are not
                    // known yet.
                    Box::pin(
                        self.journal
                            .wait_for_room(&event_records(stream, 0, None, events)),
                    )
                    .await?;
                }
                placed => break placed,
            }
        };
        drop(turn);
        Ok(placed)
    }

    /// Adds the ring's new evictions to the metric, and logs the first one since start: from
    /// then on AGGREGATE refuses windows that reach back before what the ring holds.
    fn count_evicted(&self, st: &mut State, evicted: u64) {
        let new = evicted - st.evicted_counted;
        if new == 0 {
            return;
        }
        st.evicted_counted = evicted;
        self.ring_evicted_counter.increment(new);
        if !st.eviction_logged {
            st.eviction_logged = true;
            let rs = st.mem.ring.stats();
            tracing::info!(
                partition = self.id,
                capacity_events = rs.capacity_events,
                capacity_bytes = rs.capacity_bytes,
                "partition {}'s ring is full ({} events, {} bytes of payload) and evicts its \
                 oldest events from now on: they stay readable with READ, but AGGREGATE \
                 refuses windows that start at or before the largest evicted timestamp; raise \
                 ring_capacity_events or ring_capacity_bytes to keep more in memory (logged \
                 once; evring_ring_evicted_events_total counts evictions)",
                self.id,
                rs.capacity_events,
                rs.capacity_bytes
            );
        }
    }

    /// Counts a durable append of `events`, which arrived at `arrived_ns`, in the partition's
    /// statistics and metrics.
    pub(super) fn count_appended(&self, events: &[Event], arrived_ns: u64) {
        let n = events.len() as u64;
        let bytes: u64 = events
            .iter()
            .map(|e| (e.data.len() + e.metadata.len()) as u64)
            .sum();
        let mut st = self.state.borrow_mut();
        st.appends += 1;
        st.events_appended += n;
        st.bytes_appended += bytes;
        // The clock read at the append's arrival: one read per append, not two.
        st.last_append_time_ns = arrived_ns;
        if !self.metrics_deferred.get() {
            self.report_metrics(&mut st);
        }
    }

    /// Defers this partition's append counters and ring gauges until the guard is dropped
    /// (the completer of placed appends holds one over each batch it answers): each counter
    /// and gauge is an atomic update or two that another thread's cache line holds, once
    /// per append otherwise (3.9% of the shard at 50 × 16).
    pub fn defer_metrics(&self) -> MetricsDeferred<'_, S> {
        assert!(
            !self.metrics_deferred.replace(true),
            "one deferral at a time"
        );
        MetricsDeferred { part: self }
    }

    /// Brings the append counters and the ring's gauges and eviction counter up to date.
    fn report_metrics(&self, st: &mut State) {
        let (appends, events, bytes) = st.appends_reported;
        if st.appends != appends {
            self.appends_counter.increment(st.appends - appends);
            self.events_counter.increment(st.events_appended - events);
            self.bytes_counter.increment(st.bytes_appended - bytes);
            st.appends_reported = (st.appends, st.events_appended, st.bytes_appended);
        }
        let (count, payload_bytes, evicted) = st.mem.ring.occupancy();
        self.ring_events_gauge.set(count as f64);
        self.ring_bytes_gauge.set(payload_bytes as f64);
        self.count_evicted(st, evicted);
    }

    /// One attempt to place an append in the journal's open frame, in one synchronous step:
    /// the idempotency rule, the expected version, then the records with their versions and
    /// stream IDs (automatic ones by the clock read `now_ns`, at the append's arrival).
    pub(super) fn place(
        &self,
        stream: &str,
        expected_version: i64,
        events: &[Event],
        id: IdSpec,
        now_ns: u64,
    ) -> Result<Placed, StreamError> {
        if let Some(retry) = check_ids(&self.state.borrow().idem, stream, events)? {
            return Ok(Placed::Retry(retry));
        }
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            // One kind per stream (`StreamKind`): set by its first append, which is of one.
            let kind = events.first().map_or(StreamKind::Stream, |e| {
                StreamKind::of_event(e.event_type.as_bytes())
            });
            let mixed = events
                .iter()
                .any(|e| StreamKind::of_event(e.event_type.as_bytes()) != kind);
            // One lookup in the index for an existing stream (a new one takes a second).
            let entry = st.streams.get_mut(stream);
            let existing = entry.as_ref().map(|e| e.meta.kind);
            if mixed || existing.is_some_and(|k| k != kind) {
                st.errors += 1;
                return Err(StreamError::WrongType {
                    stream: stream.to_string(),
                    kind: existing.unwrap_or(kind),
                });
            }
            let (next, last_id) = entry
                .as_ref()
                .map_or((0, StreamId::ZERO), |e| (e.lsns.len() as u64, e.last_id()));
            let current = next as i64 - 1;
            let ok = match expected_version {
                expected::ANY => true,
                expected::NO_STREAM => next == 0,
                expected::STREAM_EXISTS => next > 0,
                n => current == n,
            };
            if !ok {
                st.errors += 1;
                return Err(StreamError::WrongExpectedVersion {
                    stream: stream.to_string(),
                    expected: expected_version,
                    current,
                });
            }
            let ids = assign_ids(stream, last_id, id, events.len(), now_ns / 1_000_000)
                .inspect_err(|_| st.errors += 1)?;
            // A single event's record stays on the stack (the usual append has one).
            let (one, many);
            let records: &[RecordRef<'_>] = match events {
                [e] => {
                    one = [event_record(stream, next, ids[0], e)];
                    &one
                }
                _ => {
                    many = event_records(stream, next, Some(&ids[..]), events);
                    &many
                }
            };
            match self.journal.try_append(records) {
                Err(e) => {
                    st.errors += 1;
                    Err(e.into())
                }
                Ok(Some(pending)) => {
                    let a = pending.appended();
                    let entry = match entry {
                        Some(entry) => entry,
                        None => {
                            st.stream_ids.note(stream.as_bytes());
                            st.fresh.push_back((a.first_lsn, stream.into()));
                            st.streams.entry_or_default(stream)
                        }
                    };
                    entry.meta.kind = kind;
                    for (lsn, id) in (a.first_lsn..=a.last_lsn).zip(ids.iter()) {
                        entry.push(lsn, *id);
                    }
                    // The ids enter the window now, before the frame is durable, so a
                    // retry sent while this append is in flight finds them.
                    for (i, e) in events.iter().enumerate() {
                        if e.id == [0; 16] || self.limits.idempotency_window == 0 {
                            continue;
                        }
                        if st.idem_order.len() >= self.limits.idempotency_window {
                            if let Some(old) = st.idem_order.pop_front() {
                                st.idem.remove(&old);
                            }
                        }
                        st.idem_order.push_back(e.id);
                        st.idem.insert(
                            e.id,
                            IdemEntry {
                                stream: stream.to_string(),
                                version: next + i as u64,
                                lsn: a.first_lsn + i as u64,
                            },
                        );
                    }
                    Ok(Placed::Pending(pending, next, ids[0]))
                }
                Ok(None) => Ok(Placed::NoRoom),
            }
        }
    }

    /// Applies `change` to `stream` — for [`StreamChange::DeleteDatabase`], to every stream
    /// whose name starts with `stream` —, journaled as one record in its turn with the
    /// appends; resolves once it is durable. Returns how many live entries it deleted (how
    /// many streams, for a deletion of streams); a change that would delete nothing is not
    /// journaled and returns 0. The stream index takes the change when it is placed, as it
    /// takes an append's versions.
    pub async fn change(&self, stream: &str, request: ChangeRequest) -> Result<u64, StreamError> {
        let turn = self.take_turn().await;
        let (pending, deleted) = loop {
            match self.place_change(stream, &request)? {
                ChangePlaced::Nothing => return Ok(0),
                ChangePlaced::Pending(pending, deleted) => break (pending, deleted),
                ChangePlaced::NoRoom(data) => {
                    let record = change_record(stream, &data);
                    Box::pin(self.journal.wait_for_room(std::slice::from_ref(&record))).await?
                }
            }
        };
        drop(turn);
        let appended = self.await_durable(pending).await?;
        self.publish(appended.first_lsn, Durable::change(stream));
        Ok(deleted)
    }

    /// One attempt to place a change in the journal's open frame, in one synchronous step
    /// (in the caller's turn): resolved against the index, journaled, applied to the index.
    pub(super) fn place_change(
        &self,
        stream: &str,
        request: &ChangeRequest,
    ) -> Result<ChangePlaced, StreamError> {
        let change = {
            let st = self.state.borrow();
            match (request, st.streams.get(stream)) {
                (ChangeRequest::DeleteDatabase, _) => StreamChange::DeleteDatabase,
                (_, None) => return Ok(ChangePlaced::Nothing),
                (r, Some(entry)) => entry.resolve(r).map_err(|e| match e {
                    StreamError::WrongType { kind, .. } => StreamError::WrongType {
                        stream: stream.to_string(),
                        kind,
                    },
                    e => e,
                })?,
            }
        };
        let deleted = self.change_effect(stream, &change);
        if deleted == 0 {
            return Ok(ChangePlaced::Nothing);
        }
        let data = change.encode();
        match self.journal_change(stream, &data)? {
            Some(pending) => {
                let mut st = self.state.borrow_mut();
                let gone: Vec<String> = match change {
                    StreamChange::DeleteStream => vec![stream.to_string()],
                    StreamChange::DeleteDatabase => st
                        .streams
                        .keys()
                        .filter(|name| in_database(name, stream))
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                };
                for name in &gone {
                    let entries = st.streams.get(name).map_or(0, |e| e.groups.entries());
                    st.group_entries -= entries;
                }
                apply_change(&mut st.streams, stream, &change);
                let database = matches!(change, StreamChange::DeleteDatabase);
                if database || matches!(change, StreamChange::DeleteStream) {
                    if st.deleted.len() == RECENTLY_DELETED {
                        st.deleted.pop_front();
                    }
                    st.deleted
                        .push_back((stream.to_string(), database, now_ns()));
                }
                for name in gone {
                    st.stream_ids.forget(name.as_bytes());
                    // Blocked group readers learn that the stream is gone.
                    st.waiters.changed(&name);
                }
                Ok(ChangePlaced::Pending(pending, deleted))
            }
            None => Ok(ChangePlaced::NoRoom(data)),
        }
    }

    /// One attempt to journal a change record of `stream` with `data` in the open frame:
    /// its durability to wait for, or `None` when the frame has no room. A journal error is
    /// counted.
    pub(super) fn journal_change(
        &self,
        stream: &str,
        data: &[u8],
    ) -> Result<Option<crate::journal::PendingAppend>, StreamError> {
        let record = change_record(stream, data);
        self.journal
            .try_append(std::slice::from_ref(&record))
            .map_err(|e| {
                self.state.borrow_mut().errors += 1;
                e.into()
            })
    }

    /// How many live entries (streams, for a deletion of streams) `change` would delete now.
    fn change_effect(&self, stream: &str, change: &StreamChange) -> u64 {
        let st = self.state.borrow();
        match change {
            StreamChange::DeleteDatabase => st
                .streams
                .keys()
                .filter(|name| in_database(name, stream))
                .count() as u64,
            StreamChange::DeleteStream => u64::from(st.streams.contains_key(stream)),
            StreamChange::DeleteVersions(list) => st.streams.get(stream).map_or(0, |e| {
                let versions = e.lsns.len() as u64;
                let mut seen = std::collections::BTreeSet::new();
                list.iter()
                    .filter(|&&v| v < versions && !e.deleted.contains(v) && seen.insert(v))
                    .count() as u64
            }),
            StreamChange::TrimBefore(v) => st.streams.get(stream).map_or(0, |e| {
                let below = (*v).min(e.lsns.len() as u64);
                below - e.deleted.count(below)
            }),
            // Always journaled: they change the stream's state, not its entries.
            StreamChange::SetId { .. } | StreamChange::Group(_) => 1,
        }
    }

    /// Waits until a placed record's frame is durable. On failure the error is counted and
    /// retries waiting for an append learn that it failed.
    pub(super) async fn await_durable(
        &self,
        pending: crate::journal::PendingAppend,
    ) -> Result<crate::journal::Appended, StreamError> {
        pending.durable().await.map_err(|e| self.durable_failed(e))
    }

    /// A placed record's frame failed: the error counted, and retries waiting for an append
    /// told.
    fn durable_failed(&self, e: crate::error::JournalError) -> StreamError {
        let mut st = self.state.borrow_mut();
        st.errors += 1;
        wake_all(&mut st.publish_waiters);
        e.into()
    }

    /// Waits for this append's turn to be placed (see [`Partition::append`]).
    pub(super) async fn take_turn(&self) -> Turn<'_, S> {
        let ticket = {
            let mut st = self.state.borrow_mut();
            st.turns.next_ticket += 1;
            st.turns.next_ticket - 1
        };
        let mut waiting = TurnWait {
            part: self,
            ticket,
            served: false,
        };
        std::future::poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.turns.serving == ticket {
                waiting.served = true;
                std::task::Poll::Ready(())
            } else {
                st.turns.waiters.insert(ticket, cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await;
        Turn { part: self }
    }

    /// Moves the turn on past `ticket` and past tickets given up before their turn, and
    /// wakes the holder of the next one.
    pub(super) fn end_turn(&self) {
        let mut st = self.state.borrow_mut();
        let turns = &mut st.turns;
        turns.serving += 1;
        while turns.abandoned.remove(&turns.serving) {
            turns.serving += 1;
        }
        if let Some(w) = turns.waiters.remove(&turns.serving) {
            w.wake();
        }
    }

    /// The answer to a retry: the original's result once its events are visible, or the
    /// error that poisoned the journal if their frame failed.
    async fn await_retry(&self, retry: Retry) -> Result<AppendResult, StreamError> {
        let last_lsn = retry.first_lsn + retry.count - 1;
        std::future::poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.published_lsn > last_lsn {
                return std::task::Poll::Ready(Ok(AppendResult {
                    first_version: retry.first_version,
                    last_version: retry.first_version + retry.count - 1,
                    partition: self.id,
                    lsn: retry.first_lsn,
                }));
            }
            if let Some(poisoned) = self.journal.poison_error() {
                return std::task::Poll::Ready(Err(poisoned.into()));
            }
            st.publish_waiters.push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    /// Makes durable events visible in LSN order and offers them to subscribers. Recorded
    /// events (a copy of each event with its stream name) are made only when there is a
    /// subscriber to offer them to.
    pub(super) fn publish(&self, first_lsn: u64, batch: Durable) {
        // Taken, not borrowed: a publish from a subscriber's offer (none today) would get an
        // empty list of its own.
        let mut ready = self.publish_ready.take();
        assert!(ready.is_empty(), "the kept list is left empty");
        let sinks = {
            let mut st = self.state.borrow_mut();
            // The next batch in LSN order (the usual case) is published at once; another
            // waits in `pending_publish` for the batches before it.
            let mut next = if first_lsn == st.published_lsn {
                Some(batch)
            } else {
                st.pending_publish.insert(first_lsn, batch);
                None
            };
            loop {
                let first_lsn = st.published_lsn;
                let Some(batch) = next
                    .take()
                    .or_else(|| st.pending_publish.remove(&first_lsn))
                else {
                    break;
                };
                if batch.change {
                    st.published_lsn += 1;
                    st.mem.push_placeholder(first_lsn);
                    continue;
                }
                st.published_lsn += batch.events.len() as u64;
                for (i, e) in batch.events.iter().enumerate() {
                    let version = batch.first_version + i as u64;
                    // The ring keeps no stream ID: the stream index has it.
                    st.mem.push(
                        first_lsn + i as u64,
                        &event_record(&batch.stream, version, StreamId::ZERO, e),
                    );
                }
                ready.push((first_lsn, batch));
            }
            while st
                .fresh
                .front()
                .is_some_and(|(lsn, _)| *lsn < st.published_lsn)
            {
                st.fresh.pop_front();
            }
            if !ready.is_empty() {
                wake_all(&mut st.publish_waiters);
            }
            if !st.waiters.is_empty() {
                let st = &mut *st;
                for (_, batch) in ready.iter().filter(|(_, b)| !b.events.is_empty()) {
                    let last = batch.first_version as usize + batch.events.len() - 1;
                    // Only an event stream's entries make a wait ready: a key that became
                    // a list, string or set keeps its readers waiting (docs/PROTOCOL.md).
                    let entry = st
                        .streams
                        .get(&batch.stream)
                        .filter(|e| e.meta.kind == StreamKind::Stream);
                    if let Some(id) = entry.and_then(|e| e.ids.get(last)) {
                        st.waiters.published(&batch.stream, *id);
                    }
                }
            }
            if !self.metrics_deferred.get() {
                self.report_metrics(&mut st);
            }
            st.sinks.clone()
        };
        if !sinks.is_empty() {
            let mut dead: Vec<Rc<dyn PublishSink>> = Vec::new();
            for (first_lsn, batch) in ready.drain(..) {
                let (stream, recorded) = batch.into_recorded(first_lsn, self.id);
                for sink in &sinks {
                    if dead.iter().any(|d| Rc::ptr_eq(sink, d)) {
                        continue;
                    }
                    if !sink.offer(&stream, &recorded) {
                        dead.push(sink.clone());
                    }
                }
            }
            if !dead.is_empty() {
                let mut st = self.state.borrow_mut();
                st.sinks.retain(|s| !dead.iter().any(|d| Rc::ptr_eq(s, d)));
            }
        }
        ready.clear();
        // Kept unless a burst made it large (batches waiting for one before them).
        if ready.capacity() <= PUBLISH_READY_KEPT {
            self.publish_ready.replace(ready);
        }
    }

    /// Reads up to `max` visible events of `stream` from `from` in `direction`.
    pub async fn read(
        &self,
        stream: &str,
        from: u64,
        max: u32,
        direction: Direction,
    ) -> Result<(Vec<RecordedEvent>, bool), StreamError> {
        let max = (max as usize).min(self.limits.max_read_count);
        let (lsns, end) = {
            let st = self.state.borrow();
            let Some(entry) = st.streams.get(stream) else {
                return Err(StreamError::StreamNotFound(stream.to_string()));
            };
            let visible = entry.visible_below(st.published_lsn) as u64;
            // Deleted versions are passed over; a trim's are not even visited.
            let trimmed = entry.deleted.trimmed;
            let take = |versions: &mut dyn Iterator<Item = u64>| -> (Vec<u64>, bool) {
                let mut lsns = Vec::new();
                for v in versions.filter(|v| !entry.deleted.contains(*v)) {
                    if lsns.len() == max {
                        return (lsns, false);
                    }
                    lsns.push(entry.lsns[v as usize]);
                }
                (lsns, true)
            };
            match direction {
                Direction::Forward => take(&mut (from.max(trimmed).min(visible)..visible)),
                Direction::Backward if visible == 0 => (Vec::new(), true),
                Direction::Backward => take(&mut (trimmed..=from.min(visible - 1)).rev()),
            }
        };
        if lsns.is_empty() {
            return Ok((Vec::new(), end));
        }
        let (events, cut) = self.fetch(&lsns, self.limits.max_read_bytes).await?;
        Ok((events, end && !cut))
    }

    /// Fetches the events with `lsns` (in the order the reply wants: ascending, descending,
    /// or any, as a claim's IDs come) from the ring while it holds them and from the journal
    /// otherwise (one visit per stretch of LSNs in one direction), stopping before the
    /// event that would take the reply past `budget` bytes (as [`reply_bytes`] counts them;
    /// the first event is always taken). Returns the events, a prefix of `lsns` in its order,
    /// and whether the budget cut them short.
    ///
    /// Memory stays near `budget` whatever `lsns` holds: a forward journal read stops at the
    /// budget, and a backward one (whose journal scan runs forward) keeps only the newest
    /// events that fit, dropping older ones as it goes.
    async fn fetch(
        &self,
        lsns: &[u64],
        budget: usize,
    ) -> Result<(Vec<RecordedEvent>, bool), StreamError> {
        let id = self.id;
        self.fetch_as(lsns, budget, |v| to_recorded(v, id)).await
    }

    /// [`Partition::fetch`], each event made into a `T` by `make` from its record, borrowed
    /// from the ring or the journal's frame (a reply can be encoded from it with no copy of
    /// the event in between). A backward read may call `make` for events it then drops
    /// (see above): what `make` keeps outside the `T`s it returns is bounded by the events
    /// read, not by `budget`.
    pub async fn fetch_as<T>(
        &self,
        lsns: &[u64],
        budget: usize,
        mut make: impl FnMut(&RecordView<'_>) -> T,
    ) -> Result<(Vec<T>, bool), StreamError> {
        // Room for a usual read's events at once (a larger one grows as it goes: its
        // byte budget may stop it early).
        let mut out: Vec<T> = Vec::with_capacity(lsns.len().min(64));
        let mut bytes = 0usize;
        let mut i = 0;
        while i < lsns.len() {
            // From the ring, in one synchronous step, for as long as it holds them.
            let ring_oldest = {
                let st = self.state.borrow();
                while let Some(&lsn) = lsns.get(i) {
                    let taken = st.mem.with(lsn, |v| {
                        let size = record_reply_bytes(&v.record);
                        if !out.is_empty() && bytes + size > budget {
                            return false;
                        }
                        bytes += size;
                        out.push(make(v));
                        true
                    });
                    match taken {
                        None => break, // not in the ring
                        Some(false) => return Ok((out, true)),
                        Some(true) => i += 1,
                    }
                }
                st.mem
                    .ring
                    .lsn_range()
                    .map_or(u64::MAX, |(oldest, _)| oldest)
            };
            if i == lsns.len() {
                break;
            }
            // The run the ring does not hold, from the journal: as far as the LSNs keep
            // one direction (a journal visit only moves forward; a claim's IDs come in any
            // order).
            let from_journal = lsns[i..]
                .iter()
                .take_while(|&&l| l < ring_oldest)
                .count()
                .max(1);
            let rest = &lsns[i..i + from_journal];
            let descending = rest.len() > 1 && rest[0] > rest[1];
            let run_len = 1 + rest
                .windows(2)
                .take_while(|w| if descending { w[0] > w[1] } else { w[0] < w[1] })
                .count();
            let run = &lsns[i..i + run_len];
            let left = budget - bytes.min(budget);
            let (got, got_bytes, cut) = if descending {
                self.journal_tail(run, left, out.is_empty(), &mut make)
                    .await?
            } else {
                self.journal_head(run, left, out.is_empty(), &mut make)
                    .await?
            };
            if got.is_empty() && !cut {
                return Err(StreamError::Unreadable(run[0]));
            }
            i += got.len();
            bytes += got_bytes;
            out.extend(got);
            if cut {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// The longest prefix of `run` (ascending LSNs) whose events fit in `budget` bytes (one
    /// at least when `need_one`), read from the journal: the events, their bytes, and whether
    /// the budget cut the run short.
    async fn journal_head<T>(
        &self,
        run: &[u64],
        budget: usize,
        need_one: bool,
        make: &mut impl FnMut(&RecordView<'_>) -> T,
    ) -> Result<(Vec<T>, usize, bool), StreamError> {
        let mut got: Vec<T> = Vec::with_capacity(run.len().min(64));
        let (mut bytes, mut cut, mut k) = (0usize, false, 0usize);
        self.journal
            .visit(run[0], |r| {
                if run[k] != r.lsn {
                    // The journal lacks `run[k]`: stop; the caller reports it.
                    return ScanNext::Stop;
                }
                let size = record_reply_bytes(&r.record);
                if (!got.is_empty() || !need_one) && bytes + size > budget {
                    cut = true;
                    return ScanNext::Stop;
                }
                bytes += size;
                got.push(make(r));
                k += 1;
                run.get(k).map_or(ScanNext::Stop, |&l| ScanNext::From(l))
            })
            .await?;
        Ok((got, bytes, cut))
    }

    /// The longest prefix of `run` (descending LSNs) whose events fit in `budget` bytes (one
    /// at least when `need_one`), read from the journal. The scan runs forward, so it keeps
    /// the newest events that fit and drops older ones as newer ones arrive.
    async fn journal_tail<T>(
        &self,
        run: &[u64],
        budget: usize,
        need_one: bool,
        make: &mut impl FnMut(&RecordView<'_>) -> T,
    ) -> Result<(Vec<T>, usize, bool), StreamError> {
        let ascending: Vec<u64> = run.iter().rev().copied().collect();
        let mut kept: VecDeque<(T, usize)> = VecDeque::new();
        let (mut bytes, mut dropped, mut k) = (0usize, false, 0usize);
        let mut missing = false;
        self.journal
            .visit(ascending[0], |r| {
                if ascending[k] != r.lsn {
                    missing = true; // an LSN the journal lacks
                    return ScanNext::Stop;
                }
                let size = record_reply_bytes(&r.record);
                bytes += size;
                kept.push_back((make(r), size));
                while bytes > budget && (kept.len() > 1 || !need_one) {
                    let (_, s) = kept.pop_front().expect("non-empty");
                    bytes -= s;
                    dropped = true;
                }
                k += 1;
                ascending
                    .get(k)
                    .map_or(ScanNext::Stop, |&l| ScanNext::From(l))
            })
            .await?;
        if missing || k < ascending.len() {
            // The newest events of the run were not all there: report the gap, don't skip it.
            return Ok((Vec::new(), 0, false));
        }
        let got: Vec<T> = kept.into_iter().rev().map(|(e, _)| e).collect();
        Ok((got, bytes, dropped))
    }

    /// Version and LSN range of a stream (visible events only).
    pub fn stream_info(&self, stream: &str) -> Result<StreamInfo, StreamError> {
        let st = self.state.borrow();
        let entry = st
            .streams
            .get(stream)
            .ok_or_else(|| StreamError::StreamNotFound(stream.to_string()))?;
        let visible = entry.visible_below(st.published_lsn);
        if visible == 0 {
            return Err(StreamError::StreamNotFound(stream.to_string()));
        }
        Ok(StreamInfo {
            next_version: visible as u64,
            first_lsn: entry.lsns[0],
            last_lsn: entry.lsns[visible - 1],
        })
    }

    /// The visible events of `stream` whose stream IDs lie in `start..=end`, oldest first
    /// (newest first when `reverse`), at most `count`, each with its ID; at most
    /// `max_read_bytes` of them (one at least), so the flag says whether the byte budget cut
    /// the range short (ask again after the last ID returned). `StreamNotFound` for a stream
    /// with no events.
    pub async fn range(
        &self,
        stream: &str,
        start: StreamId,
        end: StreamId,
        count: usize,
        reverse: bool,
    ) -> Result<(Vec<(StreamId, RecordedEvent)>, bool), StreamError> {
        let (lsns, ids) = {
            let st = self.state.borrow();
            let Some(entry) = st.streams.get(stream) else {
                return Err(StreamError::StreamNotFound(stream.to_string()));
            };
            let visible = entry.visible_below(st.published_lsn);
            let ids = &entry.ids[..visible];
            let lo = ids
                .partition_point(|&id| id < start)
                .max(entry.deleted.trimmed as usize)
                .min(visible);
            let hi = ids.partition_point(|&id| id <= end).max(lo);
            let n = count.min(self.limits.max_read_count);
            let live = |v: &usize| !entry.deleted.contains(*v as u64);
            let versions: Vec<usize> = if reverse {
                (lo..hi).rev().filter(live).take(n).collect()
            } else {
                (lo..hi).filter(live).take(n).collect()
            };
            let lsns: Vec<u64> = versions.iter().map(|&v| entry.lsns[v]).collect();
            let ids: Vec<StreamId> = versions.iter().map(|&v| entry.ids[v]).collect();
            (lsns, ids)
        };
        if lsns.is_empty() {
            return Ok((Vec::new(), false));
        }
        let (events, cut) = self.fetch(&lsns, self.limits.max_read_bytes).await?;
        Ok((ids.into_iter().zip(events).collect(), cut))
    }

    /// What XINFO STREAM tells of a stream: its live entries, last ID, entries ever added,
    /// the largest ID an entry deletion deleted, and its first live entry's ID; `None` for no
    /// stream.
    pub fn stream_summary(&self, stream: &str) -> Option<StreamSummary> {
        let st = self.state.borrow();
        let e = st.streams.get(stream)?;
        let visible = e.visible_below(st.published_lsn);
        let first = (e.deleted.trimmed as usize..visible).find(|&v| !e.deleted.contains(v as u64));
        let newest = e.ids[..visible].last().copied().unwrap_or(StreamId::ZERO);
        let entries_added = match e.meta.entries_added {
            Some((n, at)) => n + (visible as u64).saturating_sub(at),
            None => visible as u64,
        };
        Some(StreamSummary {
            length: visible as u64 - e.deleted.count(visible as u64),
            last_id: newest.max(e.meta.last_id),
            entries_added,
            max_deleted_id: e.max_deleted_id(),
            first_id: first.map_or(StreamId::ZERO, |v| e.ids[v]),
        })
    }

    /// The stream's visible entries that are not deleted (XLEN); 0 for no stream.
    pub fn live_entries(&self, stream: &str) -> u64 {
        let st = self.state.borrow();
        st.streams.get(stream).map_or(0, |e| {
            let visible = e.visible_below(st.published_lsn) as u64;
            visible - e.deleted.count(visible)
        })
    }

    /// The stream IDs of the stream's visible versions in `versions` (those that exist).
    pub fn stream_ids(&self, stream: &str, versions: std::ops::Range<u64>) -> Vec<StreamId> {
        let st = self.state.borrow();
        let Some(entry) = st.streams.get(stream) else {
            return Vec::new();
        };
        let visible = entry.visible_below(st.published_lsn);
        let end = (versions.end as usize).min(visible);
        let start = (versions.start as usize).min(end);
        entry.ids[start..end].to_vec()
    }

    /// Whether `stream` exists ([`stream_exists`]).
    pub fn has_stream(&self, stream: &str) -> bool {
        let st = self.state.borrow();
        st.streams
            .get(stream)
            .is_some_and(|entry| stream_exists(entry, st.published_lsn))
    }

    /// Calls `f` with the name and kind of every stream that exists ([`stream_exists`]) and
    /// whose name starts with `prefix`, in no particular order. `f` runs while the
    /// partition's state is borrowed: it must not call back into the partition.
    pub fn for_each_stream(&self, prefix: &str, mut f: impl FnMut(&str, StreamKind)) {
        let st = self.state.borrow();
        for (name, entry) in &st.streams {
            if name.starts_with(prefix) && stream_exists(entry, st.published_lsn) {
                f(name, StreamKind::of(entry));
            }
        }
    }

    /// Visits the streams that exist ([`stream_exists`]) whose [`crate::protocol::stream_hash`]
    /// is at least `from`, in hash order (equal hashes by name), while `f` returns true: the
    /// RESP port's SCAN, which starts at its cursor's position in O(log n).
    pub fn for_each_stream_from_hash(
        &self,
        from: u64,
        mut f: impl FnMut(u64, &str, StreamKind) -> bool,
    ) {
        let st = self.state.borrow();
        for (hash, name, entry) in st.streams.at_or_above_hash(from) {
            if stream_exists(entry, st.published_lsn) && !f(hash, name, StreamKind::of(entry)) {
                break;
            }
        }
    }

    /// How many streams exist ([`stream_exists`]) in each database
    /// ([`super::database_of`]): DBSIZE and INFO keyspace. The index counts its names by
    /// database; of those, the streams made by an append not yet published do not exist yet
    /// (`State::fresh`), and no other name in the index lacks a stream. Asserted against a
    /// listing when the partition has at most [`STREAM_COUNTS_CHECKED`] streams.
    pub fn stream_counts(&self) -> [u64; super::DATABASES as usize] {
        let st = self.state.borrow();
        let mut counts = st.streams.per_database();
        for (lsn, name) in st.fresh.iter().filter(|(l, _)| *l >= st.published_lsn) {
            let unpublished = st.streams.get(&**name).is_some_and(|e| {
                e.lsns.first() == Some(lsn) && !stream_exists(e, st.published_lsn)
            });
            if unpublished {
                counts[super::database_of(name).0 as usize] -= 1;
            }
        }
        if st.streams.len() <= STREAM_COUNTS_CHECKED {
            let mut listed = [0; super::DATABASES as usize];
            for (name, e) in &st.streams {
                if stream_exists(e, st.published_lsn) {
                    listed[super::database_of(name).0 as usize] += 1;
                }
            }
            assert_eq!(
                counts, listed,
                "streams counted by database as a listing counts them"
            );
        }
        counts
    }

    /// The kind of the stream, `None` while it does not exist ([`stream_exists`]).
    pub fn stream_kind(&self, stream: &str) -> Option<StreamKind> {
        let st = self.state.borrow();
        st.streams
            .get(stream)
            .filter(|entry| stream_exists(entry, st.published_lsn))
            .map(StreamKind::of)
    }

    /// Whether `stream` was deleted (alone, or with its database) less than `window_ns` ago:
    /// a blocking XREADGROUP that arrives just after the deletion of its key is answered as
    /// if it had blocked just before (docs/PROTOCOL.md, *Consumer groups*).
    pub fn deleted_lately(&self, stream: &str, window_ns: u64) -> bool {
        let now = now_ns();
        self.state
            .borrow()
            .deleted
            .iter()
            .any(|(name, database, at)| {
                now.saturating_sub(*at) < window_ns
                    && if *database {
                        in_database(stream, name)
                    } else {
                        name == stream
                    }
            })
    }

    /// Whether the stream is in the index as a stream (not a list), visible or only placed:
    /// what a blocked group reader checks when woken.
    pub fn stream_placed(&self, stream: &str) -> bool {
        self.state
            .borrow()
            .streams
            .get(stream)
            .is_some_and(|e| e.meta.kind == StreamKind::Stream)
    }

    /// Whether the stream is a Redis list (once placed: before its first push is visible).
    pub fn is_list(&self, stream: &str) -> bool {
        self.state
            .borrow()
            .streams
            .get(stream)
            .is_some_and(|e| e.meta.kind == StreamKind::List)
    }

    /// Whether the stream holds a Redis list, string or set, not events (once placed: before
    /// its first element is visible). The stream commands refuse such a key (WRONGTYPE), and
    /// a blocked XREAD on it keeps waiting (the hook for readers that must instead learn that
    /// their key was replaced by another type: see `publish`'s waiters).
    pub fn is_other_type(&self, stream: &str) -> bool {
        self.state
            .borrow()
            .streams
            .get(stream)
            .is_some_and(|e| e.meta.kind != StreamKind::Stream)
    }

    /// The placed kind of the stream and its last placed version's LSN (`None`: no stream).
    pub(super) fn placed_kind(&self, stream: &str) -> Option<(StreamKind, Option<u64>)> {
        let st = self.state.borrow();
        let e = st.streams.get(stream)?;
        Some((e.meta.kind, e.lsns.last().copied()))
    }

    /// Waits until every LSN up to `lsn` is visible, or fails with the error that poisoned the
    /// journal.
    pub(super) async fn await_published(&self, lsn: u64) -> Result<(), StreamError> {
        std::future::poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.published_lsn > lsn {
                return std::task::Poll::Ready(Ok(()));
            }
            if let Some(poisoned) = self.journal.poison_error() {
                return std::task::Poll::Ready(Err(poisoned.into()));
            }
            st.publish_waiters.push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    /// The stream's visible versions' LSNs from `from_version` (for subscriptions).
    pub fn stream_lsns_from(&self, stream: &str, from_version: u64) -> Vec<u64> {
        let st = self.state.borrow();
        let Some(entry) = st.streams.get(stream) else {
            return Vec::new();
        };
        let visible = entry.visible_below(st.published_lsn);
        let from = (from_version.max(entry.deleted.trimmed) as usize).min(visible);
        (from..visible)
            .filter(|&v| !entry.deleted.contains(v as u64))
            .map(|v| entry.lsns[v])
            .collect()
    }

    /// The ID of the stream's last visible entry; `None` while it has none.
    pub fn last_visible_id(&self, stream: &str) -> Option<StreamId> {
        let st = self.state.borrow();
        last_visible_id(&st, stream)
    }

    /// Waits until one of `streams` has a visible entry with an ID above the one given with
    /// it (at once if one has already), or [`Partition::cancel_wait`] for `key`: returns
    /// which stream (its index in `streams`), or that the wait was cancelled. Dropping the
    /// future forgets the wait. `key` must not name another wait of this partition.
    pub async fn wait_for_entries(&self, key: WaitKey, streams: &[(String, StreamId)]) -> WaitEnd {
        {
            let mut st = self.state.borrow_mut();
            for (i, (stream, after)) in streams.iter().enumerate() {
                if last_visible_id(&st, stream).is_some_and(|last| last > *after) {
                    return WaitEnd::Ready(i);
                }
            }
            st.waiters.add(key, streams);
            self.waits_gauge.set(st.waiters.len() as f64);
        }
        let registered = Registered {
            part: self,
            key,
            streams,
        };
        let end =
            std::future::poll_fn(|cx| self.state.borrow_mut().waiters.poll(key, cx.waker())).await;
        drop(registered);
        end
    }

    /// Ends wait `key` (if it is waiting) with [`WaitEnd::Cancelled`].
    pub fn cancel_wait(&self, key: WaitKey) {
        self.state.borrow_mut().waiters.end(key, WaitEnd::Cancelled);
    }

    /// Every LSN below this is durable and visible.
    pub fn published_lsn(&self) -> u64 {
        self.state.borrow().published_lsn
    }

    /// Visible events from LSN `from` on, read from the journal: at most `max` and at most
    /// `budget` bytes (one at least).
    pub async fn read_lsn_range(
        &self,
        from: u64,
        max: usize,
        budget: usize,
    ) -> Result<Vec<RecordedEvent>, StreamError> {
        let to = self.published_lsn();
        if from >= to || max == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.journal
            .visit(from, |r| {
                if r.lsn >= to {
                    return ScanNext::Stop;
                }
                if r.record.kind == RECORD_KIND_EVENT {
                    let e = to_recorded(r, self.id);
                    let size = reply_bytes(&e);
                    if !out.is_empty() && bytes + size > budget {
                        return ScanNext::Stop;
                    }
                    bytes += size;
                    out.push(e);
                }
                if out.len() < max {
                    ScanNext::From(r.lsn + 1)
                } else {
                    ScanNext::Stop
                }
            })
            .await?;
        Ok(out)
    }

    /// The events with `lsns` in their order, up to `budget` bytes (one at least), and
    /// whether the budget cut them short.
    pub(super) async fn fetch_budget(
        &self,
        lsns: &[u64],
        budget: usize,
    ) -> Result<(Vec<RecordedEvent>, bool), StreamError> {
        self.fetch(lsns, budget).await
    }

    /// Fetches the events with `lsns` in their order, up to `budget` bytes (one at least;
    /// for subscription catch-up).
    pub async fn fetch_lsns(
        &self,
        lsns: &[u64],
        budget: usize,
    ) -> Result<Vec<RecordedEvent>, StreamError> {
        Ok(self.fetch(lsns, budget).await?.0)
    }

    /// The most bytes a READ reply (or one catch-up push) holds, one event aside.
    pub fn max_read_bytes(&self) -> usize {
        self.limits.max_read_bytes
    }

    /// Adds a live sink; it sees every event published from now on.
    pub fn add_sink(&self, sink: Rc<dyn PublishSink>) {
        self.state.borrow_mut().sinks.push(sink);
    }

    pub fn remove_sink(&self, sink: &Rc<dyn PublishSink>) {
        self.state
            .borrow_mut()
            .sinks
            .retain(|s| !Rc::ptr_eq(s, sink));
    }

    /// A view of this partition for any shard (see [`PartitionView`]).
    pub fn view(&self) -> PartitionView {
        let st = self.state.borrow();
        PartitionView::new(
            self.id,
            st.mem.ring.reader(),
            st.mem.types.names(),
            st.stream_ids.shared(),
        )
    }

    /// Aggregates the events held in memory (the ring) of this partition, through a view as
    /// every other shard does.
    pub fn aggregate(&self, plan: &Plan) -> Result<Groups, StreamError> {
        self.view().aggregate(plan)
    }

    pub fn stats(&self) -> PartitionStats {
        let st = self.state.borrow();
        let js = self.journal.stats();
        PartitionStats {
            partition: self.id,
            streams: st.streams.len() as u64,
            appends: st.appends,
            events_appended: st.events_appended,
            bytes_appended: st.bytes_appended,
            errors: st.errors,
            published_lsn: st.published_lsn,
            frames_written: js.frames_written,
            frames_in_flight: self.journal.frames_in_flight() as u64,
            journal_bytes_written: js.bytes_written,
            poisoned: self.journal.poisoned().is_some(),
            last_append_time_ns: st.last_append_time_ns,
            ring: st.mem.ring.stats(),
        }
    }
}
