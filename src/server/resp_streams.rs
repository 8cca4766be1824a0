//! The RESP port's stream commands on evring streams: XADD, XLEN, XRANGE, XREVRANGE (and
//! XREAD: [`super::resp_read`]).
//!
//! ## One keyspace
//!
//! A key of database 0 is the evring stream of the same name; a key of database N ≥ 1 is
//! the stream `"\0N\0key"` (a name no database-0 key of printable text takes). Keys are
//! UTF-8 (stream names are). Each entry is an event with its stream ID (`ms-seq`):
//!
//! - an XADD entry is an event of type [`FIELDS_TYPE`] whose data is the field list in RESP
//!   form (`*<2n>\r\n` then each field and value as `$<len>\r\n<bytes>\r\n`): a reply
//!   copies those bytes as they are, being the fields' encoding in RESP2 and RESP3 alike
//!   (checked first: [`canonical_fields`]); data of that type not so written (a native
//!   APPEND may carry it) is read back by the RESP request parser;
//! - any other event (a native APPEND) reads as the fields `type` and `data`, then
//!   `metadata`, `value` and `id` (hex) when it has them.
//!
//! Writes are replied to once their frame is durable, as APPEND is.

use std::rc::Rc;

use super::api_error::ApiError;
use super::resp_commands::{unknown_command, wrong_arity};
use super::resp_conn::{Ctx, RespRequest};
use super::route::{OpResult, PartOp, Shard};
use crate::protocol::{code, partition_of, RecordedEvent, StreamId};
use crate::resp::{Parsed, Reply, RequestLimits, RequestParser};
use crate::stream::{IdSpec, Partition, StreamError, StreamSummary, TxDone, TxWrite};

/// The event type of an entry written with XADD.
pub const FIELDS_TYPE: &str = "$fields";

/// The commands the RESP port serves (COMMAND COUNT).
pub(super) const COMMANDS: &[&str] = &[
    "PING",
    "ECHO",
    "SELECT",
    "AUTH",
    "HELLO",
    "CLIENT",
    "COMMAND",
    "RESET",
    "QUIT",
    "XADD",
    "XLEN",
    "XRANGE",
    "XREVRANGE",
    "XDEL",
    "XTRIM",
    "XSETID",
    "XINFO",
    "XGROUP",
    "XREADGROUP",
    "XACK",
    "XPENDING",
    "XCLAIM",
    "XAUTOCLAIM",
    "RENAME",
    "RESTORE",
    "LPUSH",
    "RPUSH",
    "LLEN",
    "LRANGE",
    "SET",
    "GET",
    "SADD",
    "SMEMBERS",
    "SCARD",
    "SISMEMBER",
    "DEL",
    "UNLINK",
    "FLUSHDB",
    "FLUSHALL",
    "XREAD",
    "DBSIZE",
    "EXISTS",
    "TYPE",
    "KEYS",
    "SCAN",
    "INFO",
    "CONFIG",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
];

/// What the owner of a stream's partition does for a stream command.
#[derive(Debug)]
pub enum RespOp {
    /// Writes, as one transaction ([`super::resp_writes`]).
    Tx(Vec<TxWrite>),
    Range {
        stream: String,
        start: StreamId,
        end: StreamId,
        count: usize,
        reverse: bool,
    },
    Len {
        stream: String,
    },
    /// XINFO STREAM: the summary with the first and last entries, or with FULL (`full` is
    /// then its COUNT) the first `full` entries.
    Info {
        stream: String,
        full: Option<usize>,
    },
    /// XREAD's part on one partition.
    Read(super::resp_read::ReadOp),
    /// LLEN, LRANGE.
    List(super::resp_lists::ListOp),
    /// Consumer groups ([`super::resp_groups`]).
    Group(super::resp_groups::GroupOp),
    /// RENAME, RESTORE ([`super::resp_copy`]).
    Copy(super::resp_copy::CopyOp),
    /// GET, SMEMBERS, SCARD, SISMEMBER.
    Value(super::resp_values::ValueOp),
}

/// What it answers.
#[derive(Debug)]
pub enum RespOutcome {
    /// What each write of a transaction did.
    Tx(Vec<Result<TxDone, ApiError>>),
    Entries(Vec<(StreamId, RecordedEvent)>),
    Len(u64),
    /// A stream's summary and its first and last entries; `None`: no stream.
    Info(Option<(StreamSummary, Vec<(StreamId, RecordedEvent)>)>),
    /// A list's elements, head first.
    List(Vec<Vec<u8>>),
    /// A string's value (`None`: no key).
    Value(Option<Vec<u8>>),
    /// A set's members.
    Members(Vec<Vec<u8>>),
    Read(super::resp_read::ReadOutcome),
    Group(super::resp_groups::GroupAnswer),
}

/// An integer argument as Redis reads one (`string2ll`), or Redis's error for it.
pub(super) fn integer(b: &[u8]) -> Result<i64, String> {
    crate::resp::string2ll(b).ok_or_else(|| "value is not an integer or out of range".to_string())
}

/// Redis's error for a command on a key of another type (a list, string or set, for the
/// stream commands).
pub(super) const WRONGTYPE: &str =
    "-WRONGTYPE Operation against a key holding the wrong kind of value";

pub(super) const INVALID_ID: &str = "Invalid stream ID specified as stream command argument";

/// The stream a key of database `ctx.db` names.
pub(super) fn stream_name(ctx: Ctx, key: &[u8]) -> Result<String, String> {
    let key = std::str::from_utf8(key)
        .map_err(|_| "keys must be UTF-8 text on this server (stream names are)".to_string())?;
    if key.is_empty() {
        return Err("empty keys are not allowed on this server (stream names are not)".into());
    }
    Ok(if ctx.db == 0 {
        key.to_string()
    } else {
        format!("\0{}\0{key}", ctx.db)
    })
}

/// Runs a command that is not a connection command, and answers it.
pub(super) async fn run(shard: Rc<Shard>, req: RespRequest) {
    let name = crate::resp::Upper::new(&req.args[0]);
    let result = match name.as_slice() {
        n if super::resp_writes::is_write(n) => super::resp_writes::run(&shard, &req, n).await,
        b"XLEN" => xlen(&shard, &req).await,
        b"XRANGE" => xrange(&shard, &req, false).await,
        b"XREVRANGE" => xrange(&shard, &req, true).await,
        b"XINFO" => Box::pin(xinfo(&shard, &req)).await,
        b"RENAME" => Box::pin(super::resp_copy::rename(&shard, &req)).await,
        b"RESTORE" => Box::pin(super::resp_copy::restore(&shard, &req)).await,
        n if super::resp_groups::is_group_command(n) => {
            Box::pin(super::resp_groups::run(&shard, &req, n)).await
        }
        b"XREAD" => Box::pin(super::resp_read::xread(&shard, &req)).await,
        b"DBSIZE" | b"EXISTS" | b"TYPE" | b"KEYS" | b"SCAN" => {
            Box::pin(super::resp_keys::run(&shard, &req, &name)).await
        }
        b"INFO" | b"CONFIG" => Box::pin(super::resp_info::run(&shard, &req, &name)).await,
        b"LLEN" | b"LRANGE" => Box::pin(super::resp_lists::run(&shard, &req, &name)).await,
        b"GET" | b"SMEMBERS" | b"SCARD" | b"SISMEMBER" => {
            Box::pin(super::resp_values::run(&shard, &req, &name)).await
        }
        n if n.starts_with(b"EV.") => Box::pin(super::resp_ev::run(&shard, &req, n)).await,
        _ => Err(unknown_command(&req.args)),
    };
    if let Err(text) = result {
        req.answer(|r| {
            r.error(text);
        });
    }
}

/// Runs `op` on the partition of `stream`.
pub(super) async fn call(
    shard: &Rc<Shard>,
    stream: &str,
    op: RespOp,
) -> Result<RespOutcome, String> {
    call_in(shard, partition_of(stream, shard.shared.partitions), op).await
}

/// Runs `op` on partition `p`.
pub(super) async fn call_in(shard: &Rc<Shard>, p: u32, op: RespOp) -> Result<RespOutcome, String> {
    match shard.call(p, PartOp::Resp(op)).await {
        OpResult::Resp(outcome) => Ok(outcome),
        OpResult::Err(e) => Err(error_text(&e)),
        other => Err(format!("internal error: unexpected reply {other:?}")),
    }
}

/// An evring error as a Redis error line.
pub(super) fn error_text(e: &ApiError) -> String {
    match e.code {
        code::DISK_FULL => format!("-DISKFULL {}", e.message),
        code::PARTITION_UNAVAILABLE => format!("-UNAVAILABLE {}", e.message),
        code::SHUTTING_DOWN => format!("-SHUTDOWN {}", e.message),
        _ => e.message.clone(),
    }
}

/// Runs a stream command on the partition's owner.
pub(super) async fn run_op(p: &Partition, op: RespOp) -> OpResult {
    // The stream reads refuse a list, string or set (writes: the partition refuses them).
    let other_type = match &op {
        RespOp::Range { stream, .. } | RespOp::Len { stream } | RespOp::Info { stream, .. } => {
            p.is_other_type(stream)
        }
        RespOp::Tx(_)
        | RespOp::Read(_)
        | RespOp::List(_)
        | RespOp::Group(_)
        | RespOp::Copy(_)
        | RespOp::Value(_) => false,
    };
    if other_type {
        return OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, WRONGTYPE));
    }
    let outcome = match op {
        RespOp::Tx(writes) => RespOutcome::Tx(
            p.transaction(writes)
                .await
                .into_iter()
                .map(|r| r.map_err(super::resp_writes::write_error))
                .collect(),
        ),
        RespOp::Range {
            stream,
            start,
            end,
            count,
            reverse,
        } => match Box::pin(range_all(p, &stream, start, end, count, reverse)).await {
            Ok(entries) => RespOutcome::Entries(entries),
            Err(e) => return OpResult::Err(e.into()),
        },
        RespOp::Len { stream } => RespOutcome::Len(p.live_entries(&stream)),
        RespOp::Info { stream, full } => match p.stream_summary(&stream) {
            None => RespOutcome::Info(None),
            Some(summary) => {
                let mut entries = Vec::new();
                let reads = match full {
                    Some(count) => vec![(count, false)],
                    None => vec![(1, false), (1, true)],
                };
                for (count, reverse) in reads {
                    let all = (StreamId::ZERO, StreamId::MAX);
                    match Box::pin(p.range(&stream, all.0, all.1, count, reverse)).await {
                        Ok((read, _)) => entries.extend(read),
                        Err(e) => return OpResult::Err(e.into()),
                    }
                }
                RespOutcome::Info(Some((summary, entries)))
            }
        },
        RespOp::Read(op) => return Box::pin(super::resp_read::run_op(p, op)).await,
        RespOp::List(op) => return Box::pin(super::resp_lists::run_op(p, op)).await,
        RespOp::Group(op) => return Box::pin(super::resp_groups::run_op(p, op)).await,
        RespOp::Copy(op) => return Box::pin(super::resp_copy::run_op(p, op)).await,
        RespOp::Value(op) => return Box::pin(super::resp_values::run_op(p, op)).await,
    };
    OpResult::Resp(outcome)
}

/// The most bytes of entries one RESP range reply holds (XRANGE, XREVRANGE, each key of an
/// XREAD, LRANGE), as multiples of the partition's `max_read_bytes`: a longer reply is
/// refused, naming COUNT (docs/OPERATIONS.md, *Memory budget*).
pub const RANGE_REPLY_READS: usize = 8;

/// The whole range (up to `count`), in as many reads as the partition's read limits (bytes
/// and `max_read_count`) need: a read that returned entries is followed by another until
/// `count` are read or a read returns none. Refused past [`RANGE_REPLY_READS`] ×
/// `max_read_bytes` bytes.
pub(super) async fn range_all(
    p: &Partition,
    stream: &str,
    mut start: StreamId,
    mut end: StreamId,
    count: usize,
    reverse: bool,
) -> Result<Vec<(StreamId, RecordedEvent)>, StreamError> {
    let mut out = Vec::new();
    let budget = RANGE_REPLY_READS * p.max_read_bytes();
    let mut bytes = 0;
    loop {
        let want = count - out.len();
        let (got, _cut) = match p.range(stream, start, end, want, reverse).await {
            Ok(r) => r,
            Err(StreamError::StreamNotFound(_)) => return Ok(out),
            Err(e) => return Err(e),
        };
        let last = got.last().map(|(id, _)| *id);
        bytes += got
            .iter()
            .map(|(_, e)| crate::stream::reply_bytes(e))
            .sum::<usize>();
        if bytes > budget {
            return Err(StreamError::ReplyTooLarge { budget });
        }
        out.extend(got);
        match last {
            Some(id) if out.len() < count => {
                if reverse {
                    let Some(before) = id.predecessor() else {
                        return Ok(out);
                    };
                    end = before;
                } else {
                    let Some(after) = id.successor() else {
                        return Ok(out);
                    };
                    start = after;
                }
            }
            _ => return Ok(out),
        }
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with('+') {
        return None;
    }
    s.parse().ok()
}

/// An ID as XRANGE reads its bounds: `ms-seq`, `ms` (seq `missing_seq`), `-`, `+`.
pub(super) fn parse_id(b: &[u8], missing_seq: u64) -> Option<StreamId> {
    match b {
        b"-" => return Some(StreamId::ZERO),
        b"+" => return Some(StreamId::MAX),
        _ => {}
    }
    match b.iter().position(|&c| c == b'-') {
        None => Some(StreamId::new(parse_u64(b)?, missing_seq)),
        Some(i) => Some(StreamId::new(parse_u64(&b[..i])?, parse_u64(&b[i + 1..])?)),
    }
}

/// XADD's ID argument: `*`, `ms-*`, `ms-seq` or `ms`.
pub(super) fn parse_add_id(b: &[u8]) -> Option<IdSpec> {
    if b == b"*" {
        return Some(IdSpec::Auto);
    }
    if let Some(ms) = b.strip_suffix(b"-*") {
        return Some(IdSpec::Seq(parse_u64(ms)?));
    }
    if b == b"-" || b == b"+" {
        return None;
    }
    parse_id(b, 0).map(IdSpec::Exact)
}

/// The field list of an XADD entry in RESP form.
pub(super) fn encode_fields(fields: &[Vec<u8>]) -> Vec<u8> {
    // Sized at once: `*n` and each `$len` header take at most 23 bytes with their CRLF.
    let room = 23 + fields.iter().map(|f| f.len() + 25).sum::<usize>();
    let mut out = Vec::with_capacity(room);
    let mut r = Reply::new(&mut out, crate::resp::RespVersion::Resp2);
    r.array_len(fields.len());
    for f in fields {
        r.bulk(f);
    }
    out
}

/// What an entry's fields are made of: its event's type, data, metadata, value and id.
struct EntryParts<'a> {
    event_type: &'a [u8],
    data: &'a [u8],
    metadata: &'a [u8],
    value: f64,
    id: &'a [u8; 16],
}

impl<'a> EntryParts<'a> {
    fn of_event(e: &'a RecordedEvent) -> Self {
        EntryParts {
            event_type: e.event.event_type.as_bytes(),
            data: &e.event.data,
            metadata: &e.event.metadata,
            value: e.event.value,
            id: &e.event.id,
        }
    }

    fn of_record(r: &'a crate::journal::RecordRef<'a>) -> Self {
        EntryParts {
            event_type: r.event_type,
            data: r.data,
            metadata: r.metadata,
            value: r.value,
            id: &r.event_id,
        }
    }

    /// Whether the data is the fields' own encoding (an XADD entry's, as
    /// [`encode_fields`] wrote it).
    fn encoded(&self) -> bool {
        self.event_type == FIELDS_TYPE.as_bytes() && canonical_fields(self.data)
    }
}

/// An entry's fields: an XADD entry's own, or a native event's (see the module docs).
fn entry_fields(e: &EntryParts<'_>) -> Vec<Vec<u8>> {
    if e.event_type == FIELDS_TYPE.as_bytes() {
        let mut parser = RequestParser::new(RequestLimits {
            max_bulk_bytes: e.data.len(),
            max_request_bytes: e.data.len() + 1,
        });
        if let Ok(Parsed::Command { args, .. }) = parser.parse(e.data) {
            return args.to_vec();
        }
    }
    let mut f = vec![
        b"type".to_vec(),
        e.event_type.to_vec(),
        b"data".to_vec(),
        e.data.to_vec(),
    ];
    if !e.metadata.is_empty() {
        f.extend([b"metadata".to_vec(), e.metadata.to_vec()]);
    }
    if !e.value.is_nan() {
        f.extend([b"value".to_vec(), e.value.to_string().into_bytes()]);
    }
    if *e.id != [0; 16] {
        f.extend([b"id".to_vec(), crate::journal::hex(e.id).into_bytes()]);
    }
    f
}

/// Appends to `out` the fields of the entry a record holds, as a reply writes them (an
/// array of bulk strings: the same bytes in RESP2 and RESP3).
pub(super) fn encode_record_fields(out: &mut Vec<u8>, r: &crate::journal::RecordRef<'_>) {
    let mut reply = Reply::new(out, crate::resp::RespVersion::Resp2);
    write_fields(&mut reply, &EntryParts::of_record(r));
}

/// An entry's fields, `[field, value, …]`: an XADD entry's kept encoding as it is when it
/// is exactly that ([`canonical_fields`]), decoded and written again otherwise.
fn write_fields(r: &mut Reply<'_>, parts: &EntryParts<'_>) {
    if parts.encoded() {
        r.encoded(parts.data);
        return;
    }
    let fields = entry_fields(parts);
    r.array_len(fields.len());
    for f in &fields {
        r.bulk(f);
    }
}

async fn xlen(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    if req.args.len() != 2 {
        return Err(wrong_arity(b"xlen"));
    }
    let stream = stream_name(req.ctx, &req.args[1])?;
    match call(
        shard,
        &stream,
        RespOp::Len {
            stream: stream.clone(),
        },
    )
    .await?
    {
        RespOutcome::Len(n) => req.answer(|r| {
            r.int(n as i64);
        }),
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
}

/// XINFO STREAM key [FULL [COUNT n]], XINFO GROUPS key, XINFO CONSUMERS key group, XINFO
/// HELP.
async fn xinfo(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    let sub = args.get(1).map(|s| s.to_ascii_uppercase());
    match (sub.as_deref(), args.len()) {
        (Some(b"HELP"), 2) => {
            let lines = [
                "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CONSUMERS <key> <groupname>",
                "    Show consumers of <groupname>.",
                "GROUPS <key>",
                "    Show the stream consumer groups.",
                "STREAM <key> [FULL [COUNT <count>]",
                "    Show information about the stream.",
                "HELP",
                "    Print this help.",
            ];
            super::resp_commands::help(req, &lines);
            return Ok(());
        }
        (Some(b"HELP"), _) => return Err(wrong_arity(b"xinfo|help")),
        (Some(b"GROUPS"), 3) => return super::resp_groups::xinfo_groups(shard, req).await,
        (Some(b"GROUPS"), _) => return Err(wrong_arity(b"xinfo|groups")),
        (Some(b"CONSUMERS"), 4) => return super::resp_groups::xinfo_consumers(shard, req).await,
        (Some(b"CONSUMERS"), _) => return Err(wrong_arity(b"xinfo|consumers")),
        (Some(b"STREAM"), n) if n >= 3 => {}
        (Some(b"STREAM"), _) => return Err(wrong_arity(b"xinfo|stream")),
        (None, _) => return Err(wrong_arity(b"xinfo")),
        (Some(_), _) => {
            let sub = String::from_utf8_lossy(&args[1]).into_owned();
            return Err(format!("unknown subcommand '{sub}'. Try XINFO HELP."));
        }
    }
    // FULL [COUNT n]: the first n entries (10 by default, 0: all).
    let full = match &args[3..] {
        [] => None,
        [f] if f.eq_ignore_ascii_case(b"FULL") => Some(10),
        [f, c, n] if f.eq_ignore_ascii_case(b"FULL") && c.eq_ignore_ascii_case(b"COUNT") => {
            let n = integer(n)?;
            Some(if n <= 0 { usize::MAX } else { n as usize })
        }
        _ => return Err("syntax error".into()),
    };
    let stream = stream_name(req.ctx, &args[2])?;
    let info = match call(
        shard,
        &stream,
        RespOp::Info {
            stream: stream.clone(),
            full,
        },
    )
    .await?
    {
        RespOutcome::Info(info) => info,
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    };
    let Some((s, entries)) = info else {
        return Err("no such key".into());
    };
    let what = super::resp_groups::InfoWhat::Groups { full };
    let groups = super::resp_groups::group_infos(shard, &stream, what)
        .await?
        .unwrap_or_default();
    req.answer(|r| {
        r.map_len(if full.is_some() { 9 } else { 10 });
        r.bulk("length").int(s.length as i64);
        // evring keeps no radix tree: what Redis would show for nodes of 100 entries.
        let keys = s.length.div_ceil(100) as i64;
        r.bulk("radix-tree-keys").int(keys);
        r.bulk("radix-tree-nodes").int(keys + 1);
        r.bulk("last-generated-id").bulk(s.last_id.text());
        r.bulk("max-deleted-entry-id").bulk(s.max_deleted_id.text());
        r.bulk("entries-added").int(s.entries_added as i64);
        r.bulk("recorded-first-entry-id").bulk(s.first_id.text());
        if full.is_some() {
            r.bulk("entries");
            write_entries(r, &entries);
            r.bulk("groups");
            super::resp_groups::write_full_groups(r, &groups);
            return;
        }
        r.bulk("groups").int(groups.len() as i64);
        for (name, entry) in [
            ("first-entry", entries.first()),
            ("last-entry", entries.last()),
        ] {
            r.bulk(name);
            match entry {
                Some((id, e)) => write_entry(r, *id, e),
                None => {
                    r.null();
                }
            }
        }
    });
    Ok(())
}

/// An interval bound of XRANGE: `(` makes it exclusive.
fn parse_bound(b: &[u8], missing_seq: u64, start: bool) -> Result<StreamId, String> {
    match b.strip_prefix(b"(") {
        // `-` and `+` have nothing beyond them to exclude.
        Some(b"-" | b"+") => Err(format!(
            "invalid {} ID for the interval",
            if start { "start" } else { "end" }
        )),
        Some(rest) if !rest.is_empty() => {
            let id = parse_id(rest, missing_seq).ok_or(INVALID_ID)?;
            let moved = if start {
                id.successor()
            } else {
                id.predecessor()
            };
            moved.ok_or_else(|| {
                format!(
                    "invalid {} ID for the interval",
                    if start { "start" } else { "end" }
                )
            })
        }
        _ => parse_id(b, missing_seq).ok_or_else(|| INVALID_ID.to_string()),
    }
}

/// XRANGE key start end [COUNT n] (XREVRANGE key end start [COUNT n]).
async fn xrange(shard: &Rc<Shard>, req: &RespRequest, reverse: bool) -> Result<(), String> {
    let args = &req.args;
    let cmd: &[u8] = if reverse { b"xrevrange" } else { b"xrange" };
    if args.len() != 4 && args.len() != 6 {
        if args.len() < 4 {
            return Err(wrong_arity(cmd));
        }
        return Err("syntax error".into());
    }
    let (first, second) = if reverse {
        (&args[3], &args[2])
    } else {
        (&args[2], &args[3])
    };
    let start = parse_bound(first, 0, true)?;
    let end = parse_bound(second, u64::MAX, false)?;
    let mut count = usize::MAX;
    if args.len() == 6 {
        if !args[4].eq_ignore_ascii_case(b"COUNT") {
            return Err("syntax error".into());
        }
        let n = integer(&args[5])?;
        count = n.max(0) as usize;
    }
    let stream = stream_name(req.ctx, &args[1])?;
    let entries = if start > end || count == 0 {
        Vec::new()
    } else {
        let op = RespOp::Range {
            stream: stream.clone(),
            start,
            end,
            count,
            reverse,
        };
        match call(shard, &stream, op).await? {
            RespOutcome::Entries(e) => e,
            other => return Err(format!("internal error: unexpected reply {other:?}")),
        }
    };
    req.answer(|r| write_entries(r, &entries));
    Ok(())
}

/// Entries as XRANGE replies them: `[[id, [field, value, …]], …]`.
pub(super) fn write_entries(r: &mut Reply<'_>, entries: &[(StreamId, RecordedEvent)]) {
    r.array_len(entries.len());
    for (id, e) in entries {
        write_entry(r, *id, e);
    }
}

/// One entry: `[id, [field, value, …]]`. An XADD entry's fields are kept as the array's
/// own encoding ([`encode_fields`]): written as they are when they are exactly that
/// ([`canonical_fields`]), decoded and written again otherwise.
pub(super) fn write_entry(r: &mut Reply<'_>, id: StreamId, e: &RecordedEvent) {
    r.array_len(2).bulk(id.text());
    write_fields(r, &EntryParts::of_event(e));
}

/// Whether `data` is exactly what [`encode_fields`] writes for an even number (two at
/// least) of fields: `*n` and each `$len` in canonical digits, every terminator `\r\n`,
/// nothing after the last field. Such bytes are the reply's encoding of the fields, in RESP2
/// and RESP3 alike, and [`entry_fields`] reads back exactly those fields from them.
fn canonical_fields(data: &[u8]) -> bool {
    /// A canonical decimal (no sign, no leading zero) ended by `\r\n` at `data[*at..]`.
    fn number(data: &[u8], at: &mut usize) -> Option<usize> {
        let digits = data[*at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &data[*at..*at + digits];
        if digits == 0 || digits > 19 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        let n = usize::try_from(crate::resp::string2ll(text)?).ok()?;
        *at += digits;
        if data.get(*at..*at + 2)? != b"\r\n" {
            return None;
        }
        *at += 2;
        Some(n)
    }
    let mut at = 1;
    if data.first() != Some(&b'*') {
        return false;
    }
    let Some(count) = number(data, &mut at) else {
        return false;
    };
    if count < 2 || count % 2 != 0 {
        return false;
    }
    for _ in 0..count {
        if data.get(at) != Some(&b'$') {
            return false;
        }
        at += 1;
        let Some(len) = number(data, &mut at) else {
            return false;
        };
        let Some(end) = at.checked_add(len) else {
            return false;
        };
        if data.get(end..end + 2) != Some(b"\r\n") {
            return false;
        }
        at = end + 2;
    }
    at == data.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Event;
    use crate::resp::RespVersion;

    fn entry(event_type: &str, data: &[u8]) -> RecordedEvent {
        RecordedEvent {
            stream: "s".into(),
            stream_version: 0,
            lsn: 0,
            partition: 0,
            event: Event {
                id: [0; 16],
                event_type: event_type.into(),
                timestamp_ns: 1,
                value: f64::NAN,
                data: data.to_vec(),
                metadata: Vec::new(),
            },
        }
    }

    /// What `write_entry` wrote before it copied canonical fields as they are: every
    /// entry's fields decoded and encoded again.
    fn decoded_and_encoded(id: StreamId, e: &RecordedEvent, version: RespVersion) -> Vec<u8> {
        let mut out = Vec::new();
        let mut r = Reply::new(&mut out, version);
        let fields = entry_fields(&EntryParts::of_event(e));
        r.array_len(2).bulk(id.to_string()).array_len(fields.len());
        for f in &fields {
            r.bulk(f);
        }
        out
    }

    /// Entries as `write_entry` writes them from an event, and as the owner encodes them
    /// from the journal record or ring slot holding the event, are the same bytes.
    #[test]
    fn entries_are_written_as_decoding_and_encoding_them_again_would() {
        let fields = |f: &[&[u8]]| encode_fields(&f.iter().map(|x| x.to_vec()).collect::<Vec<_>>());
        let canonical = [
            fields(&[b"a", b"1"]),
            fields(&[b"", b""]),
            fields(&[b"field", &[0u8, 13, 10, 255], b"x", &[b'y'; 300]]),
        ];
        let other: [&[u8]; 10] = [
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\nX", // bytes after the fields
            b"*02\r\n$1\r\na\r\n$1\r\nb\r\n", // a leading zero
            b"*1\r\n$1\r\na\r\n",             // an odd count
            b"*2\r\n$1\r\na\r\n$01\r\nb\r\n", // a leading zero in a length
            b"*2\r\n$1\r\na\r\n$1\r\nbXY",    // no terminator
            b"*2\r\n$1\r\na\r\n$5\r\nb\r\n",  // a length past the end
            b"*2\r\n$1\r\na\r\n$-1\r\n",      // a null
            b"*0\r\n",                        // no fields
            b"hello world",                   // an inline command
            b"",
        ];
        let id = StreamId::new(1_700_000_000_000, 7);
        for data in canonical.iter().map(Vec::as_slice).chain(other) {
            assert_eq!(
                canonical_fields(data),
                canonical.iter().any(|c| c == data),
                "{data:?}"
            );
            for ty in [FIELDS_TYPE, "other"] {
                let plain = entry(ty, data);
                // A native event with every optional field.
                let mut full = entry(ty, data);
                full.event.metadata = b"meta".to_vec();
                full.event.value = 2.5;
                full.event.id = [7; 16];
                for e in [plain, full] {
                    let record = crate::journal::RecordRef {
                        kind: crate::journal::format::RECORD_KIND_EVENT,
                        id: None,
                        stream_version: e.stream_version,
                        timestamp_ns: e.event.timestamp_ns,
                        event_id: e.event.id,
                        value: e.event.value,
                        stream: e.stream.as_bytes(),
                        event_type: e.event.event_type.as_bytes(),
                        data: &e.event.data,
                        metadata: &e.event.metadata,
                    };
                    // What the owner encodes for a RESP reply (`EntryForm::Resp`).
                    let mut fields = Vec::new();
                    encode_record_fields(&mut fields, &record);
                    for version in [RespVersion::Resp2, RespVersion::Resp3] {
                        let mut out = Vec::new();
                        write_entry(&mut Reply::new(&mut out, version), id, &e);
                        assert_eq!(out, decoded_and_encoded(id, &e, version), "{ty} {data:?}");
                        let mut encoded = Vec::new();
                        Reply::new(&mut encoded, version)
                            .array_len(2)
                            .bulk(id.text())
                            .encoded(&fields);
                        assert_eq!(encoded, out, "record fields, {ty} {data:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_id_text_is_ms_dash_seq_in_decimal() {
        for (ms, seq) in [(0, 0), (0, 1), (1, 0), (123, 4567), (u64::MAX, u64::MAX)] {
            let id = StreamId::new(ms, seq);
            let expected = format!("{ms}-{seq}");
            assert_eq!(id.text().as_ref(), expected.as_bytes());
            assert_eq!(id.to_string(), expected);
        }
    }
}
