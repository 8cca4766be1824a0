//! Byte-level encoding and decoding of requests and replies.
//!
//! `Cursor` reads primitives from a body and fails with `Malformed` on any short read; every
//! decoder ends by checking that the body was consumed exactly. Counts read from the wire are
//! never trusted for allocation: vectors grow as elements actually decode.

use super::{
    opcode, AppendResult, Bucket, Direction, Event, Group, GroupOrder, GroupedAggregate, Groups,
    NameMatch, ProtocolError, RecordedEvent, Request, Response, StreamInfo, SubscribeTarget,
    TrimBy, HEADER_AFTER_LENGTH,
};
use super::{
    ClaimAt, ConsumerGroupInfo, ConsumerInfo, ConsumerOp, EntryEvent, GroupClaim, GroupCommand,
    GroupEntry, GroupStart, PendingEntry, PendingRange, PendingReply, StreamId,
};

/// The smallest event on the wire: id 16, type length 2, timestamp 8, value 8, data length 4,
/// metadata length 4.
const EVENT_BYTES_MIN: usize = 16 + 2 + 8 + 8 + 4 + 4;

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn short(what: &str) -> ProtocolError {
    ProtocolError::Malformed(format!("body too short for {what}"))
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        let end = self.at.checked_add(n).ok_or_else(|| short(what))?;
        let slice = self.bytes.get(self.at..end).ok_or_else(|| short(what))?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }
    fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    fn i64(&mut self, what: &str) -> Result<i64, ProtocolError> {
        Ok(self.u64(what)? as i64)
    }
    fn f64(&mut self, what: &str) -> Result<f64, ProtocolError> {
        Ok(f64::from_bits(self.u64(what)?))
    }
    fn str(&mut self, what: &str) -> Result<String, ProtocolError> {
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ProtocolError::Malformed(format!("{what} is not valid UTF-8")))
    }
    fn blob(&mut self, what: &str) -> Result<Vec<u8>, ProtocolError> {
        let len = self.u32(what)? as usize;
        Ok(self.take(len, what)?.to_vec())
    }
    fn id(&mut self) -> Result<[u8; 16], ProtocolError> {
        Ok(self.take(16, "event id")?.try_into().expect("16"))
    }
    fn event(&mut self) -> Result<Event, ProtocolError> {
        Ok(Event {
            id: self.id()?,
            event_type: self.str("event type")?,
            timestamp_ns: self.u64("timestamp")?,
            value: self.f64("value")?,
            data: self.blob("data")?,
            metadata: self.blob("metadata")?,
        })
    }
    /// A recorded event; with its stream's name first when `named` (0x96).
    fn recorded(&mut self, named: bool) -> Result<RecordedEvent, ProtocolError> {
        Ok(RecordedEvent {
            stream: if named {
                self.str("stream")?
            } else {
                String::new()
            },
            stream_version: self.u64("stream version")?,
            lsn: self.u64("lsn")?,
            partition: self.u32("partition")?,
            event: self.event()?,
        })
    }
    fn recorded_list(&mut self, named: bool) -> Result<Vec<RecordedEvent>, ProtocolError> {
        let n = self.u32("event count")?;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.recorded(named)?);
        }
        Ok(out)
    }
    /// An APPEND's events: their count, then each.
    fn events(&mut self) -> Result<Vec<Event>, ProtocolError> {
        let n = self.u32("event count")?;
        // Sized once, by the count or by how many events the bytes left can hold at least,
        // whichever is smaller (a count alone cannot make it allocate).
        let fit = (self.bytes.len() - self.at) / EVENT_BYTES_MIN;
        let mut events = Vec::with_capacity((n as usize).min(fit));
        for _ in 0..n {
            events.push(self.event()?);
        }
        Ok(events)
    }
    /// A READ's direction: 0 forward, 1 backward.
    fn direction(&mut self) -> Result<Direction, ProtocolError> {
        match self.u8("direction")? {
            0 => Ok(Direction::Forward),
            1 => Ok(Direction::Backward),
            d => Err(ProtocolError::Malformed(format!(
                "direction {d} is not 0 or 1"
            ))),
        }
    }
    /// A SUBSCRIBE's target: 0 stream, 1 partition, 2 all, 3 model.
    fn subscribe_target(&mut self) -> Result<SubscribeTarget, ProtocolError> {
        match self.u8("target")? {
            0 => Ok(SubscribeTarget::Stream),
            1 => Ok(SubscribeTarget::Partition),
            2 => Ok(SubscribeTarget::All),
            3 => Ok(SubscribeTarget::Model),
            t => Err(ProtocolError::Malformed(format!("subscribe target {t}"))),
        }
    }
    /// A SUBSCRIBE's checkpoint (v2): a count and that many positions; none at the end of
    /// a v1 body.
    fn positions(&mut self) -> Result<Vec<u64>, ProtocolError> {
        if self.at_end() {
            return Ok(Vec::new());
        }
        let n = self.u32("position count")?;
        let mut positions = Vec::new();
        for _ in 0..n {
            positions.push(self.u64("position")?);
        }
        Ok(positions)
    }
    /// HELLO's reply: a count and that many partition addresses.
    fn partition_addresses(&mut self) -> Result<Vec<String>, ProtocolError> {
        let n = self.u32("partition count")?;
        let mut partition_addresses = Vec::new();
        for _ in 0..n {
            partition_addresses.push(self.str("partition address")?);
        }
        Ok(partition_addresses)
    }
    /// One bucket: start, count, sum, min, max.
    fn bucket(&mut self) -> Result<Bucket, ProtocolError> {
        Ok(Bucket {
            start_ns: self.u64("bucket start")?,
            count: self.u64("count")?,
            sum: self.f64("sum")?,
            min: self.f64("min")?,
            max: self.f64("max")?,
        })
    }
    /// AGGREGATE's reply: a count and that many buckets.
    fn buckets(&mut self) -> Result<Vec<Bucket>, ProtocolError> {
        let n = self.u32("bucket count")?;
        let mut buckets = Vec::new();
        for _ in 0..n {
            buckets.push(self.bucket()?);
        }
        Ok(buckets)
    }
    fn name_match(&mut self, what: &str) -> Result<NameMatch, ProtocolError> {
        match self.u8(what)? {
            0 => Ok(NameMatch::Exact),
            1 => Ok(NameMatch::Prefix),
            x => Err(ProtocolError::Malformed(format!(
                "{what} {x}: 0 (exact) or 1 (prefix)"
            ))),
        }
    }
    /// TRIM's rule: `u8 by` (0 keep_last, 1 before_version, 2 older_than_ns), then its `u64`.
    fn trim_by(&mut self) -> Result<TrimBy, ProtocolError> {
        let by = self.u8("trim by")?;
        let value = self.u64("trim value")?;
        match by {
            0 => Ok(TrimBy::KeepLast(value)),
            1 => Ok(TrimBy::BeforeVersion(value)),
            2 => Ok(TrimBy::OlderThanNs(value)),
            x => Err(ProtocolError::Malformed(format!(
                "trim by {x}: 0 (keep_last), 1 (before_version) or 2 (older_than_ns)"
            ))),
        }
    }
    /// A group or consumer name: `u16 length + bytes` (any bytes).
    fn name(&mut self, what: &str) -> Result<Vec<u8>, ProtocolError> {
        let len = self.u16(what)? as usize;
        Ok(self.take(len, what)?.to_vec())
    }
    /// A stream ID: `u64 ms`, `u64 seq`.
    fn stream_id(&mut self, what: &str) -> Result<StreamId, ProtocolError> {
        Ok(StreamId::new(self.u64(what)?, self.u64(what)?))
    }
    /// A flag byte: 0 or 1.
    fn flag(&mut self, what: &str) -> Result<bool, ProtocolError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(ProtocolError::Malformed(format!("{what} {x}: 0 or 1"))),
        }
    }
    /// An optional `u64`: `u8 has` (0, 1), then the `u64` (read either way).
    fn opt_u64(&mut self, what: &str) -> Result<Option<u64>, ProtocolError> {
        let has = self.flag(what)?;
        let v = self.u64(what)?;
        Ok(has.then_some(v))
    }
    /// An optional ID: `u8 has` (0, 1), then the ID (read either way).
    fn opt_id(&mut self, what: &str) -> Result<Option<StreamId>, ProtocolError> {
        let has = self.flag(what)?;
        let v = self.stream_id(what)?;
        Ok(has.then_some(v))
    }
    /// A count and that many IDs.
    fn ids(&mut self, what: &str) -> Result<Vec<StreamId>, ProtocolError> {
        let n = self.u32(what)?;
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(self.stream_id(what)?);
        }
        Ok(ids)
    }
    /// A group's start: `u8 kind` (0 the ID, 1 the stream's last), then the ID.
    fn group_start(&mut self) -> Result<GroupStart, ProtocolError> {
        let kind = self.u8("start kind")?;
        let id = self.stream_id("start id")?;
        match kind {
            0 => Ok(GroupStart::Id(id)),
            1 => Ok(GroupStart::Last),
            x => Err(ProtocolError::Malformed(format!(
                "start kind {x}: 0 (the id) or 1 (the stream's last)"
            ))),
        }
    }
    /// A group command's body after the stream, for `op`.
    fn group_command(&mut self, op: u8) -> Result<GroupCommand, ProtocolError> {
        Ok(match op {
            opcode::GROUP_CREATE => GroupCommand::Create {
                group: self.name("group")?,
                start: self.group_start()?,
                mkstream: self.flag("mkstream")?,
                entries_read: self.opt_u64("entries read")?,
            },
            opcode::GROUP_DESTROY => GroupCommand::Destroy {
                group: self.name("group")?,
            },
            opcode::GROUP_SETID => GroupCommand::SetId {
                group: self.name("group")?,
                start: self.group_start()?,
                entries_read: self.opt_u64("entries read")?,
            },
            opcode::GROUP_CONSUMER => GroupCommand::Consumer {
                group: self.name("group")?,
                consumer: self.name("consumer")?,
                op: match self.u8("consumer op")? {
                    0 => ConsumerOp::Create,
                    1 => ConsumerOp::Delete,
                    x => {
                        return Err(ProtocolError::Malformed(format!(
                            "consumer op {x}: 0 (create) or 1 (delete)"
                        )))
                    }
                },
            },
            opcode::GROUP_READ => GroupCommand::Read {
                group: self.name("group")?,
                consumer: self.name("consumer")?,
                after: self.opt_id("after")?,
                count: self.u32("count")?,
                noack: self.flag("noack")?,
                block_ms: self.u32("block_ms")?,
            },
            opcode::GROUP_ACK => GroupCommand::Ack {
                group: self.name("group")?,
                ids: self.ids("ids")?,
            },
            opcode::GROUP_PENDING => {
                let group = self.name("group")?;
                let range = if self.flag("extended")? {
                    Some(PendingRange {
                        min_idle_ms: self.u64("min idle")?,
                        start: self.stream_id("start")?,
                        end: self.stream_id("end")?,
                        count: self.u32("count")?,
                        consumer: {
                            let has = self.flag("has consumer")?;
                            let name = self.name("consumer")?;
                            has.then_some(name)
                        },
                    })
                } else {
                    None
                };
                GroupCommand::Pending { group, range }
            }
            opcode::GROUP_CLAIM => GroupCommand::Claim(Box::new(GroupClaim {
                group: self.name("group")?,
                consumer: self.name("consumer")?,
                min_idle_ms: self.u64("min idle")?,
                ids: self.ids("ids")?,
                at: {
                    let kind = self.u8("claim time kind")?;
                    let v = self.u64("claim time")?;
                    match kind {
                        0 => ClaimAt::Now,
                        1 => ClaimAt::IdleMs(v),
                        2 => ClaimAt::UnixMs(v),
                        x => {
                            return Err(ProtocolError::Malformed(format!(
                                "claim time kind {x}: 0 (now), 1 (idle ms) or 2 (unix ms)"
                            )))
                        }
                    }
                },
                retry_count: self.opt_u64("retry count")?,
                force: self.flag("force")?,
                just_id: self.flag("justid")?,
                last_id: self.opt_id("last id")?,
            })),
            opcode::GROUP_AUTOCLAIM => GroupCommand::AutoClaim {
                group: self.name("group")?,
                consumer: self.name("consumer")?,
                min_idle_ms: self.u64("min idle")?,
                start: self.stream_id("start")?,
                count: self.u32("count")?,
                just_id: self.flag("justid")?,
            },
            opcode::GROUP_INFO => GroupCommand::Info,
            other => return Err(ProtocolError::UnknownOpcode(other)),
        })
    }
    /// A count and that many group entries: each `id`, `u8 kind` (0 event, 1 deleted, 2 ID
    /// only), and with kind 0 the recorded event.
    fn group_entries(&mut self) -> Result<Vec<GroupEntry>, ProtocolError> {
        let n = self.u32("entry count")?;
        let mut out = Vec::new();
        for _ in 0..n {
            let id = self.stream_id("entry id")?;
            let event = match self.u8("entry kind")? {
                0 => EntryEvent::Event(self.recorded(false)?),
                1 => EntryEvent::Deleted,
                2 => EntryEvent::IdOnly,
                x => {
                    return Err(ProtocolError::Malformed(format!(
                        "entry kind {x}: 0 (event), 1 (deleted) or 2 (id only)"
                    )))
                }
            };
            out.push(GroupEntry { id, event });
        }
        Ok(out)
    }
    /// GROUP_PENDING_OK's body.
    fn pending_reply(&mut self) -> Result<PendingReply, ProtocolError> {
        match self.u8("pending form")? {
            0 => {
                let count = self.u64("pending count")?;
                let has = self.flag("has range")?;
                let first = self.stream_id("lowest id")?;
                let last = self.stream_id("highest id")?;
                let n = self.u32("consumer count")?;
                let mut consumers = Vec::new();
                for _ in 0..n {
                    consumers.push((self.name("consumer")?, self.u64("consumer pending")?));
                }
                Ok(PendingReply::Summary {
                    count,
                    range: has.then_some((first, last)),
                    consumers,
                })
            }
            1 => {
                let n = self.u32("entry count")?;
                let mut out = Vec::new();
                for _ in 0..n {
                    out.push(PendingEntry {
                        id: self.stream_id("entry id")?,
                        consumer: self.name("consumer")?,
                        idle_ms: self.u64("idle")?,
                        deliveries: self.u64("deliveries")?,
                    });
                }
                Ok(PendingReply::Entries(out))
            }
            x => Err(ProtocolError::Malformed(format!(
                "pending form {x}: 0 (summary) or 1 (entries)"
            ))),
        }
    }
    /// GROUP_INFO_OK's body.
    fn group_infos(&mut self) -> Result<Vec<ConsumerGroupInfo>, ProtocolError> {
        let n = self.u32("group count")?;
        let mut out = Vec::new();
        for _ in 0..n {
            let name = self.name("group")?;
            let last_delivered = self.stream_id("last delivered")?;
            let entries_read = self.opt_u64("entries read")?;
            let lag = self.opt_u64("lag")?;
            let pending = self.u64("pending")?;
            let nc = self.u32("consumer count")?;
            let mut consumers = Vec::new();
            for _ in 0..nc {
                consumers.push(ConsumerInfo {
                    name: self.name("consumer")?,
                    pending: self.u64("consumer pending")?,
                    seen_ms: self.u64("seen")?,
                    active_ms: self.opt_u64("active")?,
                });
            }
            out.push(ConsumerGroupInfo {
                name,
                last_delivered,
                entries_read,
                lag,
                pending,
                consumers,
            });
        }
        Ok(out)
    }
    /// AGGREGATE_GROUPS' body (docs/PROTOCOL.md).
    fn grouped_aggregate(&mut self) -> Result<GroupedAggregate, ProtocolError> {
        Ok(GroupedAggregate {
            from_ns: self.u64("from_ns")?,
            to_ns: self.u64("to_ns")?,
            bucket_ns: self.u64("bucket_ns")?,
            stream_match: self.name_match("stream match")?,
            stream: self.str("stream")?,
            type_match: self.name_match("type match")?,
            event_type: self.str("event type")?,
            field: self.str("field")?,
            where_field: self.str("where field")?,
            where_value: self.str("where value")?,
            group_by: self.str("group by")?,
            order: match self.u8("order")? {
                0 => GroupOrder::Count,
                1 => GroupOrder::Sum,
                2 => GroupOrder::Average,
                x => {
                    return Err(ProtocolError::Malformed(format!(
                        "order {x}: 0 (count), 1 (sum) or 2 (average)"
                    )))
                }
            },
            top_k: self.u32("top k")?,
            max_groups: self.u32("max groups")?,
        })
    }
    /// GROUPS' body: the totals, then each group with its buckets (each bucket carries its
    /// average too, for clients that want it computed; it is `sum / count` and is not kept).
    fn groups(&mut self) -> Result<Groups, ProtocolError> {
        let matched = self.u64("matched")?;
        let ungrouped = self.u64("ungrouped")?;
        let groups_total = self.u32("groups total")?;
        let n = self.u32("group count")?;
        let mut groups = Vec::new();
        for _ in 0..n {
            let key = self.str("group key")?;
            let missing = self.u64("missing")?;
            let nb = self.u32("bucket count")?;
            let mut buckets = Vec::new();
            for _ in 0..nb {
                buckets.push(self.bucket()?);
                self.f64("average")?;
            }
            groups.push(Group {
                key,
                missing,
                buckets,
            });
        }
        Ok(Groups {
            matched,
            ungrouped,
            groups_total,
            groups,
        })
    }
    /// An error reply: its code and message, and the stream's current version after a
    /// wrong expected version.
    fn error_reply(&mut self) -> Result<Response, ProtocolError> {
        let code = self.u16("error code")?;
        let message = self.str("error message")?;
        let current_version = if code == super::code::WRONG_EXPECTED_VERSION {
            Some(self.i64("current version")?)
        } else {
            None
        };
        Ok(Response::Error {
            code,
            message,
            current_version,
        })
    }
    fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }
    fn finish<T>(self, value: T) -> Result<T, ProtocolError> {
        if self.at != self.bytes.len() {
            return Err(ProtocolError::Malformed(format!(
                "{} unexpected bytes after the body",
                self.bytes.len() - self.at
            )));
        }
        Ok(value)
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    /// Strings longer than 65535 bytes are cut at a character boundary (callers validate
    /// user input before encoding; this keeps the encoder total).
    fn str(&mut self, s: &str) {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.out.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn blob(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
    }
    fn event(&mut self, e: &Event) {
        self.out.extend_from_slice(&e.id);
        self.str(&e.event_type);
        self.u64(e.timestamp_ns);
        self.f64(e.value);
        self.blob(&e.data);
        self.blob(&e.metadata);
    }
    /// A name: `u16 length + bytes`; longer than 65535 bytes is cut (the server refuses
    /// names that long anyway).
    fn name(&mut self, b: &[u8]) {
        let n = b.len().min(u16::MAX as usize);
        self.u16(n as u16);
        self.out.extend_from_slice(&b[..n]);
    }
    fn stream_id(&mut self, id: StreamId) {
        self.u64(id.ms);
        self.u64(id.seq);
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        self.u8(u8::from(v.is_some()));
        self.u64(v.unwrap_or(0));
    }
    fn opt_id(&mut self, v: Option<StreamId>) {
        self.u8(u8::from(v.is_some()));
        self.stream_id(v.unwrap_or(StreamId::ZERO));
    }
    fn ids(&mut self, ids: &[StreamId]) {
        self.u32(ids.len() as u32);
        for id in ids {
            self.stream_id(*id);
        }
    }
    fn group_start(&mut self, s: GroupStart) {
        match s {
            GroupStart::Id(id) => {
                self.u8(0);
                self.stream_id(id);
            }
            GroupStart::Last => {
                self.u8(1);
                self.stream_id(StreamId::ZERO);
            }
        }
    }
    fn group_command(&mut self, c: &GroupCommand) {
        match c {
            GroupCommand::Create {
                group,
                start,
                mkstream,
                entries_read,
            } => {
                self.name(group);
                self.group_start(*start);
                self.u8(u8::from(*mkstream));
                self.opt_u64(*entries_read);
            }
            GroupCommand::Destroy { group } => self.name(group),
            GroupCommand::SetId {
                group,
                start,
                entries_read,
            } => {
                self.name(group);
                self.group_start(*start);
                self.opt_u64(*entries_read);
            }
            GroupCommand::Consumer {
                group,
                consumer,
                op,
            } => {
                self.name(group);
                self.name(consumer);
                self.u8(*op as u8);
            }
            GroupCommand::Read {
                group,
                consumer,
                after,
                count,
                noack,
                block_ms,
            } => {
                self.name(group);
                self.name(consumer);
                self.opt_id(*after);
                self.u32(*count);
                self.u8(u8::from(*noack));
                self.u32(*block_ms);
            }
            GroupCommand::Ack { group, ids } => {
                self.name(group);
                self.ids(ids);
            }
            GroupCommand::Pending { group, range } => {
                self.name(group);
                self.u8(u8::from(range.is_some()));
                if let Some(r) = range {
                    self.u64(r.min_idle_ms);
                    self.stream_id(r.start);
                    self.stream_id(r.end);
                    self.u32(r.count);
                    self.u8(u8::from(r.consumer.is_some()));
                    self.name(r.consumer.as_deref().unwrap_or_default());
                }
            }
            GroupCommand::Claim(c) => {
                self.name(&c.group);
                self.name(&c.consumer);
                self.u64(c.min_idle_ms);
                self.ids(&c.ids);
                let (kind, v) = match c.at {
                    ClaimAt::Now => (0, 0),
                    ClaimAt::IdleMs(ms) => (1, ms),
                    ClaimAt::UnixMs(ms) => (2, ms),
                };
                self.u8(kind);
                self.u64(v);
                self.opt_u64(c.retry_count);
                self.u8(u8::from(c.force));
                self.u8(u8::from(c.just_id));
                self.opt_id(c.last_id);
            }
            GroupCommand::AutoClaim {
                group,
                consumer,
                min_idle_ms,
                start,
                count,
                just_id,
            } => {
                self.name(group);
                self.name(consumer);
                self.u64(*min_idle_ms);
                self.stream_id(*start);
                self.u32(*count);
                self.u8(u8::from(*just_id));
            }
            GroupCommand::Info => {}
        }
    }
    fn group_entries(&mut self, entries: &[GroupEntry]) {
        self.u32(entries.len() as u32);
        for e in entries {
            self.stream_id(e.id);
            match &e.event {
                EntryEvent::Event(r) => {
                    self.u8(0);
                    self.recorded_list_item(r);
                }
                EntryEvent::Deleted => self.u8(1),
                EntryEvent::IdOnly => self.u8(2),
            }
        }
    }
    fn recorded_list_item(&mut self, r: &RecordedEvent) {
        self.u64(r.stream_version);
        self.u64(r.lsn);
        self.u32(r.partition);
        self.event(&r.event);
    }
    fn recorded_list(&mut self, events: &[RecordedEvent], named: bool) {
        self.u32(events.len() as u32);
        for r in events {
            if named {
                self.str(&r.stream);
            }
            self.u64(r.stream_version);
            self.u64(r.lsn);
            self.u32(r.partition);
            self.event(&r.event);
        }
    }
}

/// Appends a whole frame (header and body) to `out`.
fn frame(out: &mut Vec<u8>, op: u8, flags: u8, request_id: u64, body: impl FnOnce(&mut Writer)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(op);
    out.push(flags);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    body(&mut Writer { out });
    let length = (out.len() - start - 4) as u32;
    debug_assert!(length >= HEADER_AFTER_LENGTH);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
}

/// Appends the frame for `req` to `out`.
pub fn encode_request(out: &mut Vec<u8>, request_id: u64, req: &Request) {
    frame(out, req.opcode(), 0, request_id, |w| match req {
        Request::Hello {
            protocol_version,
            client_name,
            auth_token,
        } => {
            w.u16(*protocol_version);
            w.str(client_name);
            w.str(auth_token);
        }
        Request::Ping | Request::Stats => {}
        Request::Append {
            stream,
            expected_version,
            events,
        } => {
            w.str(stream);
            w.u64(*expected_version as u64);
            w.u32(events.len() as u32);
            for e in events {
                w.event(e);
            }
        }
        Request::Read {
            stream,
            from_version,
            max_count,
            direction,
        } => {
            w.str(stream);
            w.u64(*from_version);
            w.u32(*max_count);
            w.u8(*direction as u8);
        }
        Request::Subscribe {
            target,
            name,
            from,
            type_prefix,
            positions,
        } => {
            w.u8(*target as u8);
            w.str(name);
            w.u64(*from);
            w.str(type_prefix);
            // The checkpoint is v2's optional trailing field: absent when empty, so a v1
            // SUBSCRIBE is byte for byte what it was.
            if !positions.is_empty() {
                w.u32(positions.len() as u32);
                for p in positions {
                    w.u64(*p);
                }
            }
        }
        Request::Unsubscribe { subscription_id } => w.u64(*subscription_id),
        Request::AggregateGroups(q) => {
            w.u64(q.from_ns);
            w.u64(q.to_ns);
            w.u64(q.bucket_ns);
            w.u8(q.stream_match as u8);
            w.str(&q.stream);
            w.u8(q.type_match as u8);
            w.str(&q.event_type);
            w.str(&q.field);
            w.str(&q.where_field);
            w.str(&q.where_value);
            w.str(&q.group_by);
            w.u8(q.order as u8);
            w.u32(q.top_k);
            w.u32(q.max_groups);
        }
        Request::Aggregate {
            stream,
            type_prefix,
            from_ns,
            to_ns,
            bucket_ns,
        } => {
            w.str(stream);
            w.str(type_prefix);
            w.u64(*from_ns);
            w.u64(*to_ns);
            w.u64(*bucket_ns);
        }
        Request::StreamInfo { stream } | Request::DeleteStream { stream } => w.str(stream),
        Request::Trim { stream, by } => {
            w.str(stream);
            let (code, value) = match *by {
                TrimBy::KeepLast(n) => (0, n),
                TrimBy::BeforeVersion(v) => (1, v),
                TrimBy::OlderThanNs(ns) => (2, ns),
            };
            w.u8(code);
            w.u64(value);
        }
        Request::Group { stream, command } => {
            w.str(stream);
            w.group_command(command);
        }
        Request::Execute { model, command } => {
            w.str(model);
            w.blob(command);
        }
        Request::Query { model, query } => {
            w.str(model);
            w.blob(query);
        }
    });
}

/// Decodes a request body for `op`. One arm per opcode: the table of request layouts reads
/// best in one place; what takes more than a field or two is a `Cursor` method.
pub fn decode_request(op: u8, body: &[u8]) -> Result<Request, ProtocolError> {
    let mut c = Cursor::new(body);
    let req = match op {
        opcode::HELLO => Request::Hello {
            protocol_version: c.u16("protocol version")?,
            client_name: c.str("client name")?,
            auth_token: c.str("auth token")?,
        },
        opcode::PING => Request::Ping,
        opcode::STATS => Request::Stats,
        opcode::APPEND => Request::Append {
            stream: c.str("stream")?,
            expected_version: c.i64("expected version")?,
            events: c.events()?,
        },
        opcode::READ => Request::Read {
            stream: c.str("stream")?,
            from_version: c.u64("from version")?,
            max_count: c.u32("max count")?,
            direction: c.direction()?,
        },
        opcode::SUBSCRIBE => Request::Subscribe {
            target: c.subscribe_target()?,
            name: c.str("name")?,
            from: c.u64("from")?,
            type_prefix: c.str("type prefix")?,
            positions: c.positions()?,
        },
        opcode::UNSUBSCRIBE => Request::Unsubscribe {
            subscription_id: c.u64("subscription id")?,
        },
        opcode::AGGREGATE => Request::Aggregate {
            stream: c.str("stream")?,
            type_prefix: c.str("type prefix")?,
            from_ns: c.u64("from_ns")?,
            to_ns: c.u64("to_ns")?,
            bucket_ns: c.u64("bucket_ns")?,
        },
        opcode::AGGREGATE_GROUPS => Request::AggregateGroups(Box::new(c.grouped_aggregate()?)),
        opcode::STREAM_INFO => Request::StreamInfo {
            stream: c.str("stream")?,
        },
        opcode::DELETE_STREAM => Request::DeleteStream {
            stream: c.str("stream")?,
        },
        opcode::TRIM => Request::Trim {
            stream: c.str("stream")?,
            by: c.trim_by()?,
        },
        opcode::GROUP_CREATE..=opcode::GROUP_INFO => Request::Group {
            stream: c.str("stream")?,
            command: c.group_command(op)?,
        },
        opcode::EXECUTE => Request::Execute {
            model: c.str("model")?,
            command: c.blob("command")?,
        },
        opcode::QUERY => Request::Query {
            model: c.str("model")?,
            query: c.blob("query")?,
        },
        other => return Err(ProtocolError::UnknownOpcode(other)),
    };
    c.finish(req)
}

/// Appends the frame for `resp` to `out`.
pub fn encode_response(out: &mut Vec<u8>, request_id: u64, flags: u8, resp: &Response) {
    frame(out, resp.opcode(), flags, request_id, |w| match resp {
        Response::Hello {
            protocol_version,
            server_version,
            partition_addresses,
        } => {
            w.u16(*protocol_version);
            w.str(server_version);
            w.u32(partition_addresses.len() as u32);
            for a in partition_addresses {
                w.str(a);
            }
        }
        Response::Pong | Response::Subscribed => {}
        Response::Appended(a) => {
            w.u64(a.first_version);
            w.u64(a.last_version);
            w.u32(a.partition);
            w.u64(a.lsn);
        }
        Response::Events {
            events,
            end_of_stream,
        } => {
            w.recorded_list(events, false);
            w.u8(u8::from(*end_of_stream));
        }
        Response::Pushed { events } => w.recorded_list(events, true),
        Response::PushedV1 { events } => w.recorded_list(events, false),
        Response::Aggregated { buckets } => {
            w.u32(buckets.len() as u32);
            for b in buckets {
                w.u64(b.start_ns);
                w.u64(b.count);
                w.f64(b.sum);
                w.f64(b.min);
                w.f64(b.max);
            }
        }
        Response::Groups(g) => {
            w.u64(g.matched);
            w.u64(g.ungrouped);
            w.u32(g.groups_total);
            w.u32(g.groups.len() as u32);
            for group in &g.groups {
                w.str(&group.key);
                w.u64(group.missing);
                w.u32(group.buckets.len() as u32);
                for b in &group.buckets {
                    w.u64(b.start_ns);
                    w.u64(b.count);
                    w.f64(b.sum);
                    w.f64(b.min);
                    w.f64(b.max);
                    w.f64(b.average());
                }
            }
        }
        Response::StreamInfo(i) => {
            w.u64(i.next_version);
            w.u64(i.first_lsn);
            w.u64(i.last_lsn);
        }
        Response::Deleted { deleted } => w.u64(*deleted),
        Response::GroupOk => {}
        Response::GroupCount(n) => w.u64(*n),
        Response::GroupEntries(entries) => w.group_entries(entries),
        Response::GroupPending(PendingReply::Summary {
            count,
            range,
            consumers,
        }) => {
            w.u8(0);
            w.u64(*count);
            w.u8(u8::from(range.is_some()));
            let (first, last) = range.unwrap_or((StreamId::ZERO, StreamId::ZERO));
            w.stream_id(first);
            w.stream_id(last);
            w.u32(consumers.len() as u32);
            for (name, n) in consumers {
                w.name(name);
                w.u64(*n);
            }
        }
        Response::GroupPending(PendingReply::Entries(list)) => {
            w.u8(1);
            w.u32(list.len() as u32);
            for e in list {
                w.stream_id(e.id);
                w.name(&e.consumer);
                w.u64(e.idle_ms);
                w.u64(e.deliveries);
            }
        }
        Response::GroupAutoClaimed {
            next,
            entries,
            deleted,
        } => {
            w.stream_id(*next);
            w.group_entries(entries);
            w.ids(deleted);
        }
        Response::GroupInfo(groups) => {
            w.u32(groups.len() as u32);
            for g in groups {
                w.name(&g.name);
                w.stream_id(g.last_delivered);
                w.opt_u64(g.entries_read);
                w.opt_u64(g.lag);
                w.u64(g.pending);
                w.u32(g.consumers.len() as u32);
                for c in &g.consumers {
                    w.name(&c.name);
                    w.u64(c.pending);
                    w.u64(c.seen_ms);
                    w.opt_u64(c.active_ms);
                }
            }
        }
        Response::Executed { result } | Response::Queried { result } => w.blob(result),
        Response::Stats { json } => w.str(json),
        Response::Error {
            code,
            message,
            current_version,
        } => {
            w.u16(*code);
            w.str(message);
            if let Some(v) = current_version {
                w.u64(*v as u64);
            }
        }
    });
}

/// Appends a push of `events` for subscription `request_id`: 0x96 with each event's stream
/// when `named` (protocol v2), else 0x93 (v1). The same bytes as encoding
/// [`Response::Pushed`] / [`Response::PushedV1`], without building one.
pub fn encode_pushed(out: &mut Vec<u8>, request_id: u64, events: &[RecordedEvent], named: bool) {
    let op = if named {
        opcode::PUSHED_NAMED
    } else {
        opcode::PUSHED
    };
    frame(out, op, 0, request_id, |w| w.recorded_list(events, named));
}

/// Decodes a reply body for `op`. One arm per opcode: the table of reply layouts reads best
/// in one place; what takes more than a field or two is a `Cursor` method.
pub fn decode_response(op: u8, body: &[u8]) -> Result<Response, ProtocolError> {
    let mut c = Cursor::new(body);
    let resp = match op {
        opcode::HELLO_OK => Response::Hello {
            protocol_version: c.u16("protocol version")?,
            server_version: c.str("server version")?,
            partition_addresses: c.partition_addresses()?,
        },
        opcode::PONG => Response::Pong,
        opcode::SUBSCRIBED => Response::Subscribed,
        opcode::APPENDED => Response::Appended(AppendResult {
            first_version: c.u64("first version")?,
            last_version: c.u64("last version")?,
            partition: c.u32("partition")?,
            lsn: c.u64("lsn")?,
        }),
        opcode::EVENTS => Response::Events {
            events: c.recorded_list(false)?,
            end_of_stream: c.u8("end of stream")? != 0,
        },
        opcode::PUSHED => Response::PushedV1 {
            events: c.recorded_list(false)?,
        },
        opcode::PUSHED_NAMED => Response::Pushed {
            events: c.recorded_list(true)?,
        },
        opcode::AGGREGATED => Response::Aggregated {
            buckets: c.buckets()?,
        },
        opcode::GROUPS => Response::Groups(c.groups()?),
        opcode::STREAM_INFO_OK => Response::StreamInfo(StreamInfo {
            next_version: c.u64("next version")?,
            first_lsn: c.u64("first lsn")?,
            last_lsn: c.u64("last lsn")?,
        }),
        opcode::DELETED => Response::Deleted {
            deleted: c.u64("deleted")?,
        },
        opcode::GROUP_OK => Response::GroupOk,
        opcode::GROUP_COUNT => Response::GroupCount(c.u64("count")?),
        opcode::GROUP_ENTRIES => Response::GroupEntries(c.group_entries()?),
        opcode::GROUP_PENDING_OK => Response::GroupPending(c.pending_reply()?),
        opcode::GROUP_AUTOCLAIMED => Response::GroupAutoClaimed {
            next: c.stream_id("next")?,
            entries: c.group_entries()?,
            deleted: c.ids("deleted")?,
        },
        opcode::GROUP_INFO_OK => Response::GroupInfo(c.group_infos()?),
        opcode::EXECUTED => Response::Executed {
            result: c.blob("result")?,
        },
        opcode::QUERIED => Response::Queried {
            result: c.blob("result")?,
        },
        opcode::STATS_OK => Response::Stats {
            json: c.str("stats json")?,
        },
        opcode::ERROR => c.error_reply()?,
        other => return Err(ProtocolError::UnknownOpcode(other)),
    };
    c.finish(resp)
}

#[cfg(test)]
mod tests {
    use super::super::{FrameHeader, FRAME_HEADER_BYTES};
    use super::*;

    fn event(n: u8) -> Event {
        Event {
            id: [n; 16],
            event_type: format!("Type{n}"),
            timestamp_ns: 1_000 + u64::from(n),
            value: f64::from(n) * 1.5,
            data: vec![n; n as usize],
            metadata: b"meta".to_vec(),
        }
    }

    fn split(frame: &[u8]) -> (FrameHeader, &[u8]) {
        let header = FrameHeader::parse(frame[..FRAME_HEADER_BYTES].try_into().unwrap()).unwrap();
        assert_eq!(header.length as usize, frame.len() - 4);
        (header, &frame[FRAME_HEADER_BYTES..])
    }

    /// The AGGREGATE_GROUPS request and GROUPS reply in the fuzz corpus were written byte by
    /// byte from docs/PROTOCOL.md's tables, not by this codec: they decode to what the
    /// tables say.
    #[test]
    fn the_documented_aggregate_groups_bytes_decode() {
        let (h, body) = split(include_bytes!(
            "../../fuzz/corpus/frame_decode/request-18-16"
        ));
        let want = GroupedAggregate {
            bucket_ns: 60_000,
            event_type: "Metric".into(),
            type_match: NameMatch::Prefix,
            field: "data.value".into(),
            where_field: "data.label".into(),
            where_value: "cpu_usage".into(),
            group_by: "data.host".into(),
            order: GroupOrder::Average,
            top_k: 2,
            ..GroupedAggregate::window(1_000, 601_000)
        };
        assert_eq!(
            decode_request(h.opcode, body).unwrap(),
            Request::AggregateGroups(Box::new(want))
        );
        let (h, body) = split(include_bytes!(
            "../../fuzz/corpus/frame_decode/response-14-97"
        ));
        let want = Groups {
            matched: 3,
            ungrouped: 0,
            groups_total: 1,
            groups: vec![Group {
                key: "web-1".into(),
                missing: 1,
                buckets: vec![Bucket {
                    start_ns: 1_000,
                    count: 2,
                    sum: 1.5,
                    min: 0.5,
                    max: 1.0,
                }],
            }],
        };
        assert_eq!(
            decode_response(h.opcode, body).unwrap(),
            Response::Groups(want)
        );
    }

    /// The DELETE_STREAM and TRIM requests and the DELETED reply in the fuzz corpus were
    /// written byte by byte from docs/PROTOCOL.md's tables, not by this codec: they decode to
    /// what the tables say, and a TRIM rule other than 0, 1 or 2 is refused.
    #[test]
    fn the_documented_delete_and_trim_bytes_decode() {
        let cases: [(&[u8], u64, Request); 3] = [
            (
                include_bytes!("../../fuzz/corpus/frame_decode/request-19-17"),
                9,
                Request::DeleteStream {
                    stream: "orders-1".into(),
                },
            ),
            (
                include_bytes!("../../fuzz/corpus/frame_decode/request-20-18"),
                10,
                Request::Trim {
                    stream: "orders-1".into(),
                    by: TrimBy::KeepLast(10),
                },
            ),
            (
                include_bytes!("../../fuzz/corpus/frame_decode/request-21-18"),
                11,
                Request::Trim {
                    stream: "s".into(),
                    by: TrimBy::OlderThanNs(1_733_472_000_000_000_000),
                },
            ),
        ];
        for (bytes, id, want) in cases {
            let (h, body) = split(bytes);
            assert_eq!(h.request_id, id);
            assert_eq!(decode_request(h.opcode, body).unwrap(), want);
            let mut again = Vec::new();
            encode_request(&mut again, id, &want);
            assert_eq!(again, bytes, "the encoder writes the documented bytes");
        }
        let (h, body) = split(include_bytes!(
            "../../fuzz/corpus/frame_decode/response-15-98"
        ));
        assert_eq!(
            decode_response(h.opcode, body).unwrap(),
            Response::Deleted { deleted: 3 }
        );
        let mut body = Vec::new();
        let mut w = Writer { out: &mut body };
        w.str("s");
        w.u8(3);
        w.u64(1);
        assert!(matches!(
            decode_request(opcode::TRIM, &body),
            Err(ProtocolError::Malformed(_))
        ));
    }

    /// Group requests refuse bytes their tables do not allow, and every cut of a valid body
    /// is an error, never a panic.
    #[test]
    fn group_bodies_refuse_bad_bytes_and_every_truncation() {
        let mut frame = Vec::new();
        let req = Request::Group {
            stream: "s".into(),
            command: GroupCommand::Read {
                group: b"g".to_vec(),
                consumer: b"c".to_vec(),
                after: None,
                count: 1,
                noack: false,
                block_ms: 0,
            },
        };
        encode_request(&mut frame, 1, &req);
        let (h, body) = split(&frame);
        for cut in 0..body.len() {
            assert!(
                decode_request(h.opcode, &body[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = body.to_vec();
        let noack = bad.len() - 5; // noack, then u32 block_ms
        bad[noack] = 2;
        assert!(matches!(
            decode_request(h.opcode, &bad),
            Err(ProtocolError::Malformed(_))
        ));
        // An ACK claiming u32::MAX IDs with none there: refused, nothing allocated for them.
        let mut body = Vec::new();
        let mut w = Writer { out: &mut body };
        w.str("s");
        w.name(b"g");
        w.u32(u32::MAX);
        assert!(decode_request(opcode::GROUP_ACK, &body).is_err());
    }

    #[test]
    fn every_request_round_trips() {
        let requests = vec![
            Request::Hello {
                protocol_version: 1,
                client_name: "cli".into(),
                auth_token: "".into(),
            },
            Request::Ping,
            Request::Append {
                stream: "orders-1".into(),
                expected_version: -2,
                events: vec![event(1), event(2)],
            },
            Request::Read {
                stream: "s".into(),
                from_version: 7,
                max_count: 100,
                direction: Direction::Backward,
            },
            Request::Subscribe {
                target: SubscribeTarget::All,
                name: "".into(),
                from: 3,
                type_prefix: "Order".into(),
                positions: Vec::new(),
            },
            Request::Subscribe {
                target: SubscribeTarget::All,
                name: "".into(),
                from: 0,
                type_prefix: "".into(),
                positions: vec![5, u64::MAX, 0],
            },
            Request::Unsubscribe { subscription_id: 9 },
            Request::Aggregate {
                stream: "".into(),
                type_prefix: "T".into(),
                from_ns: 1,
                to_ns: 2,
                bucket_ns: 3,
            },
            Request::StreamInfo { stream: "x".into() },
            Request::AggregateGroups(Box::new(GroupedAggregate {
                bucket_ns: 60,
                stream: "orders-".into(),
                stream_match: NameMatch::Prefix,
                event_type: "Paid".into(),
                field: "data.amount".into(),
                where_field: "data.label".into(),
                where_value: "cpu_usage".into(),
                group_by: "data.host".into(),
                order: GroupOrder::Average,
                top_k: 3,
                max_groups: 10,
                ..GroupedAggregate::window(1, 1000)
            })),
            Request::DeleteStream {
                stream: "orders-1".into(),
            },
            Request::Trim {
                stream: "orders-1".into(),
                by: TrimBy::KeepLast(10),
            },
            Request::Trim {
                stream: "s".into(),
                by: TrimBy::BeforeVersion(u64::MAX),
            },
            Request::Trim {
                stream: "s".into(),
                by: TrimBy::OlderThanNs(1_733_472_000_000_000_000),
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Create {
                    group: b"g".to_vec(),
                    start: GroupStart::Last,
                    mkstream: true,
                    entries_read: Some(3),
                },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::SetId {
                    group: vec![0xff, 0],
                    start: GroupStart::Id(StreamId::new(5, 6)),
                    entries_read: None,
                },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Destroy { group: Vec::new() },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Consumer {
                    group: b"g".to_vec(),
                    consumer: b"c".to_vec(),
                    op: ConsumerOp::Delete,
                },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Read {
                    group: b"g".to_vec(),
                    consumer: b"c".to_vec(),
                    after: Some(StreamId::ZERO),
                    count: 7,
                    noack: true,
                    block_ms: 250,
                },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Ack {
                    group: b"g".to_vec(),
                    ids: vec![StreamId::new(1, 2), StreamId::MAX],
                },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Pending {
                    group: b"g".to_vec(),
                    range: None,
                },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Pending {
                    group: b"g".to_vec(),
                    range: Some(PendingRange {
                        min_idle_ms: 10,
                        start: StreamId::ZERO,
                        end: StreamId::MAX,
                        count: 5,
                        consumer: Some(b"c".to_vec()),
                    }),
                },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Claim(Box::new(GroupClaim {
                    group: b"g".to_vec(),
                    consumer: b"c".to_vec(),
                    min_idle_ms: 1000,
                    ids: vec![StreamId::new(1, 0)],
                    at: ClaimAt::UnixMs(99),
                    retry_count: Some(4),
                    force: true,
                    just_id: false,
                    last_id: Some(StreamId::new(9, 9)),
                })),
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::AutoClaim {
                    group: b"g".to_vec(),
                    consumer: b"c".to_vec(),
                    min_idle_ms: 5,
                    start: StreamId::new(3, 0),
                    count: 100,
                    just_id: true,
                },
            },
            Request::Group {
                stream: "s".into(),
                command: GroupCommand::Info,
            },
            Request::Execute {
                model: "kv".into(),
                command: vec![1, 2],
            },
            Request::Query {
                model: "kv".into(),
                query: vec![3],
            },
            Request::Stats,
        ];
        for (i, req) in requests.iter().enumerate() {
            let mut out = Vec::new();
            encode_request(&mut out, i as u64 + 100, req);
            let (header, body) = split(&out);
            assert_eq!(header.request_id, i as u64 + 100);
            assert_eq!(header.opcode, req.opcode());
            assert_eq!(&decode_request(header.opcode, body).unwrap(), req);
            // Every strict prefix of the body fails cleanly, except where an optional
            // trailing field (a SUBSCRIBE's checkpoint) would begin.
            let optional_from = match req {
                Request::Subscribe { positions, .. } if !positions.is_empty() => {
                    body.len() - 4 - 8 * positions.len()
                }
                _ => usize::MAX,
            };
            for cut in 0..body.len() {
                assert!(
                    decode_request(header.opcode, &body[..cut]).is_err() || cut == optional_from
                );
            }
            // A trailing byte is rejected.
            let mut longer = body.to_vec();
            longer.push(0);
            assert!(decode_request(header.opcode, &longer).is_err());
        }
    }

    #[test]
    fn every_response_round_trips() {
        // Only 0x96 carries the stream's name.
        let recorded = RecordedEvent {
            stream: String::new(),
            stream_version: 4,
            lsn: 77,
            partition: 1,
            event: event(5),
        };
        let named = RecordedEvent {
            stream: "orders-1".into(),
            ..recorded.clone()
        };
        let responses = vec![
            Response::Hello {
                protocol_version: 1,
                server_version: "0.1.0".into(),
                partition_addresses: vec!["127.0.0.1:7070".into(), "127.0.0.1:7071".into()],
            },
            Response::Pong,
            Response::Appended(AppendResult {
                first_version: 0,
                last_version: 1,
                partition: 1,
                lsn: 5,
            }),
            Response::Events {
                events: vec![recorded.clone()],
                end_of_stream: true,
            },
            Response::Subscribed,
            Response::Pushed {
                events: vec![named.clone()],
            },
            Response::PushedV1 {
                events: vec![recorded],
            },
            Response::Aggregated {
                buckets: vec![Bucket {
                    start_ns: 1,
                    count: 2,
                    sum: 3.0,
                    min: 1.0,
                    max: 2.0,
                }],
            },
            Response::Groups(Groups {
                matched: 9,
                ungrouped: 1,
                groups_total: 4,
                groups: vec![Group {
                    key: "web-1".into(),
                    missing: 2,
                    buckets: vec![Bucket {
                        start_ns: 1,
                        count: 6,
                        sum: 3.0,
                        min: 0.0,
                        max: 2.0,
                    }],
                }],
            }),
            Response::StreamInfo(StreamInfo {
                next_version: 3,
                first_lsn: 1,
                last_lsn: 9,
            }),
            Response::Deleted { deleted: 7 },
            Response::GroupOk,
            Response::GroupCount(3),
            Response::GroupEntries(vec![
                GroupEntry {
                    id: StreamId::new(1, 2),
                    event: EntryEvent::Event(RecordedEvent {
                        stream: String::new(),
                        stream_version: 4,
                        lsn: 9,
                        partition: 1,
                        event: event(2),
                    }),
                },
                GroupEntry {
                    id: StreamId::new(1, 3),
                    event: EntryEvent::Deleted,
                },
                GroupEntry {
                    id: StreamId::new(1, 4),
                    event: EntryEvent::IdOnly,
                },
            ]),
            Response::GroupPending(PendingReply::Summary {
                count: 2,
                range: Some((StreamId::new(1, 0), StreamId::new(2, 0))),
                consumers: vec![(b"a".to_vec(), 1), (b"b".to_vec(), 1)],
            }),
            Response::GroupPending(PendingReply::Summary {
                count: 0,
                range: None,
                consumers: vec![],
            }),
            Response::GroupPending(PendingReply::Entries(vec![PendingEntry {
                id: StreamId::new(1, 0),
                consumer: b"a".to_vec(),
                idle_ms: 5,
                deliveries: 2,
            }])),
            Response::GroupAutoClaimed {
                next: StreamId::ZERO,
                entries: vec![],
                deleted: vec![StreamId::new(7, 7)],
            },
            Response::GroupInfo(vec![ConsumerGroupInfo {
                name: b"g".to_vec(),
                last_delivered: StreamId::new(2, 0),
                entries_read: None,
                lag: Some(0),
                pending: 1,
                consumers: vec![ConsumerInfo {
                    name: b"a".to_vec(),
                    pending: 1,
                    seen_ms: 10,
                    active_ms: None,
                }],
            }]),
            Response::Executed { result: vec![1] },
            Response::Queried { result: vec![] },
            Response::Stats { json: "{}".into() },
            Response::Error {
                code: 10,
                message: "wrong expected version".into(),
                current_version: Some(-1),
            },
            Response::error(3, "too large"),
        ];
        for resp in &responses {
            let mut out = Vec::new();
            encode_response(&mut out, 5, 0, resp);
            let (header, body) = split(&out);
            assert_eq!(&decode_response(header.opcode, body).unwrap(), resp);
            if let Response::Pushed { events } | Response::PushedV1 { events } = resp {
                let mut direct = Vec::new();
                encode_pushed(
                    &mut direct,
                    5,
                    events,
                    matches!(resp, Response::Pushed { .. }),
                );
                assert_eq!(
                    direct, out,
                    "encode_pushed writes what encode_response does"
                );
            }
            for cut in 0..body.len() {
                assert!(decode_response(header.opcode, &body[..cut]).is_err());
            }
        }
    }

    #[test]
    fn unknown_opcode_and_bad_enums_are_errors() {
        assert_eq!(
            decode_request(0x7e, &[]),
            Err(ProtocolError::UnknownOpcode(0x7e))
        );
        let mut body = Vec::new();
        Writer { out: &mut body }.str("s");
        body.extend_from_slice(&[0; 12]);
        body.push(2); // direction 2
        assert!(matches!(
            decode_request(opcode::READ, &body),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn huge_declared_counts_do_not_allocate() {
        // APPEND claiming u32::MAX events in a tiny body.
        let mut body = Vec::new();
        let mut w = Writer { out: &mut body };
        w.str("s");
        w.u64(0);
        w.u32(u32::MAX);
        assert!(decode_request(opcode::APPEND, &body).is_err());
    }

    #[test]
    fn header_rejects_short_length_and_nonzero_reserved() {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        h[0] = 11;
        assert!(FrameHeader::parse(&h).is_err());
        h[0] = 12;
        h[6] = 1;
        assert!(FrameHeader::parse(&h).is_err());
        h[6] = 0;
        assert_eq!(FrameHeader::parse(&h).unwrap().body_len(), 0);
    }

    fn unhex(text: &str) -> Vec<u8> {
        text.lines()
            .flat_map(|l| l.split_whitespace().skip(1))
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn worked_examples_in_protocol_md_match_the_encoder() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let blocks: Vec<Vec<u8>> = doc
            .split("```")
            .skip(1)
            .step_by(2)
            .filter(|b| b.trim_start().starts_with("0000"))
            .map(unhex)
            .collect();
        assert_eq!(blocks.len(), 7, "expected seven hex examples");
        let mut hello = Vec::new();
        encode_request(
            &mut hello,
            1,
            &Request::Hello {
                protocol_version: 2,
                client_name: "cli".into(),
                auth_token: "".into(),
            },
        );
        assert_eq!(blocks[0], hello);
        let mut append = Vec::new();
        encode_request(
            &mut append,
            2,
            &Request::Append {
                stream: "orders-1".into(),
                expected_version: -2,
                events: vec![Event {
                    id: [0; 16],
                    event_type: "Created".into(),
                    timestamp_ns: 0,
                    value: f64::NAN,
                    data: b"hi".to_vec(),
                    metadata: vec![],
                }],
            },
        );
        assert_eq!(blocks[1], append);
        let mut reply = Vec::new();
        encode_response(
            &mut reply,
            2,
            0,
            &Response::Appended(AppendResult {
                first_version: 0,
                last_version: 0,
                partition: 1,
                lsn: 0,
            }),
        );
        assert_eq!(blocks[2], reply);
        let mut err = Vec::new();
        encode_response(
            &mut err,
            3,
            0,
            &Response::Error {
                code: 10,
                message: "wrong expected version".into(),
                current_version: Some(4),
            },
        );
        assert_eq!(blocks[3], err);
        let mut push = Vec::new();
        encode_pushed(
            &mut push,
            7,
            &[RecordedEvent {
                stream: "orders-1".into(),
                stream_version: 0,
                lsn: 0,
                partition: 1,
                event: Event {
                    id: [0; 16],
                    event_type: "Created".into(),
                    timestamp_ns: 1_000_000_000,
                    value: f64::NAN,
                    data: b"hi".to_vec(),
                    metadata: vec![],
                },
            }],
            true,
        );
        assert_eq!(blocks[4], push);
        let mut trim = Vec::new();
        encode_request(
            &mut trim,
            10,
            &Request::Trim {
                stream: "orders-1".into(),
                by: TrimBy::KeepLast(10),
            },
        );
        assert_eq!(blocks[5], trim);
        let mut deleted = Vec::new();
        encode_response(&mut deleted, 10, 0, &Response::Deleted { deleted: 3 });
        assert_eq!(blocks[6], deleted);
    }
}
