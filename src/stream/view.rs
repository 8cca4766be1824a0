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
use super::payload::{decode_event, payload_stream, reply_bytes};
use crate::aggregate::{Aggregator, Bucket, Query};
use crate::protocol::{stream_hash, RecordedEvent};
use crate::ring::{Names, RingReader};

/// A partition's ring and type names, for any thread.
#[derive(Clone)]
pub struct PartitionView {
    partition: u32,
    ring: RingReader,
    names: Names,
}

impl PartitionView {
    pub(super) fn new(partition: u32, ring: RingReader, names: Names) -> Self {
        PartitionView {
            partition,
            ring,
            names,
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

    /// Count, sum, min and max of the `value` of the events the ring holds with
    /// `from_ns ≤ timestamp < to_ns`, of `stream` (every stream for ""), whose type starts
    /// with `type_prefix`, in buckets of `bucket_ns` (0: one bucket).
    ///
    /// The stream id column is a 64-bit hash of the name, and names collide (e.g.
    /// "oPxgeduSyVJ" and "6oPwYOOB18L"): an event counts only if the name in its payload is
    /// the stream's too, so the payloads of the events whose hash matches are read as well.
    ///
    /// Refused with [`StreamError::WindowBeforeRing`] when an event with a timestamp at or
    /// after `from_ns` has left the ring (or never entered it): timestamps are the clients'
    /// and need not follow LSN order, so the rule is the ring's `complete_from_ns` (one past
    /// the largest timestamp of an event it does not hold), checked before the scan (to skip
    /// it) and after it (an eviction during the scan counts).
    pub fn aggregate(
        &self,
        stream: &str,
        type_prefix: &str,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    ) -> Result<Vec<Bucket>, StreamError> {
        let stream_id = (!stream.is_empty()).then(|| stream_hash(stream.as_bytes()));
        let q = Query {
            from_ns,
            to_ns,
            bucket_ns,
            stream_id,
            type_ids: (!type_prefix.is_empty()).then(|| self.names.ids_with_prefix(type_prefix)),
        };
        let filtered = q.type_ids.is_some();
        let mut agg = Aggregator::new(q)?;
        self.check_window(from_ns)?;
        match stream_id {
            None => self
                .ring
                .column_chunks(filtered, |ts, values, types, streams| {
                    agg.add_run(ts, values, types, streams)
                }),
            Some(id) => self.ring.visit(
                |c| c.stream_id == id,
                |c, payload| {
                    if payload.and_then(payload_stream) == Some(stream.as_bytes()) {
                        agg.add(c.timestamp_ns, c.value, c.type_id, c.stream_id);
                    }
                },
            ),
        }
        self.check_window(from_ns)?;
        Ok(agg.finish())
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
    /// least). Empty when the ring no longer holds `from`, or does not hold it yet.
    pub fn read_from(&self, from: u64, max: usize, budget: usize) -> Vec<RecordedEvent> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.ring.from_lsn(from, max) {
            let Some(event) = decode_event(&e.columns(), &e.payload, self.partition) else {
                break;
            };
            let size = reply_bytes(&event);
            if !out.is_empty() && bytes + size > budget {
                break;
            }
            bytes += size;
            out.push(event);
        }
        out
    }
}
