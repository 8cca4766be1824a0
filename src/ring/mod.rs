//! The partition ring: the recent events of one partition in memory, written only by the
//! partition's own shard, read by any thread without locks.
//!
//! ## Layout
//!
//! A fixed number of slots (`capacity_events`, a power of two), stored as a struct of arrays:
//! one array per column (`lsn`, `timestamp_ns`, `value` bits, `type_id`, `stream_id`,
//! `stream_version`, payload position and length), so a time-window aggregation scans two or
//! three dense arrays. Payloads (opaque bytes) live in an arena of `capacity_bytes`, written
//! at a position that only grows and wraps modulo the arena size. Every word a reader may race
//! with is an `AtomicU64` (Relaxed loads and stores compile to plain moves on x86-64); a
//! seqlock that reads plain memory would be a data race, which Rust makes undefined.
//!
//! ## The stamp protocol
//!
//! Event *seq* (1, 2, …) lives in slot `seq mod capacity`. Each slot has a stamp naming what
//! it holds: 0 empty, `2·seq` committed, `2·seq + 1` being written or evicted.
//!
//! Writer, for a push of event *seq*:
//! 1. Evict from the oldest end until the count and the arena bytes fit: for each evicted
//!    event *e*, `stamp[e] = 2e + 1` (Relaxed). The slot of *seq* itself (if it held
//!    *seq − capacity*) is evicted the same way.
//! 2. `stamp[seq] = 2·seq + 1` (Relaxed), then `fence(Release)`.
//! 3. Write the columns and the payload words (Relaxed).
//! 4. `stamp[seq] = 2·seq` (Release), then `head = seq` (Release).
//!
//! Reader, for event *seq*: `s1 = stamp (Acquire)`; copy the columns and payload (Relaxed);
//! `fence(Acquire)`; `s2 = stamp (Relaxed)`. The copy is good iff `s1 == s2 == 2·seq`.
//!
//! Why it holds: if the reader's copy saw any word written after the writer's Release fence
//! of a later push or eviction (step 2 or step 1 followed by the fence), the fence–fence
//! synchronisation makes that fence happen-before the reader's Acquire fence, so `s2` sees
//! the busy stamp (or a later one) and the copy is rejected. If `s1` is the committed stamp,
//! the Release store in step 4 synchronises with the Acquire load, so every word of the event
//! is visible. Eviction marks are what make payload reuse safe: a payload overwritten in the
//! arena belonged to an evicted event whose stamp was marked busy before the overwrite.
//!
//! The head version alone is not enough when the ring overwrites: the push that overwrites
//! the oldest slot is under way before the head moves. The per-slot stamps catch it.
//!
//! ## Views
//!
//! - *suffix* ([`RingReader::suffix`]): the longest contiguous run of valid events ending at
//!   the head seen at the start, read backwards; events found overwritten end the run. Never
//!   needs a retry.
//! - *strict* ([`RingReader::strict`]): every event from the oldest retained to the head at
//!   one head version; if anything moved during the copy it retries, at most
//!   `max_retries` times, then returns [`RingError::Retry`].
//!
//! The writer never waits for readers: it has no loop that depends on them.
//!
//! ## What the ring no longer holds
//!
//! Timestamps are the clients' and need not follow LSN order, so "the oldest time the ring
//! covers" is not the oldest event's timestamp. The writer keeps instead, in one more atomic,
//! `complete_from_ns`: one past the largest timestamp of any event that left the ring
//! (evicted, cleared) or never entered it ([`RingWriter::note_left_out`]: an event too large
//! for the arena, the events before what a ring was rebuilt with at start-up); 0 while there
//! is none. A time window `[from_ns, to_ns)` is whole in the ring iff
//! `from_ns ≥ complete_from_ns` ([`RingReader::complete_from_ns`]).
//!
//! Ordering: the writer stores a raised value (Relaxed) and then issues a Release fence
//! *before* it marks the evicted slot busy; every store a reader could see that hides the
//! event (its busy stamp, a later event's stamp in its slot, the tail moved past it) comes
//! after that fence. A reader loads the value after its scan, behind an Acquire fence: if the
//! scan missed an event because of any of those stores, the fence–fence synchronisation makes
//! the raised value visible. A reader that checks before its scan as well may refuse early,
//! never wrongly: the value only grows.
//!
//! `--cfg evring_mutant="..."` builds a deliberately broken ring (`no_recheck`,
//! `no_release_fence`, `no_evict_mark`) for the loom negative controls; see
//! `loom-tests/run.sh`.

pub mod table;

use crate::sync::{fence, Arc, AtomicU64, Ordering};

pub use table::{NameTable, Names};

/// Sizes of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Slots; rounded up to a power of two.
    pub capacity_events: usize,
    /// Payload arena bytes; rounded up to a multiple of 8.
    pub capacity_bytes: usize,
    /// Retries of a strict view before [`RingError::Retry`].
    pub max_retries: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            capacity_events: 1 << 16,
            capacity_bytes: 16 << 20,
            max_retries: 8,
        }
    }
}

/// Why a view could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The writer moved on during every attempt; try again or use a suffix view.
    #[error("the ring changed during {attempts} attempts; retry")]
    Retry { attempts: usize },
    /// The payload is larger than the whole arena.
    #[error("payload of {bytes} bytes exceeds the ring's arena of {capacity} bytes")]
    TooLarge { bytes: usize, capacity: usize },
}

/// One event as stored in the ring.
#[derive(Clone, Debug, PartialEq)]
pub struct RingEvent {
    pub lsn: u64,
    pub timestamp_ns: u64,
    /// NaN = none.
    pub value: f64,
    pub type_id: u64,
    pub stream_id: u64,
    pub stream_version: u64,
    pub payload: Vec<u8>,
}

impl RingEvent {
    /// Its columns, without the payload.
    pub fn columns(&self) -> EventColumns {
        EventColumns {
            lsn: self.lsn,
            timestamp_ns: self.timestamp_ns,
            value: self.value,
            type_id: self.type_id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
        }
    }
}

/// An event's columns, as a view reads them ([`RingReader::visit`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventColumns {
    pub lsn: u64,
    pub timestamp_ns: u64,
    /// NaN = none.
    pub value: f64,
    pub type_id: u64,
    pub stream_id: u64,
    pub stream_version: u64,
}

/// An event borrowed from the owner's ring ([`RingWriter::iter`]): no copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventRef<'a> {
    pub lsn: u64,
    pub timestamp_ns: u64,
    pub value: f64,
    pub type_id: u64,
    pub stream_id: u64,
    pub stream_version: u64,
    pub payload: &'a [u8],
}

/// An event to push (borrowed payload).
#[derive(Clone, Copy, Debug)]
pub struct NewEvent<'a> {
    pub lsn: u64,
    pub timestamp_ns: u64,
    pub value: f64,
    pub type_id: u64,
    pub stream_id: u64,
    pub stream_version: u64,
    pub payload: &'a [u8],
}

/// Views atomics the caller cannot be racing with as plain integers.
///
/// Only for column slices borrowed through `&RingWriter`: every store to a column goes
/// through `&mut RingWriter` (the writer is neither `Clone` nor `Sync`), so none can happen
/// while this borrow lives, and readers on other threads only load. Loads never race with
/// loads, so plain reads here are not data races.
#[cfg(not(evring_loom))]
fn plain(a: &[AtomicU64]) -> &[u64] {
    // SAFETY: `AtomicU64` has the same size, alignment and bit validity as `u64` (std
    // documents this), so the memory is a valid `[u64]` of the same length; no store to it
    // can happen while the shared borrow of the writer lives (see above).
    unsafe { std::slice::from_raw_parts(a.as_ptr().cast::<u64>(), a.len()) }
}

/// The arena's words as bytes, for the owner (see [`plain`]). Payload bytes are stored
/// little-endian in each word, so on a little-endian machine the bytes in memory are the
/// payload bytes in order.
#[cfg(not(evring_loom))]
fn plain_bytes(a: &[AtomicU64]) -> &[u8] {
    const _: () = assert!(
        cfg!(target_endian = "little"),
        "the arena layout assumes little-endian"
    );
    // SAFETY: as for `plain`: no store can happen while the writer is borrowed, and any
    // initialized `u64` memory is valid as `8 × len` bytes with alignment 1.
    unsafe { std::slice::from_raw_parts(a.as_ptr().cast::<u8>(), a.len() * 8) }
}

/// Counters of a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct RingStats {
    pub appended: u64,
    pub evicted: u64,
    pub count: u64,
    pub payload_bytes: u64,
    pub capacity_events: u64,
    pub capacity_bytes: u64,
    /// The smallest `from_ns` of a time window the ring holds whole (0: it holds every event
    /// it was given); see [`RingReader::complete_from_ns`].
    pub complete_from_ns: u64,
    /// Appends per second over the last window of at least one second between calls of
    /// [`RingWriter::stats`] (over the time since creation until a window completes).
    pub appends_per_sec: f64,
}

/// Where the appends-per-second window started: time, `appended` then, last rate.
#[derive(Clone, Copy)]
struct RateMark {
    at: std::time::Instant,
    appended: u64,
    rate: f64,
}

struct Columns {
    stamp: Box<[AtomicU64]>,
    lsn: Box<[AtomicU64]>,
    timestamp: Box<[AtomicU64]>,
    value: Box<[AtomicU64]>,
    type_id: Box<[AtomicU64]>,
    stream_id: Box<[AtomicU64]>,
    stream_version: Box<[AtomicU64]>,
    /// Arena position (bytes, unwrapped) and length of the payload.
    payload_pos: Box<[AtomicU64]>,
    payload_len: Box<[AtomicU64]>,
}

/// The scalar columns of one slot and its payload's place, loaded Relaxed. Callers either
/// own the ring (the writer) or validate the load with the slot's stamp (readers).
#[derive(Clone, Copy)]
struct SlotFields {
    lsn: u64,
    timestamp_ns: u64,
    value: f64,
    type_id: u64,
    stream_id: u64,
    stream_version: u64,
    /// Arena position (unwrapped) and length of the payload.
    pos: u64,
    len: u64,
}

impl Columns {
    fn load(&self, i: usize) -> SlotFields {
        SlotFields {
            lsn: self.lsn[i].load(Ordering::Relaxed),
            timestamp_ns: self.timestamp[i].load(Ordering::Relaxed),
            value: f64::from_bits(self.value[i].load(Ordering::Relaxed)),
            type_id: self.type_id[i].load(Ordering::Relaxed),
            stream_id: self.stream_id[i].load(Ordering::Relaxed),
            stream_version: self.stream_version[i].load(Ordering::Relaxed),
            pos: self.payload_pos[i].load(Ordering::Relaxed),
            len: self.payload_len[i].load(Ordering::Relaxed),
        }
    }
}

impl SlotFields {
    fn columns(&self) -> EventColumns {
        EventColumns {
            lsn: self.lsn,
            timestamp_ns: self.timestamp_ns,
            value: self.value,
            type_id: self.type_id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
        }
    }

    fn owned(self, payload: Vec<u8>) -> RingEvent {
        RingEvent {
            lsn: self.lsn,
            timestamp_ns: self.timestamp_ns,
            value: self.value,
            type_id: self.type_id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            payload,
        }
    }

    #[cfg(not(evring_loom))]
    fn borrowed(self, payload: &[u8]) -> EventRef<'_> {
        EventRef {
            lsn: self.lsn,
            timestamp_ns: self.timestamp_ns,
            value: self.value,
            type_id: self.type_id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            payload,
        }
    }
}

struct Inner {
    cols: Columns,
    arena: Box<[AtomicU64]>,
    mask: u64,
    arena_bytes: u64,
    max_retries: usize,
    /// Last committed seq (0 = none).
    head: AtomicU64,
    /// Oldest retained seq (a hint for readers; exact for the writer).
    tail: AtomicU64,
    /// One past the largest timestamp of an event the ring no longer holds, or never held
    /// (0: none); see "What the ring no longer holds" in the module docs.
    complete_from_ns: AtomicU64,
}

fn atomics(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Creates a ring: the single writer and a reader that can be cloned to any thread.
pub fn ring(cfg: RingConfig) -> (RingWriter, RingReader) {
    let cap = cfg.capacity_events.max(1).next_power_of_two();
    let words = cfg.capacity_bytes.max(8).div_ceil(8);
    let inner = Arc::new(Inner {
        cols: Columns {
            stamp: atomics(cap),
            lsn: atomics(cap),
            timestamp: atomics(cap),
            value: atomics(cap),
            type_id: atomics(cap),
            stream_id: atomics(cap),
            stream_version: atomics(cap),
            payload_pos: atomics(cap),
            payload_len: atomics(cap),
        },
        arena: atomics(words),
        mask: cap as u64 - 1,
        arena_bytes: words as u64 * 8,
        max_retries: cfg.max_retries,
        head: AtomicU64::new(0),
        tail: AtomicU64::new(1),
        complete_from_ns: AtomicU64::new(0),
    });
    (
        RingWriter {
            inner: inner.clone(),
            head: 0,
            tail: 1,
            arena_head: 0,
            arena_tail: 0,
            appended: 0,
            evicted: 0,
            complete_from_ns: 0,
            on_evict: None,
            rate: std::cell::Cell::new(RateMark {
                at: std::time::Instant::now(),
                appended: 0,
                rate: 0.0,
            }),
            _not_sync: std::marker::PhantomData,
        },
        RingReader { inner },
    )
}

/// What the eviction callback is told: the event that left the ring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evicted {
    pub lsn: u64,
    pub timestamp_ns: u64,
    pub stream_id: u64,
    pub stream_version: u64,
}

type EvictFn = Box<dyn FnMut(&Evicted) + Send>;

/// The single writer (owned by the partition's shard; not `Sync`, not `Clone`).
pub struct RingWriter {
    inner: Arc<Inner>,
    head: u64,
    tail: u64,
    /// Arena byte positions (unwrapped): next free, and start of the oldest payload.
    arena_head: u64,
    arena_tail: u64,
    appended: u64,
    evicted: u64,
    /// The writer's copy of `Inner::complete_from_ns`.
    complete_from_ns: u64,
    on_evict: Option<EvictFn>,
    rate: std::cell::Cell<RateMark>,
    _not_sync: std::marker::PhantomData<std::cell::Cell<()>>,
}

impl RingWriter {
    /// Calls `f` with every event that leaves the ring (capacity, purge or clear).
    pub fn on_evict(&mut self, f: impl FnMut(&Evicted) + Send + 'static) {
        self.on_evict = Some(Box::new(f));
    }

    fn slot(&self, seq: u64) -> usize {
        (seq & self.inner.mask) as usize
    }

    /// Counts an event with this timestamp as one the ring does not hold: raises
    /// `complete_from_ns` to `timestamp_ns + 1` (saturating) if that is more, then a Release
    /// fence, so that any store made after this call that hides an event from readers
    /// publishes the raised value with it (module docs). For events evicted (done by the
    /// ring itself) and events that never entered it: one too large for the arena, or the
    /// events before what a ring is rebuilt with at start-up.
    pub fn note_left_out(&mut self, timestamp_ns: u64) {
        let from = timestamp_ns.saturating_add(1);
        if from > self.complete_from_ns {
            self.complete_from_ns = from;
            self.inner.complete_from_ns.store(from, Ordering::Relaxed);
            fence(Ordering::Release);
        }
    }

    /// The smallest `from_ns` of a time window the ring holds whole (see
    /// [`RingReader::complete_from_ns`]).
    pub fn complete_from_ns(&self) -> u64 {
        self.complete_from_ns
    }

    /// Marks the oldest event evicted (busy stamp) and forgets it. No fence: the caller
    /// issues one Release fence before overwriting anything.
    fn evict_oldest(&mut self) {
        debug_assert!(self.tail <= self.head);
        let seq = self.tail;
        let i = self.slot(seq);
        // Before the busy mark (and the fence in `note_left_out` with it): a reader that
        // misses this event sees the raised value.
        let timestamp_ns = self.inner.cols.timestamp[i].load(Ordering::Relaxed);
        if self.inner.cols.type_id[i].load(Ordering::Relaxed) != PLACEHOLDER_TYPE {
            self.note_left_out(timestamp_ns);
        }
        let c = &self.inner.cols;
        #[cfg(not(evring_mutant = "no_evict_mark"))]
        c.stamp[i].store(2 * seq + 1, Ordering::Relaxed);
        let pos = c.payload_pos[i].load(Ordering::Relaxed);
        let len = c.payload_len[i].load(Ordering::Relaxed);
        self.arena_tail = pos + len.div_ceil(8) * 8;
        if let Some(f) = self.on_evict.as_mut() {
            f(&Evicted {
                lsn: c.lsn[i].load(Ordering::Relaxed),
                timestamp_ns,
                stream_id: c.stream_id[i].load(Ordering::Relaxed),
                stream_version: c.stream_version[i].load(Ordering::Relaxed),
            });
        }
        self.tail += 1;
        self.evicted += 1;
        if self.tail > self.head {
            // Empty: restart the arena at the current position.
            self.arena_tail = self.arena_head;
        }
    }

    /// Appends an event, evicting the oldest ones as needed.
    pub fn push(&mut self, e: &NewEvent<'_>) -> Result<u64, RingError> {
        let len = e.payload.len() as u64;
        let words = len.div_ceil(8);
        if words * 8 > self.inner.arena_bytes {
            return Err(RingError::TooLarge {
                bytes: e.payload.len(),
                capacity: self.inner.arena_bytes as usize,
            });
        }
        let seq = self.head + 1;
        let cap = self.inner.mask + 1;
        // A payload never straddles the arena's end: skip to the start if it would.
        let mut start = self.arena_head;
        let offset = start % self.inner.arena_bytes;
        if offset + words * 8 > self.inner.arena_bytes {
            start += self.inner.arena_bytes - offset;
        }
        while self.tail <= self.head
            && (seq - self.tail >= cap
                || start + words * 8 - self.arena_tail > self.inner.arena_bytes)
        {
            self.evict_oldest();
        }
        if self.tail > self.head {
            self.arena_tail = start;
        }
        let i = self.slot(seq);
        let c = &self.inner.cols;
        c.stamp[i].store(2 * seq + 1, Ordering::Relaxed);
        self.inner.tail.store(self.tail, Ordering::Relaxed);
        #[cfg(not(evring_mutant = "no_release_fence"))]
        fence(Ordering::Release);
        c.lsn[i].store(e.lsn, Ordering::Relaxed);
        c.timestamp[i].store(e.timestamp_ns, Ordering::Relaxed);
        c.value[i].store(e.value.to_bits(), Ordering::Relaxed);
        c.type_id[i].store(e.type_id, Ordering::Relaxed);
        c.stream_id[i].store(e.stream_id, Ordering::Relaxed);
        c.stream_version[i].store(e.stream_version, Ordering::Relaxed);
        c.payload_pos[i].store(start, Ordering::Relaxed);
        c.payload_len[i].store(len, Ordering::Relaxed);
        let base = ((start % self.inner.arena_bytes) / 8) as usize;
        // Whole words, then the last part word zero-padded (as `copy_payload_into` reads
        // them back).
        let slots = &self.inner.arena[base..base + words as usize];
        let mut chunks = e.payload.chunks_exact(8);
        for (chunk, word) in (&mut chunks).zip(slots) {
            let bytes: [u8; 8] = chunk.try_into().expect("a chunk of 8");
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut bytes = [0u8; 8];
            bytes[..rest.len()].copy_from_slice(rest);
            slots[slots.len() - 1].store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        c.stamp[i].store(2 * seq, Ordering::Release);
        self.inner.head.store(seq, Ordering::Release);
        self.head = seq;
        self.arena_head = start + words * 8;
        self.appended += 1;
        Ok(seq)
    }

    /// Evicts every event with a timestamp before `before_ns` from the oldest end (events are
    /// evicted in order; the first event at or after `before_ns` stops the purge).
    pub fn purge_older_than(&mut self, before_ns: u64) -> u64 {
        let mut n = 0;
        while self.tail <= self.head {
            let i = self.slot(self.tail);
            let placeholder =
                self.inner.cols.type_id[i].load(Ordering::Relaxed) == PLACEHOLDER_TYPE;
            if !placeholder && self.inner.cols.timestamp[i].load(Ordering::Relaxed) >= before_ns {
                break;
            }
            self.evict_oldest();
            n += 1;
        }
        self.inner.tail.store(self.tail, Ordering::Release);
        n
    }

    /// Evicts everything.
    pub fn clear(&mut self) -> u64 {
        let mut n = 0;
        while self.tail <= self.head {
            self.evict_oldest();
            n += 1;
        }
        self.inner.tail.store(self.tail, Ordering::Release);
        n
    }

    /// What the ring holds (events, payload bytes) and how many it has evicted: the part of
    /// [`RingWriter::stats`] that needs no clock, for every publication.
    pub fn occupancy(&self) -> (u64, u64, u64) {
        (
            self.len() as u64,
            self.arena_head - self.arena_tail.min(self.arena_head),
            self.evicted,
        )
    }

    pub fn stats(&self) -> RingStats {
        // The clock is read here, not per push: pushes stay free of syscalls and vDSO calls.
        let mut mark = self.rate.get();
        let secs = mark.at.elapsed().as_secs_f64();
        let recent = self.appended - mark.appended;
        let appends_per_sec = if secs >= 1.0 {
            mark = RateMark {
                at: std::time::Instant::now(),
                appended: self.appended,
                rate: recent as f64 / secs,
            };
            self.rate.set(mark);
            mark.rate
        } else if mark.appended == 0 && mark.rate == 0.0 && secs > 0.0 {
            recent as f64 / secs
        } else {
            mark.rate
        };
        RingStats {
            appends_per_sec,
            appended: self.appended,
            evicted: self.evicted,
            count: self.len() as u64,
            payload_bytes: self.occupancy().1,
            capacity_events: self.inner.mask + 1,
            capacity_bytes: self.inner.arena_bytes,
            complete_from_ns: self.complete_from_ns,
        }
    }

    pub fn len(&self) -> usize {
        (self.head + 1 - self.tail) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.tail > self.head
    }

    /// Oldest and newest retained LSN (`None` when empty).
    pub fn lsn_range(&self) -> Option<(u64, u64)> {
        if self.is_empty() {
            return None;
        }
        let c = &self.inner.cols;
        Some((
            c.lsn[self.slot(self.tail)].load(Ordering::Relaxed),
            c.lsn[self.slot(self.head)].load(Ordering::Relaxed),
        ))
    }

    /// The event with this LSN, if retained. Assumes LSNs were pushed in increasing order
    /// without gaps (as the partition does).
    pub fn get_by_lsn(&self, lsn: u64) -> Option<RingEvent> {
        let (oldest, newest) = self.lsn_range()?;
        if lsn < oldest || lsn > newest {
            return None;
        }
        let seq = self.tail + (lsn - oldest);
        let e = self.read_owned(seq);
        (e.lsn == lsn).then_some(e)
    }

    /// Reads a retained event; the writer needs no validation (nobody else writes).
    fn read_owned(&self, seq: u64) -> RingEvent {
        let f = self.inner.cols.load(self.slot(seq));
        f.owned(copy_payload(
            &self.inner.arena,
            self.inner.arena_bytes,
            f.pos,
            f.len as usize,
        ))
    }

    /// The event with LSN `lsn`, borrowed in place, if the ring holds it.
    #[cfg(not(evring_loom))]
    pub fn get_ref(&self, lsn: u64) -> Option<EventRef<'_>> {
        self.iter_from(lsn).next().filter(|e| e.lsn == lsn)
    }

    /// The owner's events from the oldest retained, borrowed in place (zero-copy): the
    /// payload is a slice of the arena. Only the owner can do this: no write can happen while
    /// the iterator borrows the writer.
    #[cfg(not(evring_loom))]
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> + '_ {
        self.iter_seqs(self.tail)
    }

    /// Like [`RingWriter::iter`], from the first event whose LSN is `from_lsn` or more (LSNs
    /// in a ring increase; binary search over the LSN column).
    #[cfg(not(evring_loom))]
    pub fn iter_from(&self, from_lsn: u64) -> impl Iterator<Item = EventRef<'_>> + '_ {
        let c = &self.inner.cols;
        let (mut lo, mut hi) = (self.tail, self.head + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if c.lsn[self.slot(mid)].load(Ordering::Relaxed) < from_lsn {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.iter_seqs(lo)
    }

    #[cfg(not(evring_loom))]
    fn iter_seqs(&self, from_seq: u64) -> impl Iterator<Item = EventRef<'_>> + '_ {
        let c = &self.inner.cols;
        let arena = plain_bytes(&self.inner.arena);
        (from_seq..=self.head).map(move |seq| {
            let f = c.load(self.slot(seq));
            let pos = (f.pos % self.inner.arena_bytes) as usize;
            // A payload never straddles the arena's end (see `push`).
            f.borrowed(&arena[pos..pos + f.len as usize])
        })
    }

    /// The owner's aggregation columns — timestamp, value bits, type id, stream id — as
    /// plain slices, in at most two contiguous runs, oldest first. Scanning plain slices lets
    /// the compiler keep several accumulators in flight (see `aggregate::Aggregator::add_run`).
    #[cfg(not(evring_loom))]
    pub fn column_runs(&self, mut f: impl FnMut(&[u64], &[u64], &[u64], &[u64])) {
        let n = self.len();
        if n == 0 {
            return;
        }
        let c = &self.inner.cols;
        let cap = (self.inner.mask + 1) as usize;
        let start = self.slot(self.tail);
        let first = n.min(cap - start);
        for (at, len) in [(start, first), (0, n - first)] {
            if len == 0 {
                continue;
            }
            let r = at..at + len;
            f(
                plain(&c.timestamp[r.clone()]),
                plain(&c.value[r.clone()]),
                plain(&c.type_id[r.clone()]),
                plain(&c.stream_id[r]),
            );
        }
    }

    /// Visits every retained event's columns in order, on the owning core, without copying
    /// payloads: `f(timestamp_ns, value, type_id, stream_id)`.
    pub fn scan_columns(&self, mut f: impl FnMut(u64, f64, u64, u64)) {
        let c = &self.inner.cols;
        for seq in self.tail..=self.head {
            let i = self.slot(seq);
            f(
                c.timestamp[i].load(Ordering::Relaxed),
                f64::from_bits(c.value[i].load(Ordering::Relaxed)),
                c.type_id[i].load(Ordering::Relaxed),
                c.stream_id[i].load(Ordering::Relaxed),
            );
        }
    }

    /// A reader on the same ring.
    pub fn reader(&self) -> RingReader {
        RingReader {
            inner: self.inner.clone(),
        }
    }
}

fn copy_payload(arena: &[AtomicU64], arena_bytes: u64, pos: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    copy_payload_into(&mut out, arena, arena_bytes, pos, len);
    out
}

/// Copies a payload into `out` (cleared first; a reused buffer keeps its capacity), a word
/// at a time.
fn copy_payload_into(
    out: &mut Vec<u8>,
    arena: &[AtomicU64],
    arena_bytes: u64,
    pos: u64,
    len: usize,
) {
    out.clear();
    out.resize(len, 0);
    let base = ((pos % arena_bytes) / 8) as usize;
    // A torn position from a racing read may run past the arena: the words that exist are
    // copied, and the stamp check rejects the read.
    let words = arena.get(base..).unwrap_or_default();
    let mut chunks = out.chunks_exact_mut(8);
    for (chunk, word) in (&mut chunks).zip(words) {
        chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        if let Some(word) = words.get(len / 8) {
            let bytes = word.load(Ordering::Relaxed).to_le_bytes();
            rest.copy_from_slice(&bytes[..rest.len()]);
        }
    }
}

/// The type id of a placeholder: a slot that keeps the ring's LSNs contiguous for a record
/// that is not an event (a stream change). Its timestamp is `u64::MAX` (in no time window),
/// its payload empty; its eviction does not count as an event left out.
pub const PLACEHOLDER_TYPE: u64 = u64::MAX;

/// A lock-free reader; clone it to any thread.
#[derive(Clone)]
pub struct RingReader {
    inner: Arc<Inner>,
}

impl RingReader {
    /// Copies event `seq` if the slot still holds it, committed.
    fn try_read(&self, seq: u64) -> Option<RingEvent> {
        let mut payload = Vec::new();
        self.try_read_with(seq, |_| true, &mut payload)
            .map(|(f, _)| f.owned(payload))
    }

    /// The one validated read every view is made of: event `seq`'s columns, and its payload
    /// (into `payload`, a reused buffer) when `want_payload` asks for it after seeing the
    /// columns, if the slot still holds the event, committed (the stamp protocol in the
    /// module docs). The flag says whether the payload was copied.
    fn try_read_with(
        &self,
        seq: u64,
        want_payload: impl FnOnce(&EventColumns) -> bool,
        payload: &mut Vec<u8>,
    ) -> Option<(SlotFields, bool)> {
        let inner = &*self.inner;
        let i = (seq & inner.mask) as usize;
        let c = &inner.cols;
        let s1 = c.stamp[i].load(Ordering::Acquire);
        if s1 != 2 * seq {
            return None;
        }
        let f = c.load(i);
        // A racing (rejected) read may see a nonsense length: bound the copy.
        let len = f.len.min(inner.arena_bytes) as usize;
        let copied = want_payload(&f.columns());
        if copied {
            copy_payload_into(payload, &inner.arena, inner.arena_bytes, f.pos, len);
        }
        fence(Ordering::Acquire);
        let s2 = c.stamp[i].load(Ordering::Relaxed);
        #[cfg(evring_mutant = "no_recheck")]
        let s2 = {
            let _ = s2;
            s1
        };
        (s2 == s1).then_some((f, copied))
    }

    /// Visits the events the ring holds now, oldest first, each read validated by its slot
    /// stamp: `f` sees every event as it was written, never a torn one. An event overwritten
    /// while it is read is skipped (it left the ring meanwhile), so the events visited are the
    /// ring's contents at the moment each was read, in LSN order. The payload is copied only
    /// for the events `want_payload` asks for; the columns of the rest cost a few loads each.
    pub fn visit(
        &self,
        mut want_payload: impl FnMut(&EventColumns) -> bool,
        mut f: impl FnMut(&EventColumns, Option<&[u8]>),
    ) {
        let head = self.inner.head.load(Ordering::Acquire);
        let tail = self.inner.tail.load(Ordering::Acquire).max(1);
        let mut payload = Vec::new();
        for seq in tail..=head {
            if let Some((fields, copied)) = self.try_read_with(seq, &mut want_payload, &mut payload)
            {
                f(&fields.columns(), copied.then_some(payload.as_slice()));
            }
        }
    }

    /// The aggregation columns — timestamp, value bits, type id, stream id — of the events
    /// the ring holds now, oldest first, in chunks of validated slots: what
    /// [`RingReader::visit`] gives without payloads, read a chunk at a time so the caller
    /// runs a tight loop over plain arrays (`aggregate::Aggregator::add_run`).
    ///
    /// Per slot it is the stamp protocol's read: the stamps of a chunk are loaded (Acquire)
    /// before its columns (Relaxed), then a fence (Acquire), then the stamps again; a slot
    /// whose stamps differ or do not name its event is left out of the chunk. The type and
    /// stream columns are read only when `filtered` (a scan is bound by memory bandwidth:
    /// without them it reads half as much); otherwise `f` gets zeros for them.
    pub fn column_chunks(&self, filtered: bool, mut f: impl FnMut(&[u64], &[u64], &[u64], &[u64])) {
        self.column_chunks_at(filtered, |_, ts, values, types, streams| {
            f(ts, values, types, streams)
        });
    }

    /// [`RingReader::column_chunks`], also saying where each chunk starts in the ring: the
    /// sequence number of its first slot when the chunk is whole (event `k` of the chunk is
    /// at that number + `k`; [`RingReader::payload_at`] reads it), `None` when slots that
    /// moved were left out of it.
    pub fn column_chunks_at(
        &self,
        filtered: bool,
        mut f: impl FnMut(Option<u64>, &[u64], &[u64], &[u64], &[u64]),
    ) {
        const CHUNK: usize = 256;
        let inner = &*self.inner;
        let c = &inner.cols;
        let cap = (inner.mask + 1) as usize;
        let head = inner.head.load(Ordering::Acquire);
        let mut seq = inner.tail.load(Ordering::Acquire).max(1);
        let mut stamps = [0u64; CHUNK];
        let mut ok = [false; CHUNK];
        let (mut ts, mut values, mut types, mut streams) =
            ([0u64; CHUNK], [0u64; CHUNK], [0u64; CHUNK], [0u64; CHUNK]);
        while seq <= head {
            // A chunk never wraps around the arrays' end: plain index ranges below.
            let at = (seq & inner.mask) as usize;
            let n = ((head - seq + 1) as usize).min(CHUNK).min(cap - at);
            let slots = at..at + n;
            // Each slot's stamp (Acquire) before its columns (Relaxed).
            let (stamp, t, v) = (
                &c.stamp[slots.clone()],
                &c.timestamp[slots.clone()],
                &c.value[slots.clone()],
            );
            if filtered {
                let (ty, st) = (&c.type_id[slots.clone()], &c.stream_id[slots.clone()]);
                for k in 0..n {
                    stamps[k] = stamp[k].load(Ordering::Acquire);
                    ts[k] = t[k].load(Ordering::Relaxed);
                    values[k] = v[k].load(Ordering::Relaxed);
                    types[k] = ty[k].load(Ordering::Relaxed);
                    streams[k] = st[k].load(Ordering::Relaxed);
                }
            } else {
                for k in 0..n {
                    stamps[k] = stamp[k].load(Ordering::Acquire);
                    ts[k] = t[k].load(Ordering::Relaxed);
                    values[k] = v[k].load(Ordering::Relaxed);
                }
            }
            fence(Ordering::Acquire);
            let mut all = true;
            for (k, a) in c.stamp[slots].iter().enumerate() {
                let want = 2 * (seq + k as u64);
                let s2 = a.load(Ordering::Relaxed);
                #[cfg(evring_mutant = "no_recheck")]
                let s2 = {
                    let _ = s2;
                    stamps[k]
                };
                ok[k] = stamps[k] == want && s2 == want;
                all &= ok[k];
            }
            if all {
                f(
                    Some(seq),
                    &ts[..n],
                    &values[..n],
                    &types[..n],
                    &streams[..n],
                );
            } else {
                // Leave out the slots that moved: compact the rest to the front.
                let mut kept = 0;
                for k in 0..n {
                    if ok[k] {
                        ts[kept] = ts[k];
                        values[kept] = values[k];
                        types[kept] = types[k];
                        streams[kept] = streams[k];
                        kept += 1;
                    }
                }
                if kept > 0 {
                    f(
                        None,
                        &ts[..kept],
                        &values[..kept],
                        &types[..kept],
                        &streams[..kept],
                    );
                }
            }
            seq += n as u64;
        }
    }

    /// The payload of the event at sequence number `seq` (from
    /// [`RingReader::column_chunks_at`]) into `payload`, and its columns, if the ring still
    /// holds that event.
    pub fn payload_at(&self, seq: u64, payload: &mut Vec<u8>) -> Option<EventColumns> {
        self.try_read_with(seq, |_| true, payload)
            .map(|(f, _)| f.columns())
    }

    /// Up to `max` events from LSN `from_lsn` on, oldest first, as long as the ring holds
    /// them contiguously: empty when `from_lsn` is no longer (or not yet) in the ring, and
    /// cut short where an event was overwritten while the view was read. (LSNs in a ring are
    /// contiguous: its owner clears it rather than leave a gap.)
    pub fn from_lsn(&self, from_lsn: u64, max: usize) -> Vec<RingEvent> {
        let mut out = Vec::new();
        let head = self.inner.head.load(Ordering::Acquire);
        let Some(newest) = (head >= 1)
            .then(|| self.try_read_with(head, |_| false, &mut Vec::new()))
            .flatten()
        else {
            return out;
        };
        let head_lsn = newest.0.lsn;
        if from_lsn > head_lsn || head_lsn - from_lsn >= head {
            return out;
        }
        let first = head - (head_lsn - from_lsn);
        for seq in first..=head {
            if out.len() == max {
                break;
            }
            match self.try_read(seq) {
                Some(e) if e.lsn == from_lsn + out.len() as u64 => out.push(e),
                _ => break,
            }
        }
        out
    }

    /// The LSNs of the oldest and newest events the ring holds, if any (a hint: the owner
    /// may push or evict at any moment).
    pub fn lsn_range(&self) -> Option<(u64, u64)> {
        let head = self.inner.head.load(Ordering::Acquire);
        if head == 0 {
            return None;
        }
        let tail = self.inner.tail.load(Ordering::Acquire).max(1);
        let newest = self.try_read_with(head, |_| false, &mut Vec::new())?.0.lsn;
        // The oldest retained may move under the reader: take the first that reads.
        (tail..=head)
            .find_map(|seq| self.try_read_with(seq, |_| false, &mut Vec::new()))
            .map(|(f, _)| (f.lsn, newest))
    }

    /// The smallest `from_ns` of a time window `[from_ns, to_ns)` whose events the ring
    /// holds whole: one past the largest timestamp of any event it no longer holds (evicted,
    /// cleared, or left out when it was rebuilt), 0 when there is none.
    ///
    /// Load it *after* a scan to judge the scan: if the scan missed an event because it left
    /// the ring, the value read here covers it (an Acquire fence, then the load; see "What
    /// the ring no longer holds" in the module docs). It only grows.
    pub fn complete_from_ns(&self) -> u64 {
        fence(Ordering::Acquire);
        self.inner.complete_from_ns.load(Ordering::Relaxed)
    }

    /// The head seq (0 = nothing pushed yet).
    pub fn head(&self) -> u64 {
        self.inner.head.load(Ordering::Acquire)
    }

    /// The longest contiguous run of valid events ending at the head, oldest first, limited
    /// to events with LSN ≥ `from_lsn` and at most `max` events (the newest ones).
    pub fn suffix(&self, from_lsn: u64, max: usize) -> Vec<RingEvent> {
        let head = self.inner.head.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut seq = head;
        while seq >= 1 && out.len() < max {
            match self.try_read(seq) {
                Some(e) if e.lsn >= from_lsn => out.push(e),
                _ => break,
            }
            seq -= 1;
        }
        out.reverse();
        out
    }

    /// Every retained event at one head version, oldest first, or `Retry` after
    /// `max_retries` attempts that saw the ring move.
    pub fn strict(&self) -> Result<Vec<RingEvent>, RingError> {
        let attempts = self.inner.max_retries.max(1);
        'attempt: for _ in 0..attempts {
            let head = self.inner.head.load(Ordering::Acquire);
            let tail = self.inner.tail.load(Ordering::Acquire);
            let mut out = Vec::with_capacity((head + 1).saturating_sub(tail) as usize);
            for seq in tail.max(1)..=head {
                match self.try_read(seq) {
                    Some(e) => out.push(e),
                    None => continue 'attempt,
                }
            }
            if self.inner.head.load(Ordering::Acquire) == head {
                return Ok(out);
            }
        }
        Err(RingError::Retry { attempts })
    }

    /// Valid events with `from_ns <= timestamp < to_ns` from a suffix view.
    pub fn time_window(&self, from_ns: u64, to_ns: u64) -> Vec<RingEvent> {
        self.suffix(0, usize::MAX)
            .into_iter()
            .filter(|e| e.timestamp_ns >= from_ns && e.timestamp_ns < to_ns)
            .collect()
    }
}

#[cfg(all(test, not(evring_loom)))]
mod tests {
    use super::*;

    /// A ring small enough for Miri to allocate quickly.
    fn small() -> RingConfig {
        RingConfig {
            capacity_events: 128,
            capacity_bytes: 4096,
            max_retries: 8,
        }
    }

    fn ev(lsn: u64, payload: &[u8]) -> NewEvent<'_> {
        NewEvent {
            lsn,
            timestamp_ns: 1000 + lsn,
            value: lsn as f64,
            type_id: lsn % 3,
            stream_id: lsn % 5,
            stream_version: lsn / 5,
            payload,
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // waits for a one-second window to end
    fn stats_report_appends_per_second_over_windows_of_a_second() {
        use std::time::{Duration, Instant};
        let created = Instant::now();
        let (mut w, _r) = ring(RingConfig {
            capacity_events: 64,
            capacity_bytes: 1024,
            max_retries: 4,
        });
        for lsn in 0..1000 {
            w.push(&ev(lsn, &[])).unwrap();
        }
        let early = w.stats();
        assert_eq!((early.appended, early.count), (1000, 64));
        assert!(
            early.appends_per_sec > 0.0,
            "rate since creation before a window ends"
        );
        // Until a second has passed, the rate is over the time since creation: 1000 appends
        // in less than a second, above 1000/s. The first call a second or more after
        // creation closes the window: 1000 appends over that time, at most 1000/s.
        let (first, asked) = loop {
            let asked = Instant::now();
            let rate = w.stats().appends_per_sec;
            if rate <= 1000.0 {
                break (rate, asked);
            }
            assert!(
                created.elapsed() < Duration::from_secs(30),
                "no window closed after 30 s: {rate}/s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // The window lasted at most from creation until now.
        let longest = created.elapsed().as_secs_f64();
        assert!(
            first > 0.0 && first >= 1000.0 / longest,
            "{first} over {longest} s"
        );
        // Within the next second the last window's rate is reported unchanged.
        for lsn in 1000..1500 {
            w.push(&ev(lsn, &[])).unwrap();
        }
        let again = w.stats().appends_per_sec;
        if asked.elapsed() < Duration::from_secs(1) {
            assert_eq!(again, first, "the rate changed before a second passed");
        } else {
            // This thread stalled for a second: a new window (500 appends) may have closed.
            assert!(again == first || again <= 500.0, "{again}");
        }
    }

    #[test]
    fn a_payload_reads_back_exactly_at_every_length_over_older_bytes() {
        // Every length from 0 to 40 bytes (whole words, and each size of part word), written
        // where earlier payloads left other bytes, reads back byte for byte through the owner
        // and through a reader: a word not stored, or a byte past the payload, shows.
        let (mut w, r) = ring(RingConfig {
            capacity_events: 8,
            capacity_bytes: 256,
            max_retries: 8,
        });
        for lsn in 0..64 {
            w.push(&ev(lsn, &[0xAA; 24])).unwrap();
        }
        for len in 0..=40usize {
            let lsn = 1000 + len as u64;
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) | 1).collect();
            let seq = w.push(&ev(lsn, &payload)).unwrap();
            let owned = w.get_ref(lsn).expect("the newest event is held");
            assert_eq!(
                owned.payload,
                &payload[..],
                "the owner's view of {len} bytes"
            );
            let mut got = vec![0x55; 3];
            let cols = r
                .payload_at(seq, &mut got)
                .expect("the newest event is held");
            assert_eq!(cols.lsn, lsn);
            assert_eq!(got, payload, "a reader's copy of {len} bytes");
        }
    }

    #[test]
    fn wraps_at_capacity_and_keeps_the_newest() {
        let (mut w, r) = ring(RingConfig {
            capacity_events: 4,
            capacity_bytes: 1024,
            max_retries: 4,
        });
        for lsn in 0..10 {
            w.push(&ev(lsn, &[lsn as u8; 3])).unwrap();
        }
        let all = r.strict().unwrap();
        assert_eq!(all.iter().map(|e| e.lsn).collect::<Vec<_>>(), [6, 7, 8, 9]);
        assert_eq!(all[0].payload, [6u8; 3]);
        assert_eq!(w.stats().evicted, 6);
        assert_eq!(w.get_by_lsn(7).unwrap().payload, [7u8; 3]);
        assert!(w.get_by_lsn(5).is_none());
    }

    #[test]
    fn byte_capacity_evicts_before_count_capacity() {
        let (mut w, r) = ring(RingConfig {
            capacity_events: 1024,
            capacity_bytes: 64,
            max_retries: 4,
        });
        for lsn in 0..10 {
            w.push(&ev(lsn, &[lsn as u8; 20])).unwrap();
        }
        // 20-byte payloads take 24 arena bytes: at most two fit in 64.
        let all = r.strict().unwrap();
        assert!(all.len() <= 2, "{}", all.len());
        assert_eq!(all.last().unwrap().payload, [9u8; 20]);
        assert!(w.stats().payload_bytes <= 64);
        assert!(matches!(
            w.push(&ev(10, &[0u8; 65])),
            Err(RingError::TooLarge { .. })
        ));
    }

    #[test]
    fn eviction_callback_reports_the_evicted_event_not_the_new_one() {
        let (mut w, _r) = ring(RingConfig {
            capacity_events: 2,
            capacity_bytes: 1024,
            max_retries: 4,
        });
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        w.on_evict(move |e| s.lock().unwrap().push(e.lsn));
        for lsn in 100..105 {
            w.push(&ev(lsn, b"x")).unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), [100, 101, 102]);
    }

    #[test]
    fn owner_iterates_in_place_from_any_lsn() {
        let (mut w, r) = ring(small());
        for lsn in 0..300u64 {
            let payload: Vec<u8> = (0..(lsn % 37) as u8).map(|b| b ^ lsn as u8).collect();
            w.push(&ev(lsn * 2, &payload)).unwrap();
        }
        let copied = r.strict().unwrap();
        let borrowed: Vec<EventRef<'_>> = w.iter().collect();
        assert_eq!(borrowed.len(), copied.len());
        for (b, c) in borrowed.iter().zip(&copied) {
            assert_eq!(
                (b.lsn, b.stream_version, b.payload),
                (c.lsn, c.stream_version, &c.payload[..])
            );
        }
        let first = borrowed[0].lsn;
        assert_eq!(
            w.iter_from(first + 11).next().unwrap().lsn,
            first + 12,
            "next even LSN"
        );
        assert_eq!(w.iter_from(0).count(), borrowed.len());
        assert_eq!(w.iter_from(599).count(), 0);
        assert_eq!(w.iter_from(598).map(|e| e.lsn).collect::<Vec<_>>(), [598]);
        // The column runs (two here: the ring has wrapped) hold the same events in order.
        let mut ts = Vec::new();
        let mut runs = 0;
        w.column_runs(|t, v, _, _| {
            runs += 1;
            ts.extend_from_slice(t);
            assert_eq!(t.len(), v.len());
        });
        assert_eq!(runs, 2);
        let want: Vec<u64> = copied.iter().map(|e| e.timestamp_ns).collect();
        assert_eq!(ts, want);
    }

    #[test]
    fn purge_and_clear() {
        let (mut w, r) = ring(small());
        for lsn in 0..10 {
            w.push(&ev(lsn, b"p")).unwrap();
        }
        assert_eq!(w.purge_older_than(1005), 5);
        assert_eq!(r.strict().unwrap().first().unwrap().lsn, 5);
        assert_eq!(w.clear(), 5);
        assert!(r.strict().unwrap().is_empty());
        w.push(&ev(10, b"again")).unwrap();
        assert_eq!(r.suffix(0, 10)[0].payload, b"again");
    }

    #[test]
    fn suffix_and_time_window_views() {
        let (mut w, r) = ring(small());
        for lsn in 0..100 {
            w.push(&ev(lsn, b"abcdefghij")).unwrap();
        }
        let s = r.suffix(90, usize::MAX);
        assert_eq!(
            s.iter().map(|e| e.lsn).collect::<Vec<_>>(),
            (90..100).collect::<Vec<_>>()
        );
        assert_eq!(r.suffix(0, 3).len(), 3);
        let win = r.time_window(1010, 1020);
        assert_eq!(win.len(), 10);
        assert!(win.iter().all(|e| e.payload == b"abcdefghij"));
    }

    #[test]
    fn readers_on_other_threads_never_see_torn_events() {
        let (mut w, r) = ring(RingConfig {
            capacity_events: 64,
            capacity_bytes: 64 * 40,
            max_retries: 2,
        });
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as O};
        let stop = Arc::new(AtomicBool::new(false));
        // Views each reader completed; the writer goes on until every reader has completed
        // some while it wrote (a reader the scheduler kept waiting would otherwise race nothing).
        let views: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let mut readers = Vec::new();
        for i in 0..2 {
            let r = r.clone();
            let stop = stop.clone();
            let views = views.clone();
            readers.push(std::thread::spawn(move || {
                while !stop.load(O::Relaxed) {
                    let v = r.suffix(0, usize::MAX);
                    for pair in v.windows(2) {
                        assert_eq!(pair[1].lsn, pair[0].lsn + 1, "view not contiguous");
                    }
                    for e in &v {
                        // Content is derived from the LSN: a torn copy would not match.
                        let want = vec![e.lsn as u8; (e.lsn % 33) as usize];
                        assert_eq!(e.payload, want, "torn payload at lsn {}", e.lsn);
                        assert_eq!(e.value, e.lsn as f64);
                        assert_eq!(e.timestamp_ns, 1000 + e.lsn);
                    }
                    views[i].fetch_add(1, O::Relaxed);
                }
            }));
        }
        let pushes: u64 = if cfg!(miri) { 500 } else { 300_000 };
        let mut lsn = 0u64;
        while lsn < pushes || views.iter().any(|v| v.load(O::Relaxed) < 3) {
            let p = vec![lsn as u8; (lsn % 33) as usize];
            w.push(&ev(lsn, &p)).unwrap();
            lsn += 1;
            if lsn >= pushes {
                std::thread::yield_now();
            }
        }
        stop.store(true, O::Relaxed);
        for t in readers {
            t.join().unwrap();
        }
    }

    #[test]
    fn views_visit_read_from_an_lsn_and_know_the_lsn_range() {
        let (mut w, r) = ring(RingConfig {
            capacity_events: 8,
            capacity_bytes: 4096,
            max_retries: 4,
        });
        assert_eq!(r.lsn_range(), None);
        assert!(r.from_lsn(0, 10).is_empty());
        for lsn in 100..110 {
            w.push(&ev(lsn, format!("p{lsn}").as_bytes())).unwrap();
        }
        // 8 slots: LSNs 102..=109 are held.
        assert_eq!(r.lsn_range(), Some((102, 109)));
        let mut seen = Vec::new();
        r.visit(
            |c| c.lsn % 2 == 0,
            |c, payload| seen.push((c.lsn, payload.map(|p| p.to_vec()))),
        );
        assert_eq!(seen.len(), 8);
        for (lsn, payload) in &seen {
            let want = (lsn % 2 == 0).then(|| format!("p{lsn}").into_bytes());
            assert_eq!(payload, &want, "the payload only where asked for");
        }
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (102..110).collect::<Vec<_>>()
        );
        let got: Vec<u64> = r.from_lsn(105, 3).iter().map(|e| e.lsn).collect();
        assert_eq!(got, [105, 106, 107]);
        assert_eq!(r.from_lsn(108, 10).len(), 2);
        assert_eq!(r.from_lsn(105, 3)[0].payload, b"p105");
        assert!(r.from_lsn(101, 10).is_empty(), "evicted");
        assert!(r.from_lsn(110, 10).is_empty(), "not yet written");
    }

    #[test]
    fn complete_from_is_one_past_the_largest_timestamp_that_left_the_ring() {
        let (mut w, r) = ring(RingConfig {
            capacity_events: 4,
            capacity_bytes: 1024,
            max_retries: 4,
        });
        let push = |w: &mut RingWriter, lsn: u64, ts: u64| {
            w.push(&NewEvent {
                timestamp_ns: ts,
                ..ev(lsn, b"x")
            })
            .unwrap();
        };
        // Timestamps out of LSN order: 50, 10, 40, 20 fill the 4 slots; nothing left yet.
        for (lsn, ts) in [(1, 50), (2, 10), (3, 40), (4, 20)] {
            push(&mut w, lsn, ts);
        }
        assert_eq!((r.complete_from_ns(), w.complete_from_ns()), (0, 0));
        // Evicts LSN 1 (timestamp 50): windows from 51 on are whole, though the ring still
        // holds events at 10, 20 and 40.
        push(&mut w, 5, 30);
        assert_eq!(r.complete_from_ns(), 51);
        // Evicts LSN 2 (timestamp 10): the value never goes down.
        push(&mut w, 6, 60);
        assert_eq!(r.complete_from_ns(), 51);
        assert_eq!(w.stats().complete_from_ns, 51);
        // An event that never entered the ring counts too.
        w.note_left_out(70);
        assert_eq!(r.complete_from_ns(), 71);
        w.note_left_out(u64::MAX);
        assert_eq!(r.complete_from_ns(), u64::MAX, "saturates");
        // Clear and purge count what they evict.
        let (mut w, r) = ring(small());
        for lsn in 0..5 {
            w.push(&ev(lsn, b"")).unwrap();
        }
        w.purge_older_than(1002);
        assert_eq!(r.complete_from_ns(), 1002, "1000 and 1001 purged");
        w.clear();
        assert_eq!(r.complete_from_ns(), 1005);
        assert_eq!(w.stats().evicted, 5);
    }
}
