//! The ring payload: what a partition keeps of each event in its ring besides the columns.
//!
//! Layout: `u16 stream, u16 type, u32 data, u32 metadata` lengths, `[16] event id`, then the
//! four fields back to back. [`InMemory`] (the owner's side) encodes it into one reused buffer
//! (no allocation per event); [`RingFields::parse`] reads it back, totally (any bytes give the
//! fields or an error), for reads, snapshots and views on any shard.

use super::error::ShortPayload;
use crate::journal::{RecordRef, RecordView};
use crate::protocol::{Event, RecordedEvent};
use crate::ring::{ring, EventColumns, NameTable, NewEvent, RingConfig, RingWriter};

/// The fields of a ring payload (see `InMemory`): stream, event type, event id, data,
/// metadata.
pub(super) struct RingFields<'a> {
    pub(super) stream: &'a [u8],
    pub(super) event_type: &'a [u8],
    pub(super) event_id: [u8; 16],
    pub(super) data: &'a [u8],
    pub(super) metadata: &'a [u8],
}

impl<'a> RingFields<'a> {
    pub(super) fn parse(p: &'a [u8]) -> Result<Self, ShortPayload> {
        let field = |at: usize, len: usize| {
            at.checked_add(len)
                .and_then(|end| p.get(at..end))
                .ok_or(ShortPayload)
        };
        let u16_at = |i: usize| field(i, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let u32_at =
            |i: usize| field(i, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let (sl, tl, dl, ml) = (u16_at(0)?, u16_at(2)?, u32_at(4)?, u32_at(8)?);
        let mut event_id = [0u8; 16];
        event_id.copy_from_slice(field(12, 16)?);
        let mut at = 28;
        let stream = field(at, sl)?;
        at += sl;
        let event_type = field(at, tl)?;
        at += tl;
        let data = field(at, dl)?;
        at += dl;
        let metadata = field(at, ml)?;
        Ok(RingFields {
            stream,
            event_type,
            event_id,
            data,
            metadata,
        })
    }
}

/// The partition's events in memory: the ring, the names behind its event-type ids, and one
/// reused buffer for encoding ring payloads (no allocation per event).
///
/// Ring payload: `u16 stream, u16 type, u32 data, u32 metadata` lengths, `[16] id`, then the
/// four fields. LSNs in the ring stay contiguous: a gap, or an event too large for the
/// ring's arena, clears it (reads then go to the journal).
pub(super) struct InMemory {
    pub(super) ring: RingWriter,
    pub(super) types: NameTable,
    scratch: Vec<u8>,
}

impl InMemory {
    pub(super) fn new(cfg: RingConfig) -> Self {
        InMemory {
            ring: ring(cfg).0,
            types: NameTable::new(),
            scratch: Vec::new(),
        }
    }

    /// Pushes one durable event.
    pub(super) fn push(&mut self, lsn: u64, r: &RecordRef<'_>) {
        let p = &mut self.scratch;
        p.clear();
        p.extend_from_slice(&(r.stream.len() as u16).to_le_bytes());
        p.extend_from_slice(&(r.event_type.len() as u16).to_le_bytes());
        p.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        p.extend_from_slice(&(r.metadata.len() as u32).to_le_bytes());
        p.extend_from_slice(&r.event_id);
        p.extend_from_slice(r.stream);
        p.extend_from_slice(r.event_type);
        p.extend_from_slice(r.data);
        p.extend_from_slice(r.metadata);
        let new = NewEvent {
            lsn,
            timestamp_ns: r.timestamp_ns,
            value: r.value,
            type_id: self.types.intern(&String::from_utf8_lossy(r.event_type)),
            stream_id: crate::protocol::stream_hash(r.stream),
            stream_version: r.stream_version,
            payload: p,
        };
        if let Some((_, newest)) = self.ring.lsn_range() {
            if newest.checked_add(1) != Some(lsn) {
                self.ring.clear();
            }
        }
        if self.ring.push(&new).is_err() {
            // Too large for the arena: neither it nor the events before it stay in memory.
            self.ring.note_left_out(new.timestamp_ns);
            self.ring.clear();
        }
    }

    /// Keeps the ring's LSNs contiguous over a record that is not an event (a stream
    /// change): a placeholder slot ([`crate::ring::PLACEHOLDER_TYPE`]).
    pub(super) fn push_placeholder(&mut self, lsn: u64) {
        let new = NewEvent {
            lsn,
            timestamp_ns: u64::MAX,
            value: f64::NAN,
            type_id: crate::ring::PLACEHOLDER_TYPE,
            stream_id: 0,
            stream_version: 0,
            payload: &[],
        };
        if let Some((_, newest)) = self.ring.lsn_range() {
            if newest.checked_add(1) != Some(lsn) {
                self.ring.clear();
            }
        }
        self.ring
            .push(&new)
            .expect("an empty payload fits any ring");
    }

    /// `f` of the event with `lsn`, borrowed from the ring's arena as a journal record
    /// would be (no copy), if the ring holds it.
    pub(super) fn with<T>(&self, lsn: u64, f: impl FnOnce(&RecordView<'_>) -> T) -> Option<T> {
        let e = self.ring.get_ref(lsn)?;
        let columns = EventColumns {
            lsn: e.lsn,
            timestamp_ns: e.timestamp_ns,
            value: e.value,
            type_id: e.type_id,
            stream_id: e.stream_id,
            stream_version: e.stream_version,
        };
        let fields = RingFields::parse(e.payload).ok()?;
        Some(f(&slot_view(&columns, &fields)))
    }
}

/// A ring slot (its columns and parsed payload) as the journal record it was pushed from,
/// without its stream ID (the ring keeps none: the stream index has it).
pub(super) fn slot_view<'a>(c: &EventColumns, f: &RingFields<'a>) -> RecordView<'a> {
    RecordView {
        lsn: c.lsn,
        record: RecordRef {
            kind: crate::journal::format::RECORD_KIND_EVENT,
            id: None,
            stream_version: c.stream_version,
            timestamp_ns: c.timestamp_ns,
            event_id: f.event_id,
            value: c.value,
            stream: f.stream,
            event_type: f.event_type,
            data: f.data,
            metadata: f.metadata,
        },
    }
}

/// The event a ring slot holds: its columns and its payload decoded (`None` if the payload
/// does not parse, which only a bug could cause: the owner wrote it).
pub(super) fn decode_event(
    c: &EventColumns,
    payload: &[u8],
    partition: u32,
) -> Option<RecordedEvent> {
    let f = RingFields::parse(payload).ok()?;
    Some(to_recorded(&slot_view(c, &f), partition))
}

/// The bytes an event counts for in a reply's budget (`max_read_bytes`): its variable
/// fields, and 64 for the fixed fields and framing.
pub fn reply_bytes(e: &RecordedEvent) -> usize {
    let ev = &e.event;
    budget_bytes(ev.event_type.as_bytes(), &ev.data, &ev.metadata)
}

/// [`reply_bytes`] of the event a record holds.
pub(super) fn record_reply_bytes(r: &RecordRef<'_>) -> usize {
    budget_bytes(r.event_type, r.data, r.metadata)
}

fn budget_bytes(event_type: &[u8], data: &[u8], metadata: &[u8]) -> usize {
    event_type.len() + data.len() + metadata.len() + 64
}

/// The event a journal record holds, copied straight from the frame.
pub(super) fn to_recorded(view: &RecordView<'_>, partition: u32) -> RecordedEvent {
    let r = &view.record;
    RecordedEvent {
        stream: String::from_utf8_lossy(r.stream).into_owned(),
        stream_version: r.stream_version,
        lsn: view.lsn,
        partition,
        event: Event {
            id: r.event_id,
            event_type: String::from_utf8_lossy(r.event_type).into_owned(),
            timestamp_ns: r.timestamp_ns,
            value: r.value,
            data: r.data.to_vec(),
            metadata: r.metadata.to_vec(),
        },
    }
}
