//! The RESP port's writes: XADD, XDEL, XTRIM, XSETID, DEL/UNLINK, LPUSH/RPUSH, SET, SADD
//! and FLUSHDB/FLUSHALL, each read into [`TxWrite`]s and run as a partition transaction
//! (`crate::stream::Partition::transaction`), then answered from what each write did.
//!
//! Outside MULTI a command's writes run as one transaction per partition they touch (XADD
//! with a trim is an append and a trim placed together, so they are durable together). In
//! EXEC, every run of consecutive write commands is one transaction on the transaction's
//! one partition ([`super::resp_multi`]): durable together, visible together.
//!
//! SET is a deletion of the key, whatever it holds, and an append of one `$set` event: one
//! transaction, so one frame — the old value and the new are never both gone or both there
//! after a crash. SADD is a [`TxWrite::AddMembers`] of its distinct members.
//!
//! Every write's reply waits until its frame is durable, as APPEND's does.

use std::rc::Rc;

use super::api_error::ApiError;
use super::conn::Permits;
use super::resp_commands::wrong_arity;
use super::resp_conn::RespRequest;
use super::resp_streams::{
    call, encode_fields, error_text, integer, parse_add_id, parse_id, stream_name, RespOp,
    RespOutcome, FIELDS_TYPE, INVALID_ID, WRONGTYPE,
};
use super::route::{OpResult, PartOp, Shard};
use crate::protocol::{code, expected, partition_of, Event, StreamId};
use crate::stream::{
    ChangeRequest, IdSpec, StreamError, Trim, TxDone, TxWrite, LPUSH_TYPE, RPUSH_TYPE, SET_TYPE,
};

/// A write command read: its writes (with the stream whose partition runs each) and how it
/// is answered.
pub(super) struct Write {
    pub(super) writes: Vec<TxWrite>,
    pub(super) answer: Answer,
}

/// How a write command is answered from its writes' results.
#[derive(Clone, Copy, Debug)]
pub(super) enum Answer {
    /// XADD: the first write's stream ID, nil for NOMKSTREAM and no stream (`make` false).
    Added { make: bool },
    /// XDEL, XTRIM, DEL/UNLINK: the sum of what the changes deleted.
    Count,
    /// XSETID: OK, or no such key.
    SetId,
    /// LPUSH/RPUSH: the list's length.
    Pushed,
    /// SET: OK once the second write (the append) is done.
    Set,
    /// SADD: the members added.
    MembersAdded,
    /// FLUSHDB/FLUSHALL: OK.
    Flushed,
}

/// Whether `name` (upper-cased) is a write command of this module.
pub(super) fn is_write(name: &[u8]) -> bool {
    matches!(
        name,
        b"XADD"
            | b"XDEL"
            | b"XTRIM"
            | b"XSETID"
            | b"DEL"
            | b"UNLINK"
            | b"LPUSH"
            | b"RPUSH"
            | b"SET"
            | b"SADD"
            | b"FLUSHDB"
            | b"FLUSHALL"
    )
}

/// Reads write command `name` (upper-cased, [`is_write`]).
pub(super) fn parse(shard: &Shard, req: &RespRequest, name: &[u8]) -> Result<Write, String> {
    let node_entries = shard.shared.resp.node_max_entries();
    match name {
        b"XADD" => xadd(req, node_entries),
        b"XDEL" => xdel(req),
        b"XTRIM" => xtrim(req, node_entries),
        b"XSETID" => xsetid(req),
        b"DEL" | b"UNLINK" => del(req, name),
        b"LPUSH" | b"RPUSH" => push(req, name),
        b"SET" => set(req),
        b"SADD" => sadd(req),
        b"FLUSHDB" | b"FLUSHALL" => flush(req, name == b"FLUSHALL"),
        _ => unreachable!("not a write command"),
    }
}

/// Runs and answers write command `name` outside a transaction.
pub(super) async fn run(shard: &Rc<Shard>, req: &RespRequest, name: &[u8]) -> Result<(), String> {
    if name == b"XADD" {
        let (a, trim) = xadd_parts(req, shard.shared.resp.node_max_entries())?;
        if trim.is_none() {
            // An XADD without trimming: one append, the path native APPEND takes (no
            // transaction of one write to set up, collect and take apart).
            let p = partition_of(&a.stream, shard.shared.partitions);
            let op = PartOp::Append {
                stream: a.stream,
                expected_version: a.expected_version,
                events: a.events,
                id: a.id,
            };
            let added = match shard.call(p, op).await {
                OpResult::Appended(Ok((_, first_id))) => {
                    Ok(first_id.expect("XADD is never a retry"))
                }
                OpResult::Appended(Err(e)) => Err(write_error(e)),
                OpResult::Err(e) => Err(e),
                other => return Err(format!("internal error: unexpected reply {other:?}")),
            };
            answer_added(req, a.make, added);
            return Ok(());
        }
        let write = xadd_write(a, trim);
        let results = run_writes(shard, write.writes).await?;
        answer(req, write.answer, &results);
        return Ok(());
    }
    let write = parse(shard, req, name)?;
    let results = run_writes(shard, write.writes).await?;
    answer(req, write.answer, &results);
    Ok(())
}

/// An XADD read: its append, and whether it may make its stream.
struct LoneAppend {
    make: bool,
    stream: String,
    expected_version: i64,
    events: Vec<Event>,
    id: IdSpec,
}

/// An XADD without trimming, outside a transaction, answered without a task when it can be
/// ([`super::placed`]); anything else, and an XADD that cannot be placed now, is given back
/// for [`run`] in a task (which parses it again: parsing has no effects).
pub(super) fn xadd_now(
    shard: &Rc<Shard>,
    req: RespRequest,
    permits: Permits,
    clock: &super::conn::LazyClock,
) -> Option<(RespRequest, Permits)> {
    if !req.tx.is_plain() || !req.args[0].eq_ignore_ascii_case(b"XADD") {
        return Some((req, permits));
    }
    let node_entries = shard.shared.resp.node_max_entries();
    let Ok((a, None)) = xadd_parts(&req, node_entries) else {
        return Some((req, permits));
    };
    req.start_reading(clock.now());
    let reply = super::placed::Reply::Resp { req, make: a.make };
    let not_now = shard.append_now(reply, a.stream, a.expected_version, a.events, a.id, permits)?;
    let super::placed::Reply::Resp { req, .. } = not_now.reply else {
        unreachable!("given back as it was given")
    };
    Some((req, not_now.permits))
}

/// Answers an XADD: its entry's stream ID; nil for NOMKSTREAM (`make` false) and no stream.
pub(super) fn answer_added(req: &RespRequest, make: bool, added: Result<StreamId, ApiError>) {
    match added {
        Ok(id) => req.answer(|r| {
            r.bulk(id.text());
        }),
        Err(e) if !make && e.code == code::WRONG_EXPECTED_VERSION => req.answer(|r| {
            r.null();
        }),
        Err(e) => req.answer(|r| {
            r.error(error_text(&e));
        }),
    }
}

/// The stream whose partition runs a write (a database's prefix for a database deletion,
/// which is sent to every partition by [`flush`]).
fn stream_of(w: &TxWrite) -> &str {
    w.stream()
}

/// Runs writes as transactions, one per run of writes to one partition, in order.
pub(super) async fn run_writes(
    shard: &Rc<Shard>,
    writes: Vec<TxWrite>,
) -> Result<Vec<Result<TxDone, ApiError>>, String> {
    let partitions = shard.shared.partitions;
    let mut out = Vec::with_capacity(writes.len());
    let mut batch: Vec<TxWrite> = Vec::new();
    let mut batch_partition = None;
    let mut writes = writes.into_iter().peekable();
    while let Some(w) = writes.next() {
        let p = match &w {
            TxWrite::Change {
                request: ChangeRequest::DeleteDatabase,
                ..
            } => None,
            other => Some(partition_of(stream_of(other), partitions)),
        };
        batch_partition = batch_partition.or(p);
        batch.push(w);
        let next = writes
            .peek()
            .map(|n| Some(partition_of(stream_of(n), partitions)));
        if p.is_none() || next != Some(batch_partition) {
            let stream = stream_of(&batch[0]).to_string();
            let op = RespOp::Tx(std::mem::take(&mut batch));
            match p {
                Some(_) => match call(shard, &stream, op).await? {
                    RespOutcome::Tx(results) => out.extend(results),
                    other => return Err(format!("internal error: unexpected reply {other:?}")),
                },
                None => out.push(flush_everywhere(shard, op).await),
            }
            batch_partition = None;
        }
    }
    Ok(out)
}

/// A database deletion on every partition: what they deleted together.
async fn flush_everywhere(shard: &Rc<Shard>, op: RespOp) -> Result<TxDone, ApiError> {
    let RespOp::Tx(writes) = op else {
        unreachable!("a database deletion is a transaction of one write")
    };
    let mut deleted = 0;
    for p in 0..shard.shared.partitions {
        let copy = writes
            .iter()
            .map(|w| match w {
                TxWrite::Change { stream, request } => TxWrite::Change {
                    stream: stream.clone(),
                    request: request.clone(),
                },
                TxWrite::Append { .. } | TxWrite::Group { .. } | TxWrite::AddMembers { .. } => {
                    unreachable!("a database deletion is a change")
                }
            })
            .collect();
        let op = super::route::PartOp::Resp(RespOp::Tx(copy));
        match shard.call(p, op).await {
            super::route::OpResult::Resp(RespOutcome::Tx(results)) => {
                for r in results {
                    if let TxDone::Changed(n) = r? {
                        deleted += n;
                    }
                }
            }
            super::route::OpResult::Err(e) => return Err(e),
            other => {
                return Err(ApiError::new(
                    code::PARTITION_UNAVAILABLE,
                    format!("internal error: unexpected reply {other:?}"),
                ))
            }
        }
    }
    Ok(TxDone::Changed(deleted))
}

/// Answers a write command from its writes' results.
pub(super) fn answer(req: &RespRequest, how: Answer, results: &[Result<TxDone, ApiError>]) {
    let text = |e: &ApiError| error_text(e);
    match how {
        Answer::Added { make } => match results.first() {
            Some(Ok(TxDone::Appended { ids, .. })) => answer_added(req, make, Ok(ids[0])),
            Some(Err(e)) => answer_added(req, make, Err(e.clone())),
            other => unreachable!("XADD's first write is an append: {other:?}"),
        },
        Answer::Count | Answer::SetId | Answer::Flushed => {
            let mut n = 0;
            for r in results {
                match r {
                    Ok(TxDone::Changed(k)) => n += k,
                    Ok(TxDone::Appended { .. } | TxDone::Group(_)) => unreachable!("a change"),
                    Err(e) => {
                        let t = text(e);
                        req.answer(|r| {
                            r.error(t);
                        });
                        return;
                    }
                }
            }
            req.answer(|r| match how {
                Answer::SetId if n == 0 => {
                    r.error("no such key");
                }
                Answer::SetId | Answer::Flushed => {
                    r.ok();
                }
                _ => {
                    r.int(n as i64);
                }
            });
        }
        Answer::Pushed => match results.first() {
            Some(Ok(TxDone::Appended { live, .. })) => {
                let live = *live;
                req.answer(|r| {
                    r.int(live as i64);
                });
            }
            Some(Err(e)) => {
                let t = text(e);
                req.answer(|r| {
                    r.error(t);
                });
            }
            other => unreachable!("a push is an append: {other:?}"),
        },
        Answer::Set => match results.get(1) {
            Some(Ok(TxDone::Appended { .. })) => req.answer(|r| {
                r.ok();
            }),
            Some(Err(e)) => {
                let t = text(e);
                req.answer(|r| {
                    r.error(t);
                });
            }
            other => unreachable!("SET's second write is an append: {other:?}"),
        },
        Answer::MembersAdded => match results.first() {
            Some(Ok(TxDone::Appended { result, .. })) => {
                let n = result.last_version - result.first_version + 1;
                req.answer(|r| {
                    r.int(n as i64);
                });
            }
            Some(Ok(TxDone::Changed(_))) => req.answer(|r| {
                r.int(0);
            }),
            Some(Err(e)) => {
                let t = text(e);
                req.answer(|r| {
                    r.error(t);
                });
            }
            Some(Ok(other)) => unreachable!("SADD's write is an addition: {other:?}"),
            None => unreachable!("SADD is one write"),
        },
    }
}

/// A stream-layer error of a write in Redis's words (at the partition's owner).
pub(super) fn write_error(e: StreamError) -> ApiError {
    let text = match &e {
        StreamError::IdNotAbove { .. } => {
            "The ID specified in XADD is equal or smaller than the target stream top item"
        }
        StreamError::IdZero => "The ID specified in XADD must be greater than 0-0",
        StreamError::IdsExhausted { .. } => {
            "The stream has exhausted the last possible ID, unable to add more items"
        }
        StreamError::WrongType { .. } => WRONGTYPE,
        _ => return e.into(),
    };
    ApiError::new(code::INVALID_ARGUMENT, text.to_string())
}

/// XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id field value …
fn xadd(req: &RespRequest, node_entries: u64) -> Result<Write, String> {
    let (a, trim) = xadd_parts(req, node_entries)?;
    Ok(xadd_write(a, trim))
}

/// An XADD's append and trim as the writes of one transaction.
fn xadd_write(a: LoneAppend, trim: Option<Trim>) -> Write {
    // The stream's name is copied only for a trim, the second write.
    let trim = trim.map(|t| TxWrite::Change {
        stream: a.stream.clone(),
        request: ChangeRequest::Trim(t),
    });
    let mut writes = Vec::with_capacity(1 + usize::from(trim.is_some()));
    writes.push(TxWrite::Append {
        stream: a.stream,
        expected_version: a.expected_version,
        events: a.events,
        id: a.id,
    });
    writes.extend(trim);
    Write {
        writes,
        answer: Answer::Added { make: a.make },
    }
}

/// XADD read: its append, and the trim placed with it if it asks for one.
fn xadd_parts(req: &RespRequest, node_entries: u64) -> Result<(LoneAppend, Option<Trim>), String> {
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
    let trim = options.finish(node_entries)?;
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
    let expected_version = if make {
        expected::ANY
    } else {
        expected::STREAM_EXISTS
    };
    let append = LoneAppend {
        make,
        stream,
        expected_version,
        events: vec![event],
        id,
    };
    Ok((append, trim))
}

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
        let name = crate::resp::Upper::new(&args[i]);
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

    /// The trim asked for, checked as Redis checks it; a `~` trim deletes whole nodes of
    /// `node_entries` (`stream-node-max-entries`).
    fn finish(self, node_entries: u64) -> Result<Option<Trim>, String> {
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
            let limit = self.limit.unwrap_or(node_entries.saturating_mul(100));
            (node_entries, (limit > 0).then_some(limit))
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

/// XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT count].
fn xtrim(req: &RespRequest, node_entries: u64) -> Result<Write, String> {
    let args = &req.args;
    if args.len() < 4 {
        return Err(wrong_arity(b"xtrim"));
    }
    let mut options = TrimOptions::default();
    let mut i = 2;
    while i < args.len() {
        i = options.parse(args, i)?.ok_or("syntax error")?;
    }
    let trim = options.finish(node_entries)?.ok_or("syntax error")?;
    change(req, ChangeRequest::Trim(trim), Answer::Count)
}

/// One change of the stream of key `args[1]`.
fn change(req: &RespRequest, request: ChangeRequest, answer: Answer) -> Result<Write, String> {
    Ok(Write {
        writes: vec![TxWrite::Change {
            stream: stream_name(req.ctx, &req.args[1])?,
            request,
        }],
        answer,
    })
}

/// An ID as Redis's `streamParseStrictIDOrReply` reads it: `ms-seq` or `ms`, not `-`/`+`.
fn strict_id(a: &[u8]) -> Result<StreamId, &'static str> {
    parse_id(a, 0)
        .filter(|_| a != b"-" && a != b"+")
        .ok_or(INVALID_ID)
}

/// XDEL key id [id …].
fn xdel(req: &RespRequest) -> Result<Write, String> {
    let args = &req.args;
    if args.len() < 3 {
        return Err(wrong_arity(b"xdel"));
    }
    let ids = args[2..]
        .iter()
        .map(|a| strict_id(a))
        .collect::<Result<Vec<_>, _>>()?;
    change(req, ChangeRequest::Ids(ids), Answer::Count)
}

/// DEL / UNLINK key [key …]: the streams deleted.
fn del(req: &RespRequest, name: &[u8]) -> Result<Write, String> {
    if req.args.len() < 2 {
        return Err(wrong_arity(&name.to_ascii_lowercase()));
    }
    let writes = req.args[1..]
        .iter()
        .map(|key| {
            Ok(TxWrite::Change {
                stream: stream_name(req.ctx, key)?,
                request: ChangeRequest::DeleteStream,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Write {
        writes,
        answer: Answer::Count,
    })
}

/// LPUSH / RPUSH key element [element …] (see [`super::resp_lists`]).
fn push(req: &RespRequest, name: &[u8]) -> Result<Write, String> {
    let args = &req.args;
    if args.len() < 3 {
        return Err(wrong_arity(&name.to_ascii_lowercase()));
    }
    let event_type = if name == b"LPUSH" {
        LPUSH_TYPE
    } else {
        RPUSH_TYPE
    };
    let events = args[2..]
        .iter()
        .map(|data| Event {
            id: [0; 16],
            event_type: event_type.to_string(),
            timestamp_ns: 0,
            value: f64::NAN,
            data: data.clone(),
            metadata: Vec::new(),
        })
        .collect();
    Ok(Write {
        writes: vec![TxWrite::Append {
            stream: stream_name(req.ctx, &args[1])?,
            expected_version: expected::ANY,
            events,
            id: crate::stream::IdSpec::Auto,
        }],
        answer: Answer::Pushed,
    })
}

/// SET key value: the key deleted, whatever it holds, and a string of `value` made in the
/// same transaction (module docs). Only the plain form: its options are refused.
fn set(req: &RespRequest) -> Result<Write, String> {
    let args = &req.args;
    if args.len() < 3 {
        return Err(wrong_arity(b"set"));
    }
    if args.len() > 3 {
        let option = String::from_utf8_lossy(&args[3]).to_ascii_uppercase();
        return Err(format!(
            "SET options ({option}) are not served by this server (no NX, XX, EX, PX, EXAT, \
             PXAT, KEEPTTL or GET): only SET key value"
        ));
    }
    let stream = stream_name(req.ctx, &args[1])?;
    let event = Event {
        id: [0; 16],
        event_type: SET_TYPE.to_string(),
        timestamp_ns: 0,
        value: f64::NAN,
        data: args[2].clone(),
        metadata: Vec::new(),
    };
    Ok(Write {
        writes: vec![
            TxWrite::Change {
                stream: stream.clone(),
                request: ChangeRequest::DeleteStream,
            },
            TxWrite::Append {
                stream,
                expected_version: expected::ANY,
                events: vec![event],
                id: crate::stream::IdSpec::Auto,
            },
        ],
        answer: Answer::Set,
    })
}

/// SADD key member [member …]: the members the set lacks added (see
/// [`super::resp_values`]).
fn sadd(req: &RespRequest) -> Result<Write, String> {
    let args = &req.args;
    if args.len() < 3 {
        return Err(wrong_arity(b"sadd"));
    }
    let mut seen = std::collections::HashSet::new();
    let members = args[2..]
        .iter()
        .filter(|m| seen.insert(m.as_slice()))
        .cloned()
        .collect();
    Ok(Write {
        writes: vec![TxWrite::AddMembers {
            stream: stream_name(req.ctx, &args[1])?,
            members,
        }],
        answer: Answer::MembersAdded,
    })
}

/// FLUSHDB / FLUSHALL [ASYNC|SYNC]: every stream of the database (of every database), in
/// every partition.
fn flush(req: &RespRequest, all: bool) -> Result<Write, String> {
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
    let writes = dbs
        .map(|db| TxWrite::Change {
            stream: if db == 0 {
                String::new()
            } else {
                format!("\0{db}\0")
            },
            request: ChangeRequest::DeleteDatabase,
        })
        .collect();
    Ok(Write {
        writes,
        answer: Answer::Flushed,
    })
}

/// XSETID key last-id [ENTRIESADDED n] [MAXDELETEDID id]: journaled like a deletion.
fn xsetid(req: &RespRequest) -> Result<Write, String> {
    let args = &req.args;
    if args.len() < 3 {
        return Err(wrong_arity(b"xsetid"));
    }
    let last = strict_id(&args[2])?;
    let (mut entries_added, mut max_deleted) = (None, StreamId::ZERO);
    let mut i = 3;
    while i < args.len() {
        let (opt, value) = (&args[i], args.get(i + 1));
        match value {
            Some(v) if opt.eq_ignore_ascii_case(b"ENTRIESADDED") => {
                let n = integer(v)?;
                if n < 0 {
                    return Err("entries_added must be positive".into());
                }
                entries_added = Some(n as u64);
            }
            Some(v) if opt.eq_ignore_ascii_case(b"MAXDELETEDID") => {
                max_deleted = strict_id(v)?;
                if last < max_deleted {
                    return Err("The ID specified in XSETID is smaller than the provided \
                                max_deleted_entry_id"
                        .into());
                }
            }
            _ => return Err("syntax error".into()),
        }
        i += 2;
    }
    let request = ChangeRequest::SetId {
        last,
        entries_added,
        max_deleted,
    };
    change(req, request, Answer::SetId)
}
