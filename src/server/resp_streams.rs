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
//!   form (`*<2n>\r\n` then each field and value as `$<len>\r\n<bytes>\r\n`), read back by
//!   the RESP request parser;
//! - any other event (a native APPEND) reads as the fields `type` and `data`, then
//!   `metadata`, `value` and `id` (hex) when it has them.
//!
//! Writes are replied to once their frame is durable, as APPEND is.

use std::rc::Rc;

use super::api_error::ApiError;
use super::resp_commands::{unknown_command, wrong_arity};
use super::resp_conn::{Ctx, RespRequest};
use super::route::{OpResult, PartOp, Shard};
use crate::protocol::{code, expected, partition_of, Event, RecordedEvent, StreamId};
use crate::resp::{Parsed, Reply, RequestLimits, RequestParser};
use crate::stream::{ChangeRequest, IdSpec, Partition, StreamError, StreamSummary, Trim};

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
    /// XADD: one entry; `make` false (NOMKSTREAM): only to a stream that exists; then the
    /// trim, if any.
    Add {
        stream: String,
        id: IdSpec,
        event: Event,
        make: bool,
        trim: Option<Trim>,
    },
    /// XDEL, XTRIM, DEL, FLUSHDB: a change journaled as one record.
    Change {
        stream: String,
        request: ChangeRequest,
    },
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
    /// XINFO STREAM.
    Info {
        stream: String,
    },
    /// XREAD's part on one partition.
    Read(super::resp_read::ReadOp),
}

/// What it answers.
#[derive(Debug)]
pub enum RespOutcome {
    /// The new entry's ID; `None`: NOMKSTREAM and no stream.
    Added(Option<StreamId>),
    Entries(Vec<(StreamId, RecordedEvent)>),
    Len(u64),
    /// Entries (or streams) a change deleted.
    Count(u64),
    /// A stream's summary and its first and last entries; `None`: no stream.
    Info(Option<(StreamSummary, Vec<(StreamId, RecordedEvent)>)>),
    Read(super::resp_read::ReadOutcome),
}

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
    let name = req.args[0].to_ascii_uppercase();
    let result = match name.as_slice() {
        b"XADD" => xadd(&shard, &req).await,
        b"XLEN" => xlen(&shard, &req).await,
        b"XRANGE" => xrange(&shard, &req, false).await,
        b"XREVRANGE" => xrange(&shard, &req, true).await,
        b"XDEL" => xdel(&shard, &req).await,
        b"XINFO" => Box::pin(xinfo(&shard, &req)).await,
        b"XTRIM" => xtrim(&shard, &req).await,
        b"DEL" => del(&shard, &req, b"del").await,
        b"UNLINK" => del(&shard, &req, b"unlink").await,
        b"FLUSHDB" => flush(&shard, &req, false).await,
        b"FLUSHALL" => flush(&shard, &req, true).await,
        b"XREAD" => Box::pin(super::resp_read::xread(&shard, &req)).await,
        b"DBSIZE" | b"EXISTS" | b"TYPE" | b"KEYS" | b"SCAN" => {
            Box::pin(super::resp_keys::run(&shard, &req, &name)).await
        }
        b"INFO" | b"CONFIG" => Box::pin(super::resp_info::run(&shard, &req, &name)).await,
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
async fn call(shard: &Rc<Shard>, stream: &str, op: RespOp) -> Result<RespOutcome, String> {
    let p = partition_of(stream, shard.shared.partitions);
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
    let outcome = match op {
        RespOp::Change { stream, request } => match p.change(&stream, request).await {
            Ok(n) => RespOutcome::Count(n),
            Err(e) => return OpResult::Err(e.into()),
        },
        RespOp::Add {
            stream,
            id,
            event,
            make,
            trim,
        } => {
            let expected = if make {
                expected::ANY
            } else {
                expected::STREAM_EXISTS
            };
            match p.append_with_id(&stream, expected, vec![event], id).await {
                Ok(a) => {
                    let ids = p.stream_ids(&stream, a.first_version..a.first_version + 1);
                    if let Some(t) = trim {
                        if let Err(e) = p.change(&stream, ChangeRequest::Trim(t)).await {
                            return OpResult::Err(e.into());
                        }
                    }
                    RespOutcome::Added(ids.first().copied())
                }
                Err(StreamError::WrongExpectedVersion { .. }) if !make => RespOutcome::Added(None),
                Err(e) => return OpResult::Err(add_error(e)),
            }
        }
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
        RespOp::Info { stream } => match p.stream_summary(&stream) {
            None => RespOutcome::Info(None),
            Some(summary) => {
                let mut ends = Vec::new();
                for reverse in [false, true] {
                    match Box::pin(p.range(&stream, StreamId::ZERO, StreamId::MAX, 1, reverse))
                        .await
                    {
                        Ok((entries, _)) => ends.extend(entries),
                        Err(e) => return OpResult::Err(e.into()),
                    }
                }
                RespOutcome::Info(Some((summary, ends)))
            }
        },
        RespOp::Read(op) => return Box::pin(super::resp_read::run_op(p, op)).await,
    };
    OpResult::Resp(outcome)
}

/// XADD's errors in Redis's words.
fn add_error(e: StreamError) -> ApiError {
    let text = match &e {
        StreamError::IdNotAbove { .. } => {
            "The ID specified in XADD is equal or smaller than the target stream top item"
        }
        StreamError::IdZero => "The ID specified in XADD must be greater than 0-0",
        StreamError::IdsExhausted { .. } => {
            "The stream has exhausted the last possible ID, unable to add more items"
        }
        _ => return e.into(),
    };
    ApiError::new(code::INVALID_ARGUMENT, text.to_string())
}

/// The whole range (up to `count`), in as many reads as the byte budget needs.
pub(super) async fn range_all(
    p: &Partition,
    stream: &str,
    mut start: StreamId,
    mut end: StreamId,
    count: usize,
    reverse: bool,
) -> Result<Vec<(StreamId, RecordedEvent)>, StreamError> {
    let mut out = Vec::new();
    loop {
        let want = count - out.len();
        let (got, cut) = match p.range(stream, start, end, want, reverse).await {
            Ok(r) => r,
            Err(StreamError::StreamNotFound(_)) => return Ok(out),
            Err(e) => return Err(e),
        };
        let last = got.last().map(|(id, _)| *id);
        out.extend(got);
        match last {
            Some(id) if cut && out.len() < count => {
                if reverse {
                    let Some(before) = decrement(id) else {
                        return Ok(out);
                    };
                    end = before;
                } else {
                    let Some(after) = increment(id) else {
                        return Ok(out);
                    };
                    start = after;
                }
            }
            _ => return Ok(out),
        }
    }
}

pub(super) fn increment(id: StreamId) -> Option<StreamId> {
    match id.seq.checked_add(1) {
        Some(seq) => Some(StreamId::new(id.ms, seq)),
        None => id.ms.checked_add(1).map(|ms| StreamId::new(ms, 0)),
    }
}

fn decrement(id: StreamId) -> Option<StreamId> {
    match id.seq.checked_sub(1) {
        Some(seq) => Some(StreamId::new(id.ms, seq)),
        None => id.ms.checked_sub(1).map(|ms| StreamId::new(ms, u64::MAX)),
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
fn parse_add_id(b: &[u8]) -> Option<IdSpec> {
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
fn encode_fields(fields: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut r = Reply::new(&mut out, crate::resp::RespVersion::Resp2);
    r.array_len(fields.len());
    for f in fields {
        r.bulk(f);
    }
    out
}

/// An entry's fields: an XADD entry's own, or a native event's (see the module docs).
fn entry_fields(e: &RecordedEvent) -> Vec<Vec<u8>> {
    let ev = &e.event;
    if ev.event_type == FIELDS_TYPE {
        let mut parser = RequestParser::new(RequestLimits {
            max_bulk_bytes: ev.data.len(),
            max_request_bytes: ev.data.len() + 1,
        });
        if let Ok(Parsed::Command { args, .. }) = parser.parse(&ev.data) {
            return args.to_vec();
        }
    }
    let mut f = vec![
        b"type".to_vec(),
        ev.event_type.as_bytes().to_vec(),
        b"data".to_vec(),
        ev.data.clone(),
    ];
    if !ev.metadata.is_empty() {
        f.extend([b"metadata".to_vec(), ev.metadata.clone()]);
    }
    if !ev.value.is_nan() {
        f.extend([b"value".to_vec(), ev.value.to_string().into_bytes()]);
    }
    if ev.id != [0; 16] {
        f.extend([b"id".to_vec(), crate::journal::hex(&ev.id).into_bytes()]);
    }
    f
}

/// XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id field value …
async fn xadd(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 5 {
        return Err(wrong_arity(b"xadd"));
    }
    let mut make = true;
    let mut options = TrimOptions::default();
    let mut i = 2;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"NOMKSTREAM") {
            make = false;
            i += 1;
        } else if let Some(next) = options.parse(args, i)? {
            i = next;
        } else {
            break;
        }
    }
    if i >= args.len() {
        return Err(wrong_arity(b"xadd"));
    }
    let trim = options.finish()?;
    let fields = &args[i + 1..];
    if fields.is_empty() || fields.len() % 2 != 0 {
        return Err(wrong_arity(b"xadd"));
    }
    let id = parse_add_id(&args[i]).ok_or(INVALID_ID)?;
    let stream = stream_name(req.ctx, &args[1])?;
    let event = Event {
        id: [0; 16],
        event_type: FIELDS_TYPE.into(),
        timestamp_ns: 0,
        value: f64::NAN,
        data: encode_fields(fields),
        metadata: Vec::new(),
    };
    let op = RespOp::Add {
        stream: stream.clone(),
        id,
        event,
        make,
        trim,
    };
    match call(shard, &stream, op).await? {
        RespOutcome::Added(Some(id)) => req.answer(|r| {
            r.bulk(id.to_string());
        }),
        RespOutcome::Added(None) => req.answer(|r| {
            r.null();
        }),
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
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

/// Redis's `stream-node-max-entries` default: a `~` trim deletes whole multiples of it.
const NODE_ENTRIES: u64 = 100;

/// The trim options of XADD and XTRIM as they are read: `MAXLEN|MINID [=|~] threshold`
/// and `LIMIT count`.
#[derive(Default)]
struct TrimOptions {
    maxlen: Option<u64>,
    minid: Option<StreamId>,
    approx: bool,
    limit: Option<u64>,
}

impl TrimOptions {
    /// Reads the option at `args[i]`, if it is one: the index after it.
    fn parse(&mut self, args: &[Vec<u8>], i: usize) -> Result<Option<usize>, String> {
        let name = args[i].to_ascii_uppercase();
        let value = |at: usize| args.get(at).ok_or_else(|| "syntax error".to_string());
        match name.as_slice() {
            b"MAXLEN" | b"MINID" => {
                let mut at = i + 1;
                let op = value(at)?;
                if op == b"~" || op == b"=" {
                    self.approx = op == b"~";
                    at += 1;
                }
                let v = value(at)?;
                if name == b"MAXLEN" {
                    let n = integer(v)?;
                    if n < 0 {
                        return Err("The MAXLEN argument must be >= 0.".into());
                    }
                    self.maxlen = Some(n as u64);
                } else {
                    self.minid = Some(parse_id(v, 0).ok_or(INVALID_ID)?);
                }
                Ok(Some(at + 1))
            }
            b"LIMIT" => {
                let n = integer(value(i + 1)?)?;
                if n < 0 {
                    return Err("The LIMIT argument must be >= 0.".into());
                }
                self.limit = Some(n as u64);
                Ok(Some(i + 2))
            }
            _ => Ok(None),
        }
    }

    /// The trim asked for, checked as Redis checks it.
    fn finish(self) -> Result<Option<Trim>, String> {
        if self.maxlen.is_some() && self.minid.is_some() {
            return Err(
                "syntax error, MAXLEN and MINID options at the same time are not compatible".into(),
            );
        }
        if self.limit.is_some() && !self.approx {
            return Err("syntax error, LIMIT cannot be used without the special ~ option".into());
        }
        if self.maxlen.is_none() && self.minid.is_none() {
            return Ok(None);
        }
        let (unit, max_remove) = if self.approx {
            let limit = self.limit.unwrap_or(100 * NODE_ENTRIES);
            (NODE_ENTRIES, (limit > 0).then_some(limit))
        } else {
            (1, None)
        };
        Ok(Some(Trim {
            keep_last: self.maxlen,
            min_id: self.minid,
            unit,
            max_remove,
        }))
    }
}

fn integer(b: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| "value is not an integer or out of range".to_string())
}

/// XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT count].
async fn xtrim(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 4 {
        return Err(wrong_arity(b"xtrim"));
    }
    let mut options = TrimOptions::default();
    let mut i = 2;
    while i < args.len() {
        i = options.parse(args, i)?.ok_or("syntax error")?;
    }
    let trim = options.finish()?.ok_or("syntax error")?;
    let stream = stream_name(req.ctx, &args[1])?;
    let n = change(shard, &stream, ChangeRequest::Trim(trim)).await?;
    req.answer(|r| {
        r.int(n as i64);
    });
    Ok(())
}

/// XDEL key id [id …].
async fn xdel(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 3 {
        return Err(wrong_arity(b"xdel"));
    }
    let ids = args[2..]
        .iter()
        .map(|a| parse_id(a, 0).filter(|_| a != b"-" && a != b"+"))
        .collect::<Option<Vec<_>>>()
        .ok_or(INVALID_ID)?;
    let stream = stream_name(req.ctx, &args[1])?;
    let n = change(shard, &stream, ChangeRequest::Ids(ids)).await?;
    req.answer(|r| {
        r.int(n as i64);
    });
    Ok(())
}

/// DEL / UNLINK key [key …]: the streams deleted.
async fn del(shard: &Rc<Shard>, req: &RespRequest, name: &[u8]) -> Result<(), String> {
    if req.args.len() < 2 {
        return Err(wrong_arity(name));
    }
    let mut n = 0;
    for key in &req.args[1..] {
        let stream = stream_name(req.ctx, key)?;
        n += change(shard, &stream, ChangeRequest::DeleteStream).await?;
    }
    req.answer(|r| {
        r.int(n as i64);
    });
    Ok(())
}

/// FLUSHDB / FLUSHALL [ASYNC|SYNC]: every stream of the database (of every database), in
/// every partition.
async fn flush(shard: &Rc<Shard>, req: &RespRequest, all: bool) -> Result<(), String> {
    let args = &req.args;
    let mode_ok = |m: &Vec<u8>| m.eq_ignore_ascii_case(b"ASYNC") || m.eq_ignore_ascii_case(b"SYNC");
    if args.len() > 2 || args.get(1).is_some_and(|m| !mode_ok(m)) {
        return Err("syntax error".into());
    }
    let dbs = if all {
        0..super::resp_conn::DATABASES
    } else {
        req.ctx.db..req.ctx.db + 1
    };
    for db in dbs {
        let prefix = if db == 0 {
            String::new()
        } else {
            format!("\0{db}\0")
        };
        for p in 0..shard.shared.partitions {
            let op = RespOp::Change {
                stream: prefix.clone(),
                request: ChangeRequest::DeleteDatabase,
            };
            match shard.call(p, PartOp::Resp(op)).await {
                OpResult::Resp(_) => {}
                OpResult::Err(e) => return Err(error_text(&e)),
                other => return Err(format!("internal error: unexpected reply {other:?}")),
            }
        }
    }
    req.answer(|r| {
        r.ok();
    });
    Ok(())
}

/// XINFO STREAM key, XINFO HELP (FULL, GROUPS and CONSUMERS come with consumer groups).
async fn xinfo(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    let sub = args.get(1).map(|s| s.to_ascii_uppercase());
    match (sub.as_deref(), args.len()) {
        (Some(b"HELP"), 2) => {
            let lines = [
                "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "STREAM <key>",
                "    Show information about the stream.",
                "HELP",
                "    Print this help.",
            ];
            super::resp_commands::help(req, &lines);
            return Ok(());
        }
        (Some(b"HELP"), _) => return Err(wrong_arity(b"xinfo|help")),
        (Some(b"STREAM"), 3) => {}
        (Some(b"STREAM"), n) if n > 3 => {
            return Err("XINFO STREAM FULL is not available on this server yet".into())
        }
        (Some(b"STREAM"), _) => return Err(wrong_arity(b"xinfo|stream")),
        (None, _) => return Err(wrong_arity(b"xinfo")),
        (Some(_), _) => {
            let sub = String::from_utf8_lossy(&args[1]).into_owned();
            return Err(format!("unknown subcommand '{sub}'. Try XINFO HELP."));
        }
    }
    let stream = stream_name(req.ctx, &args[2])?;
    let info = match call(
        shard,
        &stream,
        RespOp::Info {
            stream: stream.clone(),
        },
    )
    .await?
    {
        RespOutcome::Info(info) => info,
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    };
    let Some((s, ends)) = info else {
        return Err("no such key".into());
    };
    req.answer(|r| {
        r.map_len(10);
        r.bulk("length").int(s.length as i64);
        // evring keeps no radix tree: what Redis would show for nodes of 100 entries.
        let keys = s.length.div_ceil(100) as i64;
        r.bulk("radix-tree-keys").int(keys);
        r.bulk("radix-tree-nodes").int(keys + 1);
        r.bulk("last-generated-id").bulk(s.last_id.to_string());
        r.bulk("max-deleted-entry-id")
            .bulk(s.max_deleted_id.to_string());
        r.bulk("entries-added").int(s.entries_added as i64);
        r.bulk("recorded-first-entry-id")
            .bulk(s.first_id.to_string());
        r.bulk("groups").int(0);
        for (name, entry) in [("first-entry", ends.first()), ("last-entry", ends.last())] {
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

/// Runs a change on the partition of `stream`: what it deleted.
async fn change(shard: &Rc<Shard>, stream: &str, request: ChangeRequest) -> Result<u64, String> {
    let op = RespOp::Change {
        stream: stream.to_string(),
        request,
    };
    match call(shard, stream, op).await? {
        RespOutcome::Count(n) => Ok(n),
        other => Err(format!("internal error: unexpected reply {other:?}")),
    }
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
            let moved = if start { increment(id) } else { decrement(id) };
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
        let n = std::str::from_utf8(&args[5])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or("value is not an integer or out of range")?;
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

/// One entry: `[id, [field, value, …]]`.
fn write_entry(r: &mut Reply<'_>, id: StreamId, e: &RecordedEvent) {
    let fields = entry_fields(e);
    r.array_len(2).bulk(id.to_string()).array_len(fields.len());
    for f in &fields {
        r.bulk(f);
    }
}
