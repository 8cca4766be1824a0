//! A partition as any shard sees it without its owner: a stable view of its ring, and the
//! names behind its event-type ids.
//!
//! A [`PartitionView`] is `Send + Sync` and cheap to clone. Every shard holds one per
//! partition, so a request that only needs what the ring holds — an AGGREGATE, the ring part
//! of a subscription's catch-up — is served on the shard that received it, with no message to
//! the owner. The ring's readers take no lock and never make its writer wait (`src/ring/`,
//! loom-checked); the name list is read under a read lock once per query, never per event.
//!
//! What a view does not see: events not yet durable (the owner pushes to the ring only what
//! it published) and events the ring no longer holds (a view says where its ring starts, and
//! the caller reads older events through the owner, from the journal). An aggregation whose
//! window reaches back to a time the ring no longer holds whole is refused
//! ([`StreamError::WindowBeforeRing`]), never answered with part of the events.

use super::error::StreamError;
use super::payload::{decode_event, reply_bytes, InMemory, RingFields};
use crate::aggregate::groups::{read_data, GroupBy, GroupTable, Key, Number, Plan};
use crate::aggregate::{AggregateError, Aggregator, Query};
use crate::journal::RecordRef;
use crate::protocol::{stream_hash, Group, Groups, NameMatch, RecordedEvent};
use crate::ring::{Names, RingConfig, RingReader};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// A partition's ring and type names, for any thread.
#[derive(Clone)]
pub struct PartitionView {
    partition: u32,
    ring: RingReader,
    names: Names,
    shared_ids: SharedIds,
}

/// The stream ids (hashes of stream names) that two or more of a partition's stream names
/// share, for its views: while there is none, a stream's id column names it, and a group-by
/// stream needs no payloads.
pub(super) type SharedIds = Arc<RwLock<Vec<u64>>>;

/// What the owner of a partition's streams knows of their ids: every id in use, and those
/// shared by two names (published to the views).
#[derive(Default)]
pub(super) struct StreamIds {
    seen: HashSet<u64>,
    shared: SharedIds,
}

impl StreamIds {
    /// Notes a new stream's name.
    pub(super) fn note(&mut self, name: &[u8]) {
        let id = stream_hash(name);
        if !self.seen.insert(id) {
            let mut shared = self.shared.write().expect("never poisoned");
            if !shared.contains(&id) {
                shared.push(id);
            }
        }
    }

    /// Forgets a deleted stream's name (its id stays noted as shared if it was).
    pub(super) fn forget(&mut self, name: &[u8]) {
        let id = stream_hash(name);
        if !self.shared.read().expect("never poisoned").contains(&id) {
            self.seen.remove(&id);
        }
    }

    pub(super) fn shared(&self) -> SharedIds {
        self.shared.clone()
    }
}

impl PartitionView {
    pub(super) fn new(
        partition: u32,
        ring: RingReader,
        names: Names,
        shared_ids: SharedIds,
    ) -> Self {
        PartitionView {
            partition,
            ring,
            names,
            shared_ids,
        }
    }

    /// The partition this is a view of.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The LSNs of the oldest and newest events the ring holds, if any.
    pub fn lsn_range(&self) -> Option<(u64, u64)> {
        self.ring.lsn_range()
    }

    /// The grouped aggregation `plan` (see `crate::aggregate::groups`) over the events the
    /// ring holds: this partition's groups, by key, for the caller to merge with other
    /// partitions' and rank.
    ///
    /// Three scans, the cheapest that answers: the column scan of [`Aggregator`] for a plain
    /// aggregation of the value column; the columns alone for a group-by type; otherwise
    /// [`RingReader::visit`], which copies the payload (into one reused buffer) of only the
    /// events whose columns pass the window, the type filter and the stream hash. The stream
    /// id column is a 64-bit hash of the name, and names collide (e.g. "oPxgeduSyVJ" and
    /// "6oPwYOOB18L"): a stream filter and a group-by stream read the name in the payload.
    ///
    /// Refused with [`StreamError::WindowBeforeRing`] when an event with a timestamp at or
    /// after `from_ns` has left the ring (or never entered it): timestamps are the clients'
    /// and need not follow LSN order, so the rule is the ring's `complete_from_ns` (one past
    /// the largest timestamp of an event it does not hold), checked before the scan (to skip
    /// it) and after it (an eviction during the scan counts).
    pub fn aggregate(&self, plan: &Plan) -> Result<Groups, StreamError> {
        self.check_window(plan.from_ns)?;
        let type_ids = match (plan.type_match, plan.event_type.as_str()) {
            (NameMatch::Exact, "") => None,
            (NameMatch::Exact, name) => Some(self.names.id(name).into_iter().collect()),
            (NameMatch::Prefix, prefix) => Some(self.names.ids_with_prefix(prefix)),
        };
        let groups = if plan.is_plain() {
            self.plain(plan, type_ids)?
        } else {
            let type_ok = |id: u64| type_ids.as_ref().is_none_or(|ids| ids.contains(&id));
            let mut table = GroupTable::new(plan);
            let mut failed = Ok(());
            let by_stream_id = self.streams_by_id(plan);
            if by_stream_id {
                self.ring
                    .column_chunks_at(true, |seq, ts, values, types, streams| {
                        for k in 0..ts.len() {
                            if failed.is_ok() && type_ok(types[k]) {
                                let key = Key::StreamId {
                                    id: streams[k],
                                    seq: seq.map(|s| s + k as u64),
                                };
                                let value = f64::from_bits(values[k]);
                                failed = table.offer(ts[k], key, Some(value));
                            }
                        }
                    });
            } else if plan.needs_payload() {
                self.scan_payloads(plan, &type_ok, &mut table, &mut failed);
            } else {
                self.ring.column_chunks(true, |ts, values, types, _| {
                    for k in 0..ts.len() {
                        if failed.is_ok() && type_ok(types[k]) {
                            let value = f64::from_bits(values[k]);
                            failed = table.offer(ts[k], Key::Type(types[k]), Some(value));
                        }
                    }
                });
            }
            failed?;
            if by_stream_id {
                let names = self.stream_names(&table.unnamed());
                table.finish(|id, _| names.get(&id).cloned())?
            } else {
                table.finish(|id, _| self.names.name(id))?
            }
        };
        self.check_window(plan.from_ns)?;
        Ok(groups)
    }

    /// Whether a group-by stream can take each event's stream from its id column: nothing
    /// else needs its payload, and no two of the partition's stream names share an id.
    fn streams_by_id(&self, plan: &Plan) -> bool {
        let others = Plan {
            group_by: GroupBy::Nothing,
            ..plan.clone()
        };
        plan.group_by == GroupBy::Stream
            && !others.needs_payload()
            && self.shared_ids.read().expect("never poisoned").is_empty()
    }

    /// The names of the streams `ids` (with where the ring holds an event of each, when
    /// known): read from that event, and for the rest (a slot the scan could not point at,
    /// or an event that left the ring since) from any of their events the ring holds.
    fn stream_names(&self, ids: &[(u64, Option<u64>)]) -> HashMap<u64, String> {
        let mut names = HashMap::with_capacity(ids.len());
        let mut payload = Vec::new();
        let mut missing = HashSet::new();
        for &(id, seq) in ids {
            let name = seq.and_then(|s| {
                let columns = self.ring.payload_at(s, &mut payload)?;
                let fields = RingFields::parse(&payload).ok()?;
                (columns.stream_id == id && stream_hash(fields.stream) == id)
                    .then(|| String::from_utf8_lossy(fields.stream).into_owned())
            });
            match name {
                Some(n) => {
                    names.insert(id, n);
                }
                None => {
                    missing.insert(id);
                }
            }
        }
        if !missing.is_empty() {
            self.ring.visit(
                |c| missing.contains(&c.stream_id),
                |c, payload| {
                    if let Some(f) = payload.and_then(|p| RingFields::parse(p).ok()) {
                        names
                            .entry(c.stream_id)
                            .or_insert_with(|| String::from_utf8_lossy(f.stream).into_owned());
                    }
                },
            );
        }
        names
    }

    /// A plain aggregation of the value column: one group, from the column scan.
    fn plain(&self, plan: &Plan, type_ids: Option<Vec<u64>>) -> Result<Groups, StreamError> {
        let q = Query {
            from_ns: plan.from_ns,
            to_ns: plan.to_ns,
            bucket_ns: if plan.buckets == 1 { 0 } else { plan.width },
            stream_id: None,
            type_ids,
        };
        let filtered = q.type_ids.is_some();
        let mut agg = Aggregator::new(q)?;
        self.ring
            .column_chunks(filtered, |ts, values, types, streams| {
                agg.add_run(ts, values, types, streams)
            });
        let missing = agg.missing();
        let buckets = agg.finish();
        Ok(Groups {
            matched: missing + buckets.iter().map(|b| b.count).sum::<u64>(),
            ungrouped: 0,
            groups_total: 1,
            groups: vec![Group {
                key: String::new(),
                missing,
                buckets,
            }],
        })
    }

    /// Offers `table` every event whose columns and payload pass `plan`'s filters.
    fn scan_payloads(
        &self,
        plan: &Plan,
        type_ok: &dyn Fn(u64) -> bool,
        table: &mut GroupTable<'_>,
        failed: &mut Result<(), AggregateError>,
    ) {
        let stream_id = (plan.stream_match == NameMatch::Exact && !plan.stream.is_empty())
            .then(|| stream_hash(plan.stream.as_bytes()));
        let mut key = Vec::new();
        self.ring.visit(
            |c| {
                c.timestamp_ns >= plan.from_ns
                    && c.timestamp_ns < plan.to_ns
                    && type_ok(c.type_id)
                    && stream_id.is_none_or(|id| id == c.stream_id)
            },
            |c, payload| {
                let Some(fields) = payload.and_then(|p| RingFields::parse(p).ok()) else {
                    return;
                };
                if failed.is_err() || !plan.stream_passes(fields.stream) {
                    return;
                }
                let Some((field_number, grouped)) = read_data(plan, fields.data, &mut key) else {
                    return;
                };
                let number = match plan.number {
                    Number::Value => Some(c.value),
                    Number::Field(_) => field_number,
                };
                let k = match &plan.group_by {
                    GroupBy::Nothing => Key::One,
                    GroupBy::Stream => Key::Stream(c.stream_id, fields.stream),
                    GroupBy::Type => Key::Type(c.type_id),
                    GroupBy::Field(_) if grouped => Key::Text(&key),
                    GroupBy::Field(_) => Key::Missing,
                };
                *failed = table.offer(c.timestamp_ns, k, number);
            },
        );
    }

    /// Whether the ring holds every event with a timestamp at or after `from_ns`.
    fn check_window(&self, from_ns: u64) -> Result<(), StreamError> {
        let complete_from = self.ring.complete_from_ns();
        if from_ns < complete_from {
            return Err(StreamError::WindowBeforeRing {
                partition: self.partition,
                left_out_ns: complete_from - 1,
            });
        }
        Ok(())
    }

    /// The events from LSN `from` on that the ring holds contiguously, oldest first: at most
    /// `max`, and no more than `budget` bytes (as a READ reply counts them; one event at
    /// least). Empty when the ring no longer holds `from`, or does not hold it yet, or holds
    /// nothing after it but stream changes (placeholders, passed over).
    pub fn read_from(&self, from: u64, max: usize, budget: usize) -> Vec<RecordedEvent> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut pos = from;
        loop {
            let chunk = self.ring.from_lsn(pos, max);
            let n = chunk.len();
            for e in chunk {
                pos = e.lsn + 1;
                if e.type_id == crate::ring::PLACEHOLDER_TYPE {
                    continue; // a stream change, not an event
                }
                let Some(event) = decode_event(&e.columns(), &e.payload, self.partition) else {
                    return out;
                };
                let size = reply_bytes(&event);
                if !out.is_empty() && bytes + size > budget {
                    return out;
                }
                bytes += size;
                out.push(event);
                if out.len() == max {
                    return out;
                }
            }
            if !out.is_empty() || n < max.max(1) {
                return out;
            }
        }
    }
}

/// A partition's memory — its ring and type names — without the partition: filled with
/// events exactly as a partition fills its own, and read through the same [`PartitionView`].
/// For benchmarks and tests of views without a journal or a server.
pub struct DetachedRing {
    partition: u32,
    mem: InMemory,
    streams: HashSet<Vec<u8>>,
    ids: StreamIds,
}

impl DetachedRing {
    pub fn new(partition: u32, cfg: RingConfig) -> Self {
        DetachedRing {
            partition,
            mem: InMemory::new(cfg),
            streams: HashSet::new(),
            ids: StreamIds::default(),
        }
    }

    /// Pushes one event, as a partition does once it is durable (LSNs follow each other).
    pub fn push(&mut self, lsn: u64, r: &RecordRef<'_>) {
        if !self.streams.contains(r.stream) {
            self.streams.insert(r.stream.to_vec());
            self.ids.note(r.stream);
        }
        self.mem.push(lsn, r);
    }

    pub fn view(&self) -> PartitionView {
        PartitionView::new(
            self.partition,
            self.mem.ring.reader(),
            self.mem.types.names(),
            self.ids.shared(),
        )
    }
}
