//! Wire protocol v2 (and v1, which a server still speaks to a client that asks for it):
//! frames, requests and replies, shared by the server and the client (docs/PROTOCOL.md has
//! the byte tables).
//!
//! A connection's version is what its HELLO asked for; the server answers in it. Version 2
//! adds, without changing any v1 message: pushed events that name their stream (0x96, sent
//! instead of 0x93), and a SUBSCRIBE that may end with one position per partition (a
//! checkpoint). Decoding needs no version: each opcode has one layout, and the checkpoint is
//! an optional trailing field.
//!
//! A frame is a 16-byte header — `u32 length` (bytes after this field), `u8 opcode`,
//! `u8 flags`, `u16 reserved`, `u64 request_id` — followed by the body. All integers are
//! little-endian; strings are `u16 length + UTF-8`, blobs `u32 length + bytes`.
//!
//! Decoding is total: any byte sequence yields a value or a [`ProtocolError`], never a panic,
//! and never allocates more than the frame's declared length (itself bounded by the caller's
//! `max_frame_bytes` before the body is read). Encoding is the exact inverse; the round trip
//! is tested for every message and fuzzed (`fuzz/`).

mod codec;
mod group;

pub use group::{
    ClaimAt, ConsumerGroupInfo, ConsumerInfo, ConsumerOp, EntryEvent, GroupClaim, GroupCommand,
    GroupEntry, GroupStart, PendingEntry, PendingRange, PendingReply,
};

pub use codec::{decode_request, decode_response, encode_pushed, encode_request, encode_response};

/// The newest protocol version this build speaks (what the Rust client asks for).
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest protocol version a server of this build still serves.
pub const PROTOCOL_VERSION_MIN: u16 = 1;

/// FNV-1a 64 of `bytes` (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`): the
/// stream hash of the wire contract. Partitions route by it ([`partition_of`]), and rings
/// keep it as an event's stream id (names collide, so a match is confirmed by name).
pub fn stream_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of a stream (or key): [`stream_hash`] of its [`routing_part`] modulo the
/// partition count. Part of the wire contract: a client that sends a stream's requests to
/// the address HELLO names for this partition saves a hop.
pub fn partition_of(stream: &str, partitions: u32) -> u32 {
    (stream_hash(routing_part(stream.as_bytes())) % u64::from(partitions.max(1))) as u32
}

/// What of a stream name decides its partition: the whole name, or its hash tag as Redis
/// Cluster reads one — the bytes between the first `{` and the first `}` after it, when
/// there are any (`{user1}.orders` and `{user1}.payments` share a partition; `{}x` and `x{`
/// have no tag).
pub fn routing_part(name: &[u8]) -> &[u8] {
    if let Some(open) = name.iter().position(|&b| b == b'{') {
        if let Some(len) = name[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &name[open + 1..open + 1 + len];
            }
        }
    }
    name
}

#[cfg(test)]
mod routing_tests {
    use super::{partition_of, routing_part};

    #[test]
    fn hash_tags_route_as_redis_cluster_reads_them() {
        assert_eq!(routing_part(b"{user1}.orders"), b"user1");
        assert_eq!(routing_part(b"a{b}c{d}"), b"b");
        assert_eq!(routing_part(b"a{{b}}"), b"{b");
        assert_eq!(routing_part(b"{}x"), b"{}x");
        assert_eq!(routing_part(b"x{"), b"x{");
        assert_eq!(routing_part(b"x}y{"), b"x}y{");
        assert_eq!(routing_part(b"plain"), b"plain");
        for n in [2, 4, 7, 64] {
            assert_eq!(
                partition_of("{user1}.orders", n),
                partition_of("{user1}.payments", n)
            );
            assert_eq!(partition_of("{user1}", n), partition_of("user1", n));
            assert_eq!(
                partition_of("\u{0}3\u{0}{user1}x", n),
                partition_of("user1", n)
            );
        }
    }
}

/// Bytes of the frame header, the `length` field included.
pub const FRAME_HEADER_BYTES: usize = 16;

/// Bytes of the header counted by `length` (everything after the length field).
pub const HEADER_AFTER_LENGTH: u32 = 12;

/// Flag bit 0: more frames follow for this request.
pub const FLAG_MORE: u8 = 1;

pub mod opcode {
    pub const HELLO: u8 = 0x01;
    pub const PING: u8 = 0x02;
    pub const APPEND: u8 = 0x10;
    pub const READ: u8 = 0x11;
    pub const SUBSCRIBE: u8 = 0x12;
    pub const UNSUBSCRIBE: u8 = 0x13;
    pub const AGGREGATE: u8 = 0x14;
    pub const STREAM_INFO: u8 = 0x15;
    /// AGGREGATE with filters that combine, a JSON field, group-by and top-K (v2).
    pub const AGGREGATE_GROUPS: u8 = 0x16;
    /// Deletes a stream, durably (v2).
    pub const DELETE_STREAM: u8 = 0x17;
    /// Deletes a stream's oldest events, durably (v2).
    pub const TRIM: u8 = 0x18;
    /// Consumer groups (v2; docs/PROTOCOL.md, *Consumer groups*): XGROUP CREATE.
    pub const GROUP_CREATE: u8 = 0x40;
    /// XGROUP DESTROY.
    pub const GROUP_DESTROY: u8 = 0x41;
    /// XGROUP SETID.
    pub const GROUP_SETID: u8 = 0x42;
    /// XGROUP CREATECONSUMER / DELCONSUMER.
    pub const GROUP_CONSUMER: u8 = 0x43;
    /// XREADGROUP of one stream (not blocking).
    pub const GROUP_READ: u8 = 0x44;
    /// XACK.
    pub const GROUP_ACK: u8 = 0x45;
    /// XPENDING.
    pub const GROUP_PENDING: u8 = 0x46;
    /// XCLAIM.
    pub const GROUP_CLAIM: u8 = 0x47;
    /// XAUTOCLAIM.
    pub const GROUP_AUTOCLAIM: u8 = 0x48;
    /// XINFO GROUPS with consumers.
    pub const GROUP_INFO: u8 = 0x49;
    pub const EXECUTE: u8 = 0x20;
    pub const QUERY: u8 = 0x21;
    pub const STATS: u8 = 0x30;

    pub const HELLO_OK: u8 = 0x81;
    pub const PONG: u8 = 0x82;
    pub const APPENDED: u8 = 0x90;
    pub const EVENTS: u8 = 0x91;
    pub const SUBSCRIBED: u8 = 0x92;
    /// Pushed events without their streams' names (protocol v1).
    pub const PUSHED: u8 = 0x93;
    /// Pushed events, each with its stream's name (protocol v2).
    pub const PUSHED_NAMED: u8 = 0x96;
    pub const AGGREGATED: u8 = 0x94;
    pub const STREAM_INFO_OK: u8 = 0x95;
    pub const GROUPS: u8 = 0x97;
    /// What a DELETE_STREAM or a TRIM deleted.
    pub const DELETED: u8 = 0x98;
    /// GROUP_CREATE or GROUP_SETID done.
    pub const GROUP_OK: u8 = 0xC0;
    /// A number: GROUP_DESTROY, GROUP_CONSUMER, GROUP_ACK.
    pub const GROUP_COUNT: u8 = 0xC1;
    /// Entries: GROUP_READ, GROUP_CLAIM.
    pub const GROUP_ENTRIES: u8 = 0xC2;
    /// GROUP_PENDING's summary or entries.
    pub const GROUP_PENDING_OK: u8 = 0xC3;
    /// GROUP_AUTOCLAIM's next start, entries and deleted IDs.
    pub const GROUP_AUTOCLAIMED: u8 = 0xC4;
    /// GROUP_INFO's groups.
    pub const GROUP_INFO_OK: u8 = 0xC5;
    pub const EXECUTED: u8 = 0xA0;
    pub const QUERIED: u8 = 0xA1;
    pub const STATS_OK: u8 = 0xB0;
    pub const ERROR: u8 = 0xFF;
}

/// Error codes carried by an ERROR (0xFF) reply.
pub mod code {
    pub const MALFORMED_FRAME: u16 = 1;
    pub const UNKNOWN_OPCODE: u16 = 2;
    pub const FRAME_TOO_LARGE: u16 = 3;
    pub const UNSUPPORTED_VERSION: u16 = 4;
    pub const NOT_AUTHENTICATED: u16 = 5;
    pub const WRONG_EXPECTED_VERSION: u16 = 10;
    pub const STREAM_NOT_FOUND: u16 = 11;
    pub const INVALID_ARGUMENT: u16 = 12;
    /// No such consumer group (on a stream that exists).
    pub const NO_GROUP: u16 = 13;
    /// GROUP_CREATE of a group that exists.
    pub const GROUP_EXISTS: u16 = 14;
    /// The partition holds `max_group_entries` consumer-group entries.
    pub const GROUPS_FULL: u16 = 15;
    pub const DISK_FULL: u16 = 20;
    pub const PARTITION_UNAVAILABLE: u16 = 21;
    pub const OVERLOADED: u16 = 30;
    pub const SHUTTING_DOWN: u16 = 31;
}

/// Expected-version sentinels on APPEND.
pub mod expected {
    pub const ANY: i64 = -1;
    pub const NO_STREAM: i64 = -2;
    pub const STREAM_EXISTS: i64 = -3;
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes after the length field: 12 + body length.
    pub length: u32,
    pub opcode: u8,
    pub flags: u8,
    pub request_id: u64,
}

impl FrameHeader {
    /// Parses the 16 header bytes. `reserved` must be zero.
    pub fn parse(bytes: &[u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, ProtocolError> {
        let length = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        let reserved = u16::from_le_bytes(bytes[6..8].try_into().expect("2 bytes"));
        if length < HEADER_AFTER_LENGTH {
            return Err(ProtocolError::Malformed(format!(
                "frame length {length} is shorter than the 12-byte header rest"
            )));
        }
        if reserved != 0 {
            return Err(ProtocolError::Malformed(
                "reserved header field is not zero".into(),
            ));
        }
        Ok(FrameHeader {
            length,
            opcode: bytes[4],
            flags: bytes[5],
            request_id: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        })
    }

    /// Body length in bytes.
    pub fn body_len(&self) -> usize {
        (self.length - HEADER_AFTER_LENGTH) as usize
    }
}

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    #[error("frame of {length} bytes exceeds the limit of {max}")]
    TooLarge { length: u64, max: u64 },
}

impl ProtocolError {
    /// The wire error code for this failure.
    pub fn code(&self) -> u16 {
        match self {
            ProtocolError::Malformed(_) => code::MALFORMED_FRAME,
            ProtocolError::UnknownOpcode(_) => code::UNKNOWN_OPCODE,
            ProtocolError::TooLarge { .. } => code::FRAME_TOO_LARGE,
        }
    }
}

/// An event as a client sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// All zero = no id (no idempotency).
    pub id: [u8; 16],
    pub event_type: String,
    /// 0 = the server's clock.
    pub timestamp_ns: u64,
    /// NaN = none.
    pub value: f64,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
}

/// An event as the server stores and returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// The stream it belongs to. On the wire only in 0x96 pushes; a READ reply (one stream)
    /// and a v1 push leave it to the client, which fills it in where it knows it.
    pub stream: String,
    pub stream_version: u64,
    pub lsn: u64,
    pub partition: u32,
    pub event: Event,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward = 0,
    Backward = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeTarget {
    Stream = 0,
    Partition = 1,
    All = 2,
    /// The domain events of a served model (name: the model), from an LSN of each of its
    /// partitions.
    Model = 3,
}

/// One bucket of an aggregation: what an AGGREGATE reply carries, what the server's
/// aggregations compute (`crate::aggregate`) and what the client returns. Events without a
/// value are not counted; an empty bucket has count 0, sum 0 and NaN min/max.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub start_ns: u64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Bucket {
    /// `sum / count`, NaN when empty.
    pub fn average(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }

    /// Merges another bucket of the same interval (from another partition).
    pub fn merge(&mut self, o: &Bucket) {
        if o.count == 0 {
            return;
        }
        self.count += o.count;
        self.sum += o.sum;
        self.min = if self.min.is_nan() {
            o.min
        } else {
            self.min.min(o.min)
        };
        self.max = if self.max.is_nan() {
            o.max
        } else {
            self.max.max(o.max)
        };
    }
}

/// How a name filter of AGGREGATE_GROUPS matches: the whole name (an empty name: every name)
/// or its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameMatch {
    Exact = 0,
    Prefix = 1,
}

/// What AGGREGATE_GROUPS ranks groups by for top-K (largest first; ties by key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupOrder {
    Count = 0,
    Sum = 1,
    Average = 2,
}

/// An AGGREGATE_GROUPS request (docs/PROTOCOL.md): over the events with
/// `from_ns ≤ timestamp < to_ns` that pass every filter, per group, per bucket.
///
/// Paths name a field of the event's JSON data as `data.<key>[.<key>…]`. `field` is what is
/// aggregated: "" or "value" for the event's value, or a path. `group_by` is "" (one group),
/// "stream", "type" or a path. `where_field`/`where_value` keep only the events whose field
/// equals the value ("" = no such filter).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupedAggregate {
    pub from_ns: u64,
    pub to_ns: u64,
    /// 0 = one bucket for the whole window.
    pub bucket_ns: u64,
    pub stream: String,
    pub stream_match: NameMatch,
    pub event_type: String,
    pub type_match: NameMatch,
    pub field: String,
    pub where_field: String,
    pub where_value: String,
    pub group_by: String,
    pub order: GroupOrder,
    /// The most groups the reply carries, the first by `order`; 0 = every group.
    pub top_k: u32,
    /// The most groups the window may hold before the request is refused; 0 = the server's
    /// bound.
    pub max_groups: u32,
}

impl GroupedAggregate {
    /// Every event's value over `[from_ns, to_ns)` in one bucket: a request to build on.
    pub fn window(from_ns: u64, to_ns: u64) -> Self {
        GroupedAggregate {
            from_ns,
            to_ns,
            bucket_ns: 0,
            stream: String::new(),
            stream_match: NameMatch::Exact,
            event_type: String::new(),
            type_match: NameMatch::Exact,
            field: String::new(),
            where_field: String::new(),
            where_value: String::new(),
            group_by: String::new(),
            order: GroupOrder::Count,
            top_k: 0,
            max_groups: 0,
        }
    }
}

/// One group of an AGGREGATE_GROUPS reply: its key (the stream, the type or the field's value
/// as text; "" without group-by), how many of its events had no number to aggregate, and its
/// buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub key: String,
    pub missing: u64,
    pub buckets: Vec<Bucket>,
}

impl Group {
    /// The group's whole window as one bucket (what top-K ranks by).
    pub fn total(&self) -> Bucket {
        let mut t = Bucket {
            start_ns: self.buckets.first().map_or(0, |b| b.start_ns),
            count: 0,
            sum: 0.0,
            min: f64::NAN,
            max: f64::NAN,
        };
        for b in &self.buckets {
            t.merge(b);
        }
        t
    }
}

/// An AGGREGATE_GROUPS reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Groups {
    /// Events in the window that passed every filter.
    pub matched: u64,
    /// Of those, events without the group-by field (or with one that is not a string, a
    /// number or a boolean): in no group.
    pub ungrouped: u64,
    /// Groups before top-K.
    pub groups_total: u32,
    /// The groups, in `order` (largest first) when top-K is asked for, else by key.
    pub groups: Vec<Group>,
}

/// A stream entry's ID, as Redis streams name entries: milliseconds and a sequence number,
/// ordered by both (`ms-seq` as text). Every event gets one when it is appended, whichever
/// protocol wrote it; IDs grow strictly within a stream.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The ID right after this one (Redis's `streamIncrID`); `None` after the largest.
    pub fn successor(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId::new(self.ms, seq)),
            None => self.ms.checked_add(1).map(|ms| StreamId::new(ms, 0)),
        }
    }

    /// The ID right before this one (Redis's `streamDecrID`); `None` before 0-0.
    pub fn predecessor(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId::new(self.ms, seq)),
            None => self.ms.checked_sub(1).map(|ms| StreamId::new(ms, u64::MAX)),
        }
    }

    /// The ID an event gets when its writer names none (Redis's `*`), after `last` (the
    /// stream's last ID) at clock time `now_ms`: `now_ms-0` when the clock is ahead of
    /// `last`, else `last.ms-(last.seq + 1)`; `None` when `last` is the largest ID.
    pub fn next_after(last: StreamId, now_ms: u64) -> Option<StreamId> {
        if now_ms > last.ms {
            Some(StreamId::new(now_ms, 0))
        } else if last.seq < u64::MAX {
            Some(StreamId::new(last.ms, last.seq + 1))
        } else if last.ms < u64::MAX {
            Some(StreamId::new(last.ms + 1, 0))
        } else {
            None
        }
    }

    /// The ID of version `version` of a stream written before events carried IDs:
    /// `0-(version + 1)` (docs/FORMAT.md).
    pub const fn legacy(version: u64) -> StreamId {
        StreamId::new(0, version + 1)
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        f.write_str(std::str::from_utf8(text.as_ref()).expect("digits and a dash"))
    }
}

impl StreamId {
    /// Its text, `ms-seq` in decimal (what [`Display`](std::fmt::Display) writes), on the
    /// stack: replies write an ID per entry, and the formatting machinery and a `String`
    /// each cost more than the digits.
    pub fn text(&self) -> IdText {
        let mut text = IdText {
            bytes: [0; ID_TEXT_BYTES_MAX],
            len: 0,
        };
        text.push_u64(self.ms);
        text.bytes[text.len] = b'-';
        text.len += 1;
        text.push_u64(self.seq);
        text
    }
}

/// The longest ID text: two 20-digit numbers and a dash.
const ID_TEXT_BYTES_MAX: usize = 41;

/// A stream ID's text ([`StreamId::text`]).
pub struct IdText {
    bytes: [u8; ID_TEXT_BYTES_MAX],
    len: usize,
}

impl IdText {
    fn push_u64(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let d = decimal(n, &mut digits);
        self.bytes[self.len..self.len + d.len()].copy_from_slice(d);
        self.len += d.len();
    }
}

/// `n`'s decimal digits, written at the end of `digits`.
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

impl AsRef<[u8]> for IdText {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Where an append landed: what an APPENDED reply carries, what a partition's append returns
/// and what the client returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    pub first_version: u64,
    pub last_version: u64,
    pub partition: u32,
    pub lsn: u64,
}

/// A stream's next version and the LSNs of its first and last events: what a STREAM_INFO_OK
/// reply carries, what a partition answers and what the client returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub next_version: u64,
    pub first_lsn: u64,
    pub last_lsn: u64,
}

/// Which of a stream's oldest events a TRIM deletes (docs/PROTOCOL.md). On the wire: `u8 by`
/// (0, 1, 2 in this order), then `u64` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimBy {
    /// Every event but the newest N.
    KeepLast(u64),
    /// Every event whose version is below V.
    BeforeVersion(u64),
    /// Every event whose stream ID's milliseconds are below `ns / 1_000_000` (rounded down):
    /// for events appended without an explicit ID, those the server placed before that clock
    /// time.
    OlderThanNs(u64),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Hello {
        protocol_version: u16,
        client_name: String,
        auth_token: String,
    },
    Ping,
    Append {
        stream: String,
        expected_version: i64,
        events: Vec<Event>,
    },
    Read {
        stream: String,
        from_version: u64,
        max_count: u32,
        direction: Direction,
    },
    Subscribe {
        target: SubscribeTarget,
        name: String,
        from: u64,
        type_prefix: String,
        /// v2: where to start in each partition the target spans (a checkpoint), in
        /// partition order; empty: `from` in every partition.
        positions: Vec<u64>,
    },
    Unsubscribe {
        subscription_id: u64,
    },
    Aggregate {
        stream: String,
        type_prefix: String,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    },
    StreamInfo {
        stream: String,
    },
    AggregateGroups(Box<GroupedAggregate>),
    DeleteStream {
        stream: String,
    },
    Trim {
        stream: String,
        by: TrimBy,
    },
    /// A consumer-group command (0x40–0x49) on `stream`.
    Group {
        stream: String,
        command: GroupCommand,
    },
    Execute {
        model: String,
        command: Vec<u8>,
    },
    Query {
        model: String,
        query: Vec<u8>,
    },
    Stats,
}

impl Request {
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Hello { .. } => opcode::HELLO,
            Request::Ping => opcode::PING,
            Request::Append { .. } => opcode::APPEND,
            Request::Read { .. } => opcode::READ,
            Request::Subscribe { .. } => opcode::SUBSCRIBE,
            Request::Unsubscribe { .. } => opcode::UNSUBSCRIBE,
            Request::Aggregate { .. } => opcode::AGGREGATE,
            Request::StreamInfo { .. } => opcode::STREAM_INFO,
            Request::AggregateGroups(_) => opcode::AGGREGATE_GROUPS,
            Request::DeleteStream { .. } => opcode::DELETE_STREAM,
            Request::Trim { .. } => opcode::TRIM,
            Request::Group { command, .. } => command.opcode(),
            Request::Execute { .. } => opcode::EXECUTE,
            Request::Query { .. } => opcode::QUERY,
            Request::Stats => opcode::STATS,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Hello {
        protocol_version: u16,
        server_version: String,
        /// Per partition: the address of the shard that owns it.
        partition_addresses: Vec<String>,
    },
    Pong,
    Appended(AppendResult),
    Events {
        events: Vec<RecordedEvent>,
        end_of_stream: bool,
    },
    /// SUBSCRIBE accepted, or UNSUBSCRIBE done.
    Subscribed,
    /// Pushed events, each with its stream (0x96, protocol v2).
    Pushed {
        events: Vec<RecordedEvent>,
    },
    /// Pushed events without their streams (0x93, protocol v1).
    PushedV1 {
        events: Vec<RecordedEvent>,
    },
    Aggregated {
        buckets: Vec<Bucket>,
    },
    StreamInfo(StreamInfo),
    Groups(Groups),
    /// DELETE_STREAM or TRIM done and durable: how many live events it deleted.
    Deleted {
        deleted: u64,
    },
    /// GROUP_CREATE, GROUP_SETID done (and durable).
    GroupOk,
    /// GROUP_DESTROY (1 or 0), GROUP_CONSUMER (create: 1 or 0; delete: the consumer's
    /// pending entries), GROUP_ACK (entries acknowledged).
    GroupCount(u64),
    /// GROUP_READ, GROUP_CLAIM.
    GroupEntries(Vec<GroupEntry>),
    GroupPending(PendingReply),
    /// GROUP_AUTOCLAIM: where to continue (`0-0`: the scan is done), the entries claimed,
    /// and the pending IDs no longer in the stream (removed from the pending list).
    GroupAutoClaimed {
        next: StreamId,
        entries: Vec<GroupEntry>,
        deleted: Vec<StreamId>,
    },
    GroupInfo(Vec<ConsumerGroupInfo>),
    Executed {
        result: Vec<u8>,
    },
    Queried {
        result: Vec<u8>,
    },
    Stats {
        json: String,
    },
    Error {
        code: u16,
        message: String,
        /// Only with code 10 (wrong expected version): the stream's last version, -1 if none.
        current_version: Option<i64>,
    },
}

impl Response {
    pub fn opcode(&self) -> u8 {
        match self {
            Response::Hello { .. } => opcode::HELLO_OK,
            Response::Pong => opcode::PONG,
            Response::Appended(_) => opcode::APPENDED,
            Response::Events { .. } => opcode::EVENTS,
            Response::Subscribed => opcode::SUBSCRIBED,
            Response::Pushed { .. } => opcode::PUSHED_NAMED,
            Response::PushedV1 { .. } => opcode::PUSHED,
            Response::Aggregated { .. } => opcode::AGGREGATED,
            Response::StreamInfo(_) => opcode::STREAM_INFO_OK,
            Response::Groups(_) => opcode::GROUPS,
            Response::Deleted { .. } => opcode::DELETED,
            Response::GroupOk => opcode::GROUP_OK,
            Response::GroupCount(_) => opcode::GROUP_COUNT,
            Response::GroupEntries(_) => opcode::GROUP_ENTRIES,
            Response::GroupPending(_) => opcode::GROUP_PENDING_OK,
            Response::GroupAutoClaimed { .. } => opcode::GROUP_AUTOCLAIMED,
            Response::GroupInfo(_) => opcode::GROUP_INFO_OK,
            Response::Executed { .. } => opcode::EXECUTED,
            Response::Queried { .. } => opcode::QUERIED,
            Response::Stats { .. } => opcode::STATS_OK,
            Response::Error { .. } => opcode::ERROR,
        }
    }

    pub fn error(code: u16, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
            current_version: None,
        }
    }
}
