//! Why a stream operation failed: one typed error for the stream layer. The server maps each
//! variant to its wire code (`server::ApiError`); the stream layer knows no wire codes.

use crate::error::JournalError;

/// A failed stream operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("stream name is empty")]
    EmptyStreamName,
    #[error("an append needs at least one event")]
    NoEvents,
    #[error("expected version {0} is not -1, -2, -3 or >= 0")]
    BadExpectedVersion(i64),
    /// The stream's last version is `current` (-1: no events), not what the append expected.
    #[error("wrong expected version: expected {expected}, stream {stream:?} is at {current}")]
    WrongExpectedVersion {
        stream: String,
        expected: i64,
        current: i64,
    },
    #[error("stream {0:?} not found")]
    StreamNotFound(String),
    /// One event id twice in one append.
    #[error("event id {0} appears twice in the append; each event needs its own id")]
    DuplicateEventId(String),
    /// An append whose ids only partly match events already written (docs/PROTOCOL.md,
    /// idempotency).
    #[error(
        "event {index} of the append has id {id}, already appended to stream {stream:?} at \
         version {version}, but the append is not a retry of those events; a retry must \
         resend the same events with the same ids (new events need new ids)"
    )]
    NotARetry {
        index: usize,
        id: String,
        stream: String,
        version: u64,
    },
    /// An append's explicit stream ID is not above the stream's last.
    #[error(
        "the stream ID asked for is equal to or below stream {stream:?}'s last ID {last}; \
         IDs must grow (use the next ID, or let the server choose it)"
    )]
    IdNotAbove {
        stream: String,
        last: crate::protocol::StreamId,
    },
    /// An append whose events are of another kind than the stream's (`kind`: the stream's,
    /// or the first event's for a new stream), or of several kinds at once; or an entries
    /// change (XDEL, XTRIM, XSETID, TRIM) to a list, string or set.
    #[error(
        "stream {stream:?} {}",
        match kind {
            super::StreamKind::List =>
                "is a Redis list: it takes only list pushes (events of type $lpush or $rpush)",
            super::StreamKind::String =>
                "is a Redis string: it takes only events of type $set",
            super::StreamKind::Set =>
                "is a Redis set: it takes only events of type $sadd",
            super::StreamKind::Stream =>
                "is an event stream: list pushes ($lpush, $rpush), $set and $sadd events \
                 make keys of their own, and an append does not mix them with other events",
        }
    )]
    WrongType {
        stream: String,
        kind: super::StreamKind,
    },
    /// A range reply that would hold more than `budget` bytes of entries.
    #[error(
        "the reply would hold more than {budget} bytes of entries (8 × max_read_bytes); ask \
         for fewer with COUNT, or read on from the last ID returned"
    )]
    ReplyTooLarge { budget: usize },
    /// A Redis set too large to read whole (SADD, SMEMBERS, SCARD and SISMEMBER read it).
    #[error(
        "the set has more than {max_members} members or {max_bytes} bytes of them: this \
         server reads sets whole and reads none larger"
    )]
    SetTooLarge { max_members: u64, max_bytes: usize },
    /// XSETID refused by the stream's state, with Redis's text.
    #[error("{0}")]
    SetIdRefused(&'static str),
    /// A consumer-group command refused.
    #[error(transparent)]
    Group(#[from] super::group_ops::GroupError),
    #[error("the stream ID asked for must be above 0-0")]
    IdZero,
    /// The stream's last ID is the largest there is.
    #[error("stream {stream:?} has used every stream ID: no ID is above its last")]
    IdsExhausted { stream: String },
    /// The stream index names an LSN the journal does not hold.
    #[error("event at LSN {0} could not be read back from the journal")]
    Unreadable(u64),
    /// An aggregation whose window starts before what the partition's ring holds whole:
    /// events with timestamps up to `left_out_ns` are no longer in memory.
    #[error(
        "the window starts before what partition {partition}'s ring holds completely: events \
         up to {left_out_ns} ns ({}) are no longer in memory; aggregate from {} or later, or \
         raise ring_capacity_events/ring_capacity_bytes",
        crate::rfc3339::format_ns(*left_out_ns),
        left_out_ns.saturating_add(1)
    )]
    WindowBeforeRing { partition: u32, left_out_ns: u64 },
    /// An aggregation the ring cannot answer as asked.
    #[error(transparent)]
    Aggregate(#[from] crate::aggregate::AggregateError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A ring payload shorter than the lengths it declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ring payload too short")]
pub struct ShortPayload;

/// Why a partition snapshot cannot be used (recovery then tries the next older one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file itself: unreadable, damaged, another owner's, or named for another LSN.
    #[error(transparent)]
    Unusable(#[from] crate::snapshot::Unusable),
    #[error("undecodable partition image: {0}")]
    Undecodable(#[source] postcard::Error),
    #[error("undecodable partition image trailer: {0}")]
    UndecodableTrailer(#[source] postcard::Error),
    #[error("its body names another LSN than its header")]
    BodyLsn,
    #[error("stream {0:?} has an LSN beyond the image's")]
    StreamBeyondImage(String),
    /// The stream ID lists do not match the streams (one per version, growing).
    #[error("its stream IDs do not match its streams{}", .0.as_ref().map(|s| format!(" (stream {s:?})")).unwrap_or_default())]
    StreamIds(Option<String>),
    #[error("ring event at LSN {lsn}: {source}")]
    RingEvent {
        lsn: u64,
        #[source]
        source: ShortPayload,
    },
}
