//! Consumer groups on the native protocol (requests 0x40–0x49, replies 0xC0–0xC5;
//! docs/PROTOCOL.md, *Consumer groups*): the commands and what they answer, as the client
//! sends them and the server decodes them. The state behind them is the stream layer's
//! (`crate::stream::groups`), shared with the RESP port's XGROUP, XREADGROUP, XACK, …: a
//! group made through one protocol is used through the other.
//!
//! Group and consumer names are bytes (`u16 length + bytes`, not necessarily UTF-8); stream
//! IDs are two `u64`, milliseconds then sequence.

use super::{RecordedEvent, StreamId};

/// Where a group starts (GROUP_CREATE, GROUP_SETID): after an ID, or after the stream's last
/// entry (Redis's `$`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStart {
    /// Entries above this ID are new to the group (`0-0`: the whole stream).
    Id(StreamId),
    /// Only entries appended from now on are new.
    Last,
}

/// GROUP_CONSUMER's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerOp {
    Create = 0,
    Delete = 1,
}

/// When GROUP_CLAIM records the claimed entries as delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimAt {
    /// Now (XCLAIM without IDLE or TIME).
    Now,
    /// This many milliseconds ago (IDLE).
    IdleMs(u64),
    /// At this Unix time in milliseconds (TIME; a future time counts as now).
    UnixMs(u64),
}

/// GROUP_CLAIM's arguments: XCLAIM's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupClaim {
    pub group: Vec<u8>,
    pub consumer: Vec<u8>,
    /// Only entries idle at least this long are claimed (0: any).
    pub min_idle_ms: u64,
    pub ids: Vec<StreamId>,
    pub at: ClaimAt,
    /// The delivery count to set (RETRYCOUNT); `None`: one more (JUSTID: unchanged).
    pub retry_count: Option<u64>,
    /// Claim IDs not pending yet (FORCE), if they are in the stream.
    pub force: bool,
    /// Answer IDs only, and leave delivery counts as they are (JUSTID).
    pub just_id: bool,
    /// Move the group's last-delivered ID up to this (LASTID).
    pub last_id: Option<StreamId>,
}

/// GROUP_PENDING's extended form (XPENDING with a range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRange {
    /// Only entries idle at least this long (0: all).
    pub min_idle_ms: u64,
    /// Inclusive bounds.
    pub start: StreamId,
    pub end: StreamId,
    pub count: u32,
    /// Only this consumer's entries.
    pub consumer: Option<Vec<u8>>,
}

/// A consumer-group command on one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupCommand {
    /// 0x40: XGROUP CREATE.
    Create {
        group: Vec<u8>,
        start: GroupStart,
        /// Create the stream (empty) if it has no events.
        mkstream: bool,
        entries_read: Option<u64>,
    },
    /// 0x41: XGROUP DESTROY.
    Destroy { group: Vec<u8> },
    /// 0x42: XGROUP SETID.
    SetId {
        group: Vec<u8>,
        start: GroupStart,
        entries_read: Option<u64>,
    },
    /// 0x43: XGROUP CREATECONSUMER / DELCONSUMER.
    Consumer {
        group: Vec<u8>,
        consumer: Vec<u8>,
        op: ConsumerOp,
    },
    /// 0x44: XREADGROUP on one stream, not blocking: new entries (`after` `None`, Redis's
    /// `>`), or the consumer's own pending entries above `after` (its history).
    Read {
        group: Vec<u8>,
        consumer: Vec<u8>,
        after: Option<StreamId>,
        /// At most this many (0: the server's `max_read_count`).
        count: u32,
        noack: bool,
        /// With `after` `None` and nothing new: wait up to this many milliseconds for new
        /// entries (0: answer at once), as XREADGROUP's BLOCK.
        block_ms: u32,
    },
    /// 0x45: XACK.
    Ack { group: Vec<u8>, ids: Vec<StreamId> },
    /// 0x46: XPENDING, the summary (`range` `None`) or the extended form.
    Pending {
        group: Vec<u8>,
        range: Option<PendingRange>,
    },
    /// 0x47: XCLAIM.
    Claim(Box<GroupClaim>),
    /// 0x48: XAUTOCLAIM.
    AutoClaim {
        group: Vec<u8>,
        consumer: Vec<u8>,
        min_idle_ms: u64,
        start: StreamId,
        /// At least 1.
        count: u32,
        just_id: bool,
    },
    /// 0x49: XINFO GROUPS with each group's consumers.
    Info,
}

impl GroupCommand {
    /// The request's opcode.
    pub fn opcode(&self) -> u8 {
        use super::opcode as op;
        match self {
            GroupCommand::Create { .. } => op::GROUP_CREATE,
            GroupCommand::Destroy { .. } => op::GROUP_DESTROY,
            GroupCommand::SetId { .. } => op::GROUP_SETID,
            GroupCommand::Consumer { .. } => op::GROUP_CONSUMER,
            GroupCommand::Read { .. } => op::GROUP_READ,
            GroupCommand::Ack { .. } => op::GROUP_ACK,
            GroupCommand::Pending { .. } => op::GROUP_PENDING,
            GroupCommand::Claim(_) => op::GROUP_CLAIM,
            GroupCommand::AutoClaim { .. } => op::GROUP_AUTOCLAIM,
            GroupCommand::Info => op::GROUP_INFO,
        }
    }
}

/// An entry a group reply carries.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupEntry {
    pub id: StreamId,
    pub event: EntryEvent,
}

/// What a [`GroupEntry`] carries besides its ID (on the wire: `u8 kind` 0, 1, 2).
#[derive(Clone, Debug, PartialEq)]
pub enum EntryEvent {
    /// 0: the recorded event (its `stream` is empty: the request's stream).
    Event(RecordedEvent),
    /// 1: pending, but no longer in the stream (deleted or trimmed): a history read answers
    /// it so that the consumer acknowledges it.
    Deleted,
    /// 2: the ID alone (JUSTID).
    IdOnly,
}

/// A pending entry in GROUP_PENDING's extended form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEntry {
    pub id: StreamId,
    pub consumer: Vec<u8>,
    /// Milliseconds since its last delivery.
    pub idle_ms: u64,
    pub deliveries: u64,
}

/// GROUP_PENDING's reply (0xC3, `u8 form` 0 or 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingReply {
    /// 0: how many, the lowest and highest pending IDs, and per consumer with pending entries
    /// how many.
    Summary {
        count: u64,
        range: Option<(StreamId, StreamId)>,
        consumers: Vec<(Vec<u8>, u64)>,
    },
    /// 1: the entries of the range, in ID order.
    Entries(Vec<PendingEntry>),
}

/// A consumer as GROUP_INFO shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub name: Vec<u8>,
    pub pending: u64,
    /// Unix ms of its last attempted interaction (read, claim).
    pub seen_ms: u64,
    /// Unix ms of its last successful interaction (a read or claim that delivered).
    pub active_ms: Option<u64>,
}

/// A group as GROUP_INFO shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupInfo {
    pub name: Vec<u8>,
    pub last_delivered: StreamId,
    /// Entries the group has read (`None`: unknown, as Redis's nil).
    pub entries_read: Option<u64>,
    /// Entries not yet delivered to the group (`None`: unknown).
    pub lag: Option<u64>,
    pub pending: u64,
    pub consumers: Vec<ConsumerInfo>,
}
