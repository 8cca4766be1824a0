//! Subscriptions: catch-up then live, for streams, partitions, all, and models.
use std::rc::Rc;

use super::conn::ConnOut;
use super::route::{error_response, OpResult, PartOp, Shard, ShardMsg};
use super::ApiError;
use crate::protocol::{code, partition_of, Event, RecordedEvent, Response, SubscribeTarget};
use crate::stream::{Partition, PublishSink};

/// A SUBSCRIBE's fields.
pub(super) struct SubscribeRequest {
    pub(super) target: SubscribeTarget,
    pub(super) name: String,
    pub(super) from: u64,
    pub(super) type_prefix: String,
    /// One start per partition the target spans, or empty (`from` everywhere).
    pub(super) positions: Vec<u64>,
}

/// Pushes a partition's events to a subscriber, filtering by stream or type prefix.
pub(super) struct SubSink {
    pub(super) shard: std::rc::Weak<Shard>,
    pub(super) origin: usize,
    pub(super) conn: u64,
    pub(super) sub: u64,
    pub(super) stream: Option<String>,
    pub(super) type_prefix: String,
}

impl PublishSink for SubSink {
    fn offer(&self, stream: &str, events: &[RecordedEvent]) -> bool {
        let Some(shard) = self.shard.upgrade() else {
            return false;
        };
        if self.stream.as_deref().is_some_and(|s| s != stream) {
            return true;
        }
        let selected: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| e.event.event_type.starts_with(&self.type_prefix))
            .cloned()
            .collect();
        if selected.is_empty() {
            return true;
        }
        shard.deliver_push(self.origin, self.conn, self.sub, selected)
    }
}

/// Offers `events` (of several streams, in LSN order) to `sink` a run of one stream at a
/// time; false once the sink refuses (the subscriber went away or is too slow).
pub(super) fn offer_runs(sink: &SubSink, events: &[RecordedEvent]) -> bool {
    events
        .chunk_by(|a, b| a.stream == b.stream)
        .all(|run| sink.offer(&run[0].stream, run))
}

/// Events per catch-up read.
pub(super) const CATCH_UP_CHUNK: usize = 512;

/// At least the bytes `events` take as pushes (a frame per run of one stream, each event
/// with its stream's name).
fn pushed_bytes(events: &[RecordedEvent]) -> usize {
    events
        .iter()
        .map(|e| {
            let ev = &e.event;
            // Frame header and event count, fixed fields, length prefixes.
            20 + 72 + e.stream.len() + ev.event_type.len() + ev.data.len() + ev.metadata.len()
        })
        .sum()
}

impl Shard {
    /// A subscription to the key-value model's domain events of one partition: the events
    /// of commands from LSN `from` on re-derived from the journal, then live. The live sink
    /// is added in the same synchronous step as the final check that nothing was applied
    /// since the catch-up, so no event falls between them.
    pub(super) async fn subscribe_model(
        &self,
        partition: u32,
        engine: Rc<dyn super::served_model::ModelEngine>,
        sink: Rc<SubSink>,
        from: u64,
        model: String,
    ) -> OpResult {
        // A domain event's "stream" is its model.
        let name = model.clone();
        let to_recorded = Rc::new(move |e: &crate::engine::DomainEvent| RecordedEvent {
            stream: name.clone(),
            stream_version: e.lsn,
            lsn: e.lsn,
            partition,
            event: Event {
                id: [0; 16],
                event_type: e.event_type.clone(),
                timestamp_ns: e.timestamp_ns,
                value: f64::NAN,
                data: e.data.clone(),
                metadata: Vec::new(),
            },
        });
        // `u64::MAX`: live only. A `from` beyond what is applied: nothing to catch up; the
        // live sink skips events below it.
        let start = if from == u64::MAX {
            engine.applied_lsn()
        } else {
            from
        };
        let mut next = start;
        loop {
            let upto = engine.applied_lsn();
            if next < upto {
                let events = match engine.events_between(next, upto).await {
                    Ok(e) => e,
                    Err(e) => {
                        return OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, e.to_string()))
                    }
                };
                let recorded: Vec<RecordedEvent> = events.iter().map(|e| to_recorded(e)).collect();
                if !recorded.is_empty() && !sink.offer(&model, &recorded) {
                    return OpResult::Done; // the subscriber went away
                }
                next = upto;
            }
            // No await between this check and the registration: no event falls between.
            if engine.applied_lsn() <= next {
                let live = sink.clone();
                let to_recorded = to_recorded.clone();
                let model = model.clone();
                let id = engine.add_sink(Rc::new(move |e: &crate::engine::DomainEvent| {
                    e.lsn < start || live.offer(&model, &[to_recorded(e)])
                }));
                let key = (sink.origin, sink.conn, sink.sub, partition);
                self.model_sinks.borrow_mut().insert(key, (id, engine));
                return OpResult::Done;
            }
        }
    }

    /// Pushes history from `from` until caught up. Returns false if the subscriber went away.
    /// The caller registers the live sink in the same synchronous step as the final check,
    /// so no event falls between catch-up and live.
    pub(super) async fn catch_up(
        self: &Rc<Self>,
        p: &Rc<Partition>,
        sink: &SubSink,
        target: SubscribeTarget,
        stream: &str,
        from: u64,
    ) -> Result<bool, ApiError> {
        match target {
            SubscribeTarget::Stream => {
                let mut version = from;
                loop {
                    let lsns = p.stream_lsns_from(stream, version);
                    if lsns.is_empty() {
                        return Ok(true);
                    }
                    let chunk = &lsns[..lsns.len().min(CATCH_UP_CHUNK)];
                    let events = p.fetch_lsns(chunk, p.max_read_bytes()).await?;
                    // Deleted versions are passed over: go on after the last one sent.
                    version = events.last().map_or(version, |e| e.stream_version + 1);
                    if !sink.offer(stream, &events) {
                        return Ok(false);
                    }
                }
            }
            SubscribeTarget::Partition | SubscribeTarget::All | SubscribeTarget::Model => {
                let mut lsn = from;
                loop {
                    if lsn >= p.published_lsn() {
                        return Ok(true);
                    }
                    let events = match self.ring_chunk(p.id, lsn) {
                        Some(events) => events,
                        None => {
                            p.read_lsn_range(lsn, CATCH_UP_CHUNK, p.max_read_bytes())
                                .await?
                        }
                    };
                    let Some(last) = events.last() else {
                        return Ok(true);
                    };
                    lsn = last.lsn + 1;
                    if !offer_runs(sink, &events) {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// The catch-up of partition `p` for a subscription on this shard, from LSN `from`
    /// (`u64::MAX`: live only, nothing to catch up) as far as its ring reaches: returns the
    /// LSN reached, or `None` if the subscriber went away. Each chunk waits for room in the
    /// subscriber's outbound buffer `out` first, so history of any length arrives at the
    /// pace the subscriber reads it.
    pub(super) async fn catch_up_partition(
        self: &Rc<Self>,
        p: u32,
        out: &ConnOut,
        sink: &SubSink,
        from: u64,
    ) -> Result<Option<u64>, ApiError> {
        let mut pos = from;
        if pos == u64::MAX {
            return Ok(Some(pos));
        }
        loop {
            let events = self.partition_chunk(p, pos).await?;
            let Some(last) = events.last() else {
                return Ok(Some(pos));
            };
            pos = last.lsn + 1;
            out.wait_for_room_for(pushed_bytes(&events)).await;
            if !offer_runs(sink, &events) {
                return Ok(None);
            }
        }
    }

    /// One chunk of partition `p`'s events from LSN `pos` on, from its ring through its view:
    /// empty once `pos` is past the ring's newest event; `None` when the ring no longer holds
    /// `pos` (or is empty, or the partition has no view yet), so the journal must be read.
    pub(super) fn ring_chunk(&self, p: u32, pos: u64) -> Option<Vec<RecordedEvent>> {
        let view = self.shared.views[p as usize].get()?;
        let budget = self.shared.config.max_read_bytes as usize;
        let events = view.read_from(pos, CATCH_UP_CHUNK, budget);
        if !events.is_empty() || view.lsn_range().is_some_and(|(oldest, _)| pos >= oldest) {
            Some(events)
        } else {
            None
        }
    }

    /// One chunk of partition `p`'s events from LSN `pos` on: from its ring through its view,
    /// on this shard; from its journal through its owner only when the ring no longer holds
    /// `pos` (or is empty). Empty once `pos` is past the ring's newest event.
    pub(super) async fn partition_chunk(
        self: &Rc<Self>,
        p: u32,
        pos: u64,
    ) -> Result<Vec<RecordedEvent>, ApiError> {
        if let Some(events) = self.ring_chunk(p, pos) {
            return Ok(events);
        }
        let op = PartOp::ReadRange {
            from: pos,
            max: CATCH_UP_CHUNK,
        };
        match self.call(p, op).await {
            OpResult::Events(events, _) => Ok(events),
            OpResult::Err(e) => Err(e),
            other => Err(ApiError::new(
                code::PARTITION_UNAVAILABLE,
                format!("internal: unexpected partition result {other:?}"),
            )),
        }
    }

    /// Delivers pushed events to a subscription on shard `origin`.
    pub(super) fn deliver_push(
        &self,
        origin: usize,
        conn: u64,
        sub: u64,
        events: Vec<RecordedEvent>,
    ) -> bool {
        if origin == self.id {
            return self.local_push(conn, sub, &events);
        }
        match self.senders[origin].as_ref() {
            Some(sender) => {
                self.messages_sent.increment(1);
                sender
                    .try_send(ShardMsg::Push { conn, sub, events })
                    .is_ok()
            }
            None => false,
        }
    }

    pub(super) fn local_push(&self, conn: u64, sub: u64, events: &[RecordedEvent]) -> bool {
        let Some(out) = self.conns.borrow().get(&conn).cloned() else {
            return false;
        };
        if out.push(sub, events) {
            return true;
        }
        if out.subs.borrow_mut().remove(&sub).is_some() {
            out.send(
                sub,
                &Response::error(
                    code::OVERLOADED,
                    "subscription dropped: the subscriber reads too slowly; resubscribe from \
                     the last position received",
                ),
            );
        }
        false
    }

    /// SUBSCRIBE: checks the request, replies Subscribed, then starts the subscription at
    /// each partition its target spans, in partition order. An error at a partition ends
    /// the subscription with that error.
    pub(super) async fn subscribe(
        self: &Rc<Self>,
        out: &Rc<ConnOut>,
        conn: u64,
        request_id: u64,
        sub: SubscribeRequest,
    ) {
        let parts = match self.check_subscription(out, request_id, &sub) {
            Ok(parts) => parts,
            Err(refusal) => {
                out.send(request_id, &refusal);
                return;
            }
        };
        out.subs.borrow_mut().insert(request_id, parts.clone());
        out.send(request_id, &Response::Subscribed);
        for (i, p) in parts.into_iter().enumerate() {
            let from = sub.positions.get(i).copied().unwrap_or(sub.from);
            match self
                .subscribe_partition(out, conn, request_id, &sub, p, from)
                .await
            {
                Ok(true) => {}
                Ok(false) => return, // the subscriber went away
                Err(e) => {
                    if out.subs.borrow_mut().remove(&request_id).is_some() {
                        out.send(request_id, &error_response(e));
                    }
                    return;
                }
            }
        }
    }

    /// The partitions a SUBSCRIBE spans, or the reply that refuses it: too many
    /// subscriptions on the connection, a target that does not exist, a checkpoint that does
    /// not hold one position per partition, or a request id already in use.
    fn check_subscription(
        &self,
        out: &ConnOut,
        request_id: u64,
        sub: &SubscribeRequest,
    ) -> Result<Vec<u32>, Response> {
        let cfg = &self.shared.config;
        if out.subs.borrow().len() >= cfg.max_subscriptions_per_connection as usize {
            return Err(Response::error(
                code::OVERLOADED,
                format!(
                    "too many subscriptions on this connection (max {})",
                    cfg.max_subscriptions_per_connection
                ),
            ));
        }
        let parts = self.target_partitions(sub.target, &sub.name)?;
        let positions = &sub.positions;
        if !positions.is_empty() && positions.len() != parts.len() {
            return Err(Response::error(
                code::INVALID_ARGUMENT,
                format!(
                    "the checkpoint holds {} positions but the subscription spans {} \
                     partitions (one position per partition, in partition order)",
                    positions.len(),
                    parts.len()
                ),
            ));
        }
        if out.subs.borrow().contains_key(&request_id) {
            return Err(Response::error(
                code::INVALID_ARGUMENT,
                "request id already used by a subscription",
            ));
        }
        Ok(parts)
    }

    /// The partitions a subscription to `target` `name` spans, or the reply that refuses a
    /// target that does not exist.
    fn target_partitions(&self, target: SubscribeTarget, name: &str) -> Result<Vec<u32>, Response> {
        let parts = match target {
            SubscribeTarget::Stream => vec![partition_of(name, self.shared.partitions)],
            SubscribeTarget::Partition => match name.parse::<u32>() {
                Ok(p) if p < self.shared.partitions => vec![p],
                _ => {
                    return Err(Response::error(
                        code::INVALID_ARGUMENT,
                        format!("{name:?} is not a partition number"),
                    ));
                }
            },
            SubscribeTarget::All => (0..self.shared.partitions).collect(),
            SubscribeTarget::Model if name == "kv" => (0..self.shared.partitions).collect(),
            // A user's model runs on partition 0's shard.
            SubscribeTarget::Model if self.shared.served_model.as_deref() == Some(name) => {
                vec![0]
            }
            SubscribeTarget::Model => {
                return Err(Response::error(
                    code::INVALID_ARGUMENT,
                    format!("no model named {name:?} is served"),
                ));
            }
        };
        Ok(parts)
    }

    /// Starts subscription `request_id` at partition `p`, from `from`. Returns false if the
    /// subscriber went away during the catch-up.
    async fn subscribe_partition(
        self: &Rc<Self>,
        out: &Rc<ConnOut>,
        conn: u64,
        request_id: u64,
        sub: &SubscribeRequest,
        p: u32,
        mut from: u64,
    ) -> Result<bool, ApiError> {
        if matches!(
            sub.target,
            SubscribeTarget::Partition | SubscribeTarget::All
        ) {
            // The catch-up runs here, through the partition's view (and its owner only for
            // what the ring no longer holds); the owner then registers the live sink from
            // where it ended.
            let sink = SubSink {
                shard: Rc::downgrade(self),
                origin: self.id,
                conn,
                sub: request_id,
                stream: None,
                type_prefix: sub.type_prefix.clone(),
            };
            match self.catch_up_partition(p, out, &sink, from).await? {
                Some(reached) => from = reached,
                None => return Ok(false),
            }
        }
        let op = PartOp::Subscribe {
            origin: self.id,
            conn,
            sub: request_id,
            target: sub.target,
            stream: sub.name.clone(),
            from,
            type_prefix: sub.type_prefix.clone(),
        };
        match self.call(p, op).await {
            OpResult::Err(e) => Err(e),
            _ => Ok(true),
        }
    }
}
