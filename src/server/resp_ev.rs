//! evring's own operations on the RESP port, as a Redis module's commands would be: `EV.APPEND`,
//! `EV.READ`, `EV.INFO`, `EV.AGG`, `EV.EXEC` and `EV.QUERY`, so that any language's Redis
//! client reaches APPEND (expected versions, event ids, values), READ by version,
//! STREAM_INFO, AGGREGATE_GROUPS and a model's EXECUTE and QUERY through its
//! `execute_command` (docs/PROTOCOL.md, *EV commands*).
//!
//! Each command runs the native request's own path: EV.APPEND is [`Shard::append`] (a reply
//! once the events are durable, retries answered from the idempotency window), EV.INFO
//! [`Shard::stream_info`], EV.AGG [`Shard::aggregate`], EV.EXEC and EV.QUERY
//! [`Shard::model_request`]. EV.READ is READ on the stream's partition, with each event's
//! stream ID looked up there too ([`run_read`]). A key names a stream as every RESP command's
//! does ([`stream_name`]: the connection's database counts).
//!
//! Arguments are checked before anything runs: a wrong count is Redis's `wrong number of
//! arguments` error, anything else an `ERR` that names the argument and what it takes. Counts
//! are bounded: EV.READ's by `max_read_count`, an EV.APPEND's events by the request's size
//! (`request_frame_bytes_max`), EV.AGG's groups and buckets by the aggregation's own bounds.
//!
//! In MULTI, EV.APPEND, EV.READ and EV.INFO are queued like the stream commands (their key
//! counts for CROSSSLOT); EV.AGG, EV.EXEC and EV.QUERY name no stream a transaction can
//! place in one partition and are refused while queueing, which aborts the transaction.

use std::rc::Rc;

use super::resp_commands::{unknown_command, wrong_arity};
use super::resp_conn::RespRequest;
use super::resp_streams::{error_text, stream_name, RespOutcome};
use super::route::{OpResult, PartOp, Shard};
use super::ApiError;
use crate::protocol::{
    code, expected, partition_of, Direction, Event, GroupOrder, GroupedAggregate, Groups,
    NameMatch, RecordedEvent, Response, StreamId,
};
use crate::resp::Reply;
use crate::stream::Partition;
use crate::window::{aggregate_window, parse_time, WindowText};

/// The EV commands (COMMAND COUNT).
pub(super) const COMMANDS: &[&str] = &[
    "EV.APPEND",
    "EV.READ",
    "EV.INFO",
    "EV.AGG",
    "EV.EXEC",
    "EV.QUERY",
];

/// Each command's arity as Redis writes it (negative: at least that many arguments, the name
/// included).
const ARITY: &[(&str, i64)] = &[
    ("EV.APPEND", -5),
    ("EV.READ", -4),
    ("EV.INFO", 2),
    ("EV.AGG", -1),
    ("EV.EXEC", 3),
    ("EV.QUERY", 3),
];

/// The most arguments EV.READ takes: the stream, from, count and a direction.
const READ_ARGS_MAX: usize = 5;

/// Whether `name` (upper-cased) is an EV command.
fn is_command(name: &[u8]) -> bool {
    COMMANDS.iter().any(|c| c.as_bytes() == name)
}

/// Whether the command reads what the connection's earlier writes wrote, so runs alone
/// ([`super::resp_conn`]).
pub(super) fn runs_alone(name: &[u8]) -> bool {
    matches!(name, b"EV.READ" | b"EV.INFO" | b"EV.AGG" | b"EV.QUERY")
}

/// Whether the reply may be as large as an AGGREGATE's.
pub(super) fn is_heavy(name: &[u8]) -> bool {
    name == b"EV.AGG"
}

/// Whether it reads events (it takes a read's room on its connection, as READ and XRANGE).
pub(super) fn is_read(name: &[u8]) -> bool {
    name == b"EV.READ"
}

/// The checks made before a command runs or is queued: `None` when `name` (upper-cased) is
/// not `EV.…`; an unknown EV command, a wrong number of arguments, or (`in_multi`) a command
/// a transaction does not take is an error.
pub(super) fn check(name: &[u8], args: &[Vec<u8>], in_multi: bool) -> Option<Result<(), String>> {
    if !name.starts_with(b"EV.") {
        return None;
    }
    if !is_command(name) {
        return Some(Err(unknown_command(args)));
    }
    if let Some(&(_, arity)) = ARITY.iter().find(|(n, _)| n.as_bytes() == name) {
        let n = args.len() as i64;
        if (arity > 0 && n != arity) || n < -arity {
            return Some(Err(wrong_arity(name)));
        }
    }
    if in_multi && !matches!(name, b"EV.APPEND" | b"EV.READ" | b"EV.INFO") {
        return Some(Err(format!(
            "{} is not allowed inside MULTI: it names no stream that places the transaction \
             in one partition; send it outside the transaction",
            String::from_utf8_lossy(name)
        )));
    }
    Some(Ok(()))
}

/// The keys a command names (`name` upper-cased), for MULTI's CROSSSLOT check.
pub(super) fn command_keys<'a>(name: &[u8], args: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
    match name {
        b"EV.APPEND" | b"EV.READ" | b"EV.INFO" => {
            args.get(1).map(Vec::as_slice).into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// Runs EV command `name` (upper-cased) and answers it; `Err` is the error to answer.
pub(super) async fn run(shard: &Rc<Shard>, req: &RespRequest, name: &[u8]) -> Result<(), String> {
    check(name, &req.args, false).unwrap_or_else(|| Err(unknown_command(&req.args)))?;
    match name {
        b"EV.APPEND" => Box::pin(append(shard, req)).await,
        b"EV.READ" => Box::pin(read(shard, req)).await,
        b"EV.INFO" => Box::pin(info(shard, req)).await,
        b"EV.AGG" => Box::pin(agg(shard, req)).await,
        b"EV.EXEC" => Box::pin(model(shard, req, false)).await,
        b"EV.QUERY" => Box::pin(model(shard, req, true)).await,
        _ => Err(unknown_command(&req.args)),
    }
}

/// A native error reply as a Redis error line (a wrong expected version also says what to
/// append with).
fn response_error(r: Response) -> String {
    match r {
        Response::Error {
            code,
            message,
            current_version,
        } => {
            let e = ApiError {
                code,
                message,
                current_version,
            };
            match current_version {
                Some(v) if code == code::WRONG_EXPECTED_VERSION => {
                    let retry = if v < 0 {
                        "NO-STREAM".to_string()
                    } else {
                        v.to_string()
                    };
                    format!(
                        "{}; read the events after the version you expected, then append \
                         with expected version {retry} (or ANY)",
                        error_text(&e)
                    )
                }
                _ => error_text(&e),
            }
        }
        other => format!("internal error: unexpected reply {other:?}"),
    }
}

/// An argument as UTF-8 text, or an error naming it.
fn text<'a>(what: &str, arg: &'a [u8]) -> Result<&'a str, String> {
    std::str::from_utf8(arg).map_err(|_| format!("{what} must be UTF-8 text"))
}

/// A non-negative integer argument.
fn unsigned(arg: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|s| !s.starts_with('+'))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| "value is not an integer or out of range".to_string())
}

/// EV.APPEND's expected version: `ANY`, `NO-STREAM`, `EXISTS` (any case), the native
/// -1, -2, -3, or a version ≥ 0 (the stream's last event's).
fn parse_expected(arg: &[u8]) -> Result<i64, String> {
    let bad = || {
        format!(
            "expected version {:?} is not ANY, NO-STREAM, EXISTS or a version >= 0",
            String::from_utf8_lossy(arg)
        )
    };
    match arg.to_ascii_uppercase().as_slice() {
        b"ANY" => return Ok(expected::ANY),
        b"NO-STREAM" => return Ok(expected::NO_STREAM),
        b"EXISTS" => return Ok(expected::STREAM_EXISTS),
        _ => {}
    }
    let n = crate::resp::string2ll(arg).ok_or_else(bad)?;
    if n < expected::STREAM_EXISTS {
        return Err(bad());
    }
    Ok(n)
}

/// An event id: 32 hex digits.
fn parse_event_id(arg: &[u8]) -> Result<[u8; 16], String> {
    let bad = || {
        format!(
            "event id {:?} is not 32 hex digits",
            String::from_utf8_lossy(arg)
        )
    };
    if arg.len() != 32 {
        return Err(bad());
    }
    let mut id = [0u8; 16];
    for (i, pair) in arg.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        id[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(id)
}

/// EV.APPEND's events: each `[ID hex] [VALUE v] [METADATA m] [TIMESTAMP t] type data`.
fn parse_events(args: &[Vec<u8>]) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let n = events.len() + 1;
        let mut event = Event {
            id: [0; 16],
            event_type: String::new(),
            timestamp_ns: 0,
            value: f64::NAN,
            data: Vec::new(),
            metadata: Vec::new(),
        };
        let mut seen: Vec<&[u8]> = Vec::new();
        loop {
            let Some(arg) = args.get(i) else {
                return Err(format!(
                    "event {n} has no type and data: each event is [ID id] [VALUE v] \
                     [METADATA m] [TIMESTAMP t] type data"
                ));
            };
            let option = arg.to_ascii_uppercase();
            let known: &[u8] = match option.as_slice() {
                b"ID" => b"ID",
                b"VALUE" => b"VALUE",
                b"METADATA" => b"METADATA",
                b"TIMESTAMP" => b"TIMESTAMP",
                _ => break,
            };
            let name = String::from_utf8_lossy(known);
            if seen.contains(&known) {
                return Err(format!("event {n} has {name} twice"));
            }
            seen.push(known);
            let Some(value) = args.get(i + 1) else {
                return Err(format!("event {n}: {name} needs a value"));
            };
            match known {
                b"ID" => event.id = parse_event_id(value)?,
                b"VALUE" => {
                    event.value = text("VALUE", value)?
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| format!("event {n}: VALUE must be a finite number"))?;
                }
                b"METADATA" => event.metadata = value.clone(),
                _ => {
                    let at = parse_time("TIMESTAMP", text("TIMESTAMP", value)?)?;
                    // 0 asks for the server's clock: the first nanosecond is taken as 1.
                    event.timestamp_ns = at.max(1);
                }
            }
            i += 2;
        }
        let (Some(event_type), Some(data)) = (args.get(i), args.get(i + 1)) else {
            return Err(format!(
                "event {n} has a type but no data: each event is [ID id] [VALUE v] \
                 [METADATA m] [TIMESTAMP t] type data"
            ));
        };
        event.event_type = text("an event type", event_type)?.to_string();
        event.data = data.clone();
        events.push(event);
        i += 2;
    }
    Ok(events)
}

/// EV.APPEND key expected-version event [event …].
async fn append(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    let expected_version = parse_expected(&args[2])?;
    let events = parse_events(&args[3..])?;
    let stream = stream_name(req.ctx, &args[1])?;
    let a = match shard.append(stream, expected_version, events).await {
        Response::Appended(a) => a,
        other => return Err(response_error(other)),
    };
    req.answer(|r| {
        r.map_len(5);
        r.bulk("first-version").int(a.first_version as i64);
        r.bulk("last-version").int(a.last_version as i64);
        r.bulk("next-version").int(a.last_version as i64 + 1);
        r.bulk("partition").int(i64::from(a.partition));
        r.bulk("lsn").int(a.lsn as i64);
    });
    Ok(())
}

/// EV.READ's part on the stream's partition: up to `count` events from version `from` in
/// `direction`, each with its stream ID.
#[derive(Debug)]
pub struct EvRead {
    stream: String,
    from: u64,
    count: usize,
    direction: Direction,
}

/// Runs an EV.READ on the partition's owner: READ again after the last event until `count`
/// events or the end (a READ stops at `max_read_bytes`), then the events' stream IDs;
/// refused past `RANGE_REPLY_READS × max_read_bytes` bytes, as a RESP range is.
pub(super) async fn run_read(p: &Partition, op: EvRead) -> OpResult {
    let EvRead {
        stream,
        mut from,
        count,
        direction,
    } = op;
    let mut events: Vec<RecordedEvent> = Vec::new();
    let budget = super::resp_streams::RANGE_REPLY_READS * p.max_read_bytes();
    let mut bytes = 0;
    while events.len() < count {
        let want = u32::try_from(count - events.len()).unwrap_or(u32::MAX);
        let (got, end) = match p.read(&stream, from, want, direction).await {
            Ok(r) => r,
            Err(e) => return OpResult::Err(e.into()),
        };
        let Some(last) = got.last().map(|e| e.stream_version) else {
            break;
        };
        bytes += got.iter().map(crate::stream::reply_bytes).sum::<usize>();
        if bytes > budget {
            return OpResult::Err(crate::stream::StreamError::ReplyTooLarge { budget }.into());
        }
        events.extend(got);
        let next = match direction {
            Direction::Forward => last.checked_add(1),
            Direction::Backward => last.checked_sub(1),
        };
        match next {
            Some(v) if !end => from = v,
            _ => break,
        }
    }
    let (lo, hi) = events.iter().fold((u64::MAX, 0), |(lo, hi), e| {
        (lo.min(e.stream_version), hi.max(e.stream_version))
    });
    let ids = if events.is_empty() {
        Vec::new()
    } else {
        p.stream_ids(&stream, lo..hi.saturating_add(1))
    };
    let entries = events
        .into_iter()
        .map(|e| {
            let id = ids
                .get((e.stream_version - lo) as usize)
                .copied()
                .unwrap_or(StreamId::ZERO);
            (id, e)
        })
        .collect();
    OpResult::Resp(RespOutcome::Entries(entries))
}

/// EV.READ key from count [FORWARD|BACKWARD].
async fn read(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() > READ_ARGS_MAX {
        return Err("syntax error: EV.READ key from count [FORWARD|BACKWARD]".into());
    }
    let direction = match args.get(4).map(|a| a.to_ascii_uppercase()).as_deref() {
        None | Some(b"FORWARD") => Direction::Forward,
        Some(b"BACKWARD") => Direction::Backward,
        Some(_) => {
            return Err(format!(
                "syntax error: EV.READ's direction is FORWARD or BACKWARD, not {:?}",
                String::from_utf8_lossy(&args[4])
            ))
        }
    };
    let from = match args[2].as_slice() {
        b"-" => 0,
        b"+" => u64::MAX,
        v => unsigned(v)?,
    };
    let max = shard.shared.config.max_read_count;
    let count = unsigned(&args[3])?;
    if count == 0 || count > u64::from(max) {
        return Err(format!(
            "count {count} is not from 1 to {max} (max_read_count): read in pages of at most \
             {max} events, from the version after the last one read"
        ));
    }
    let stream = stream_name(req.ctx, &args[1])?;
    let p = partition_of(&stream, shard.shared.partitions);
    let op = EvRead {
        stream,
        from,
        count: count as usize,
        direction,
    };
    let entries = match shard.call(p, PartOp::EvRead(op)).await {
        OpResult::Resp(RespOutcome::Entries(e)) => e,
        OpResult::Err(e) => return Err(error_text(&e)),
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    };
    req.answer(|r| {
        r.array_len(entries.len());
        for (id, e) in &entries {
            write_event(r, *id, e);
        }
    });
    Ok(())
}

/// One event of EV.READ's reply: a map of its version, stream ID, type, data, timestamp,
/// value (null for none), metadata, event id (hex, null for none) and LSN.
fn write_event(r: &mut Reply<'_>, id: StreamId, e: &RecordedEvent) {
    let ev = &e.event;
    r.map_len(9);
    r.bulk("version").int(e.stream_version as i64);
    r.bulk("stream-id").bulk(id.text());
    r.bulk("type").bulk(&ev.event_type);
    r.bulk("data").bulk(&ev.data);
    r.bulk("timestamp").int(ev.timestamp_ns as i64);
    r.bulk("value");
    if ev.value.is_nan() {
        r.null();
    } else {
        r.double(ev.value);
    }
    r.bulk("metadata").bulk(&ev.metadata);
    r.bulk("event-id");
    if ev.id == [0; 16] {
        r.null();
    } else {
        r.bulk(crate::journal::hex(&ev.id));
    }
    r.bulk("lsn").int(e.lsn as i64);
}

/// EV.INFO key: STREAM_INFO, and the stream's partition.
async fn info(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let stream = stream_name(req.ctx, &req.args[1])?;
    let partition = partition_of(&stream, shard.shared.partitions);
    let i = match shard.stream_info(stream).await {
        Response::StreamInfo(i) => i,
        other => return Err(response_error(other)),
    };
    req.answer(|r| {
        r.map_len(4);
        r.bulk("next-version").int(i.next_version as i64);
        r.bulk("first-lsn").int(i.first_lsn as i64);
        r.bulk("last-lsn").int(i.last_lsn as i64);
        r.bulk("partition").int(i64::from(partition));
    });
    Ok(())
}

/// EV.AGG's options: `evring aggregate`'s flags without their dashes (the `…-ns` ones
/// aside: FROM and TO take nanoseconds as `…ns`).
const AGG_OPTIONS: &[&str] = &[
    "SINCE",
    "FROM",
    "TO",
    "BUCKET",
    "STREAM",
    "STREAM-PREFIX",
    "TYPE",
    "TYPE-PREFIX",
    "FIELD",
    "WHERE",
    "GROUP-BY",
    "TOP",
    "ORDER",
    "MAX-GROUPS",
];

/// EV.AGG's options as given: each option's value by its index in [`AGG_OPTIONS`].
fn agg_options(args: &[Vec<u8>]) -> Result<Vec<Option<&str>>, String> {
    let mut values: Vec<Option<&str>> = vec![None; AGG_OPTIONS.len()];
    let mut i = 0;
    while i < args.len() {
        let name = args[i].to_ascii_uppercase();
        let Some(at) = AGG_OPTIONS.iter().position(|o| o.as_bytes() == name) else {
            return Err(format!(
                "unknown EV.AGG option {:?}; the options are {}, each followed by its value",
                String::from_utf8_lossy(&args[i]),
                AGG_OPTIONS.join(", ")
            ));
        };
        let option = AGG_OPTIONS[at];
        let Some(value) = args.get(i + 1) else {
            return Err(format!("EV.AGG option {option} needs a value"));
        };
        if values[at].is_some() {
            return Err(format!("EV.AGG option {option} is given twice"));
        }
        values[at] = Some(text(option, value)?);
        i += 2;
    }
    Ok(values)
}

/// The AGGREGATE_GROUPS request EV.AGG's options ask for at time `now`.
fn agg_request(args: &[Vec<u8>], now: u64) -> Result<GroupedAggregate, String> {
    let values = agg_options(args)?;
    let get = |name: &str| values[AGG_OPTIONS.iter().position(|o| *o == name).unwrap_or(0)];
    let w = WindowText {
        from: get("FROM"),
        to: get("TO"),
        since: get("SINCE"),
        bucket: get("BUCKET"),
        ..WindowText::default()
    };
    if w.from.is_some() && w.since.is_some() {
        return Err("EV.AGG takes FROM or SINCE, not both".into());
    }
    let (from_ns, to_ns, bucket_ns) = aggregate_window(&w, now, &|o| o.to_ascii_uppercase())?;
    let name_filter = |exact: &str, prefix: &str| match (get(exact), get(prefix)) {
        (Some(_), Some(_)) => Err(format!("EV.AGG takes {exact} or {prefix}, not both")),
        (_, Some(p)) => Ok((p.to_string(), NameMatch::Prefix)),
        (e, None) => Ok((e.unwrap_or_default().to_string(), NameMatch::Exact)),
    };
    let (stream, stream_match) = name_filter("STREAM", "STREAM-PREFIX")?;
    let (event_type, type_match) = name_filter("TYPE", "TYPE-PREFIX")?;
    let (where_field, where_value) = match get("WHERE") {
        None => (String::new(), String::new()),
        Some(w) => {
            let (f, v) = w.split_once('=').ok_or_else(|| {
                format!(
                    "EV.AGG WHERE {w:?} has no \"=\": write data.<key>[.<key>...]=VALUE, e.g. \
                     WHERE data.label=cpu_usage"
                )
            })?;
            (f.to_string(), v.to_string())
        }
    };
    let order = match get("ORDER").map(str::to_ascii_lowercase).as_deref() {
        None | Some("count") => GroupOrder::Count,
        Some("sum") => GroupOrder::Sum,
        Some("avg") => GroupOrder::Average,
        Some(o) => return Err(format!("EV.AGG ORDER {o:?} is not count, sum or avg")),
    };
    let positive = |name: &str| -> Result<u32, String> {
        match get(name) {
            None => Ok(0),
            Some(v) => v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!(
                    "EV.AGG {name} {v:?} is not a whole number from 1 to {}",
                    u32::MAX
                )
            }),
        }
    };
    Ok(GroupedAggregate {
        bucket_ns,
        stream,
        stream_match,
        event_type,
        type_match,
        field: get("FIELD").unwrap_or_default().to_string(),
        where_field,
        where_value,
        group_by: get("GROUP-BY").unwrap_or_default().to_string(),
        order,
        top_k: positive("TOP")?,
        max_groups: positive("MAX-GROUPS")?,
        ..GroupedAggregate::window(from_ns, to_ns)
    })
}

/// Unix time now, in nanoseconds.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// EV.AGG [option value …].
async fn agg(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let q = agg_request(&req.args[1..], now_ns())?;
    let window = (q.from_ns, q.to_ns, q.bucket_ns);
    let groups = match shard.aggregate(q).await {
        Ok(g) => g,
        Err(e) => return Err(response_error(e)),
    };
    req.answer(|r| write_groups(r, window, &groups));
    Ok(())
}

/// A number that may be NaN (an empty bucket's min, max, average): null for NaN.
fn number(r: &mut Reply<'_>, v: f64) {
    if v.is_nan() {
        r.null();
    } else {
        r.double(v);
    }
}

/// count, sum, min, max and avg of a bucket, as map entries.
fn write_totals(r: &mut Reply<'_>, b: &crate::protocol::Bucket) {
    r.bulk("count").int(b.count as i64);
    r.bulk("sum");
    r.double(b.sum);
    r.bulk("min");
    number(r, b.min);
    r.bulk("max");
    number(r, b.max);
    r.bulk("avg");
    number(r, b.average());
}

/// EV.AGG's reply: the window, the counts, and each group with its totals and buckets.
fn write_groups(r: &mut Reply<'_>, (from, to, bucket): (u64, u64, u64), g: &Groups) {
    r.map_len(7);
    r.bulk("from").int(from as i64);
    r.bulk("to").int(to as i64);
    r.bulk("bucket").int(bucket as i64);
    r.bulk("matched").int(g.matched as i64);
    r.bulk("ungrouped").int(g.ungrouped as i64);
    r.bulk("groups-total").int(i64::from(g.groups_total));
    r.bulk("groups").array_len(g.groups.len());
    for group in &g.groups {
        r.map_len(8);
        r.bulk("key").bulk(&group.key);
        r.bulk("missing").int(group.missing as i64);
        write_totals(r, &group.total());
        r.bulk("buckets").array_len(group.buckets.len());
        for b in &group.buckets {
            r.map_len(6);
            r.bulk("start").int(b.start_ns as i64);
            write_totals(r, b);
        }
    }
}

/// EV.EXEC model command / EV.QUERY model query: the model's result bytes.
async fn model(shard: &Rc<Shard>, req: &RespRequest, is_query: bool) -> Result<(), String> {
    let model = text("the model's name", &req.args[1])?;
    let result = match shard.model_request(model, &req.args[2], is_query).await {
        Response::Executed { result } | Response::Queried { result } => result,
        other => return Err(response_error(other)),
    };
    req.answer(|r| {
        r.bulk(result);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn events_take_options_before_their_type_and_data() {
        let id = "00112233445566778899aabbccddeeff";
        let events = parse_events(&args(&[
            "Created", "{}", "id", id, "VALUE", "2.5", "Paid", "x",
        ]))
        .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, "Created");
        assert!(events[0].value.is_nan());
        assert_eq!(events[1].id[0], 0x00);
        assert_eq!(events[1].id[15], 0xff);
        assert_eq!(events[1].value, 2.5);
        assert_eq!(events[1].data, b"x");
        for bad in [
            &["T"][..],
            &["ID", id],
            &["ID", "xyz", "T", "d"],
            &["ID", id, "ID", id, "T", "d"],
            &["VALUE", "nan", "T", "d"],
            &["VALUE"],
        ] {
            assert!(parse_events(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expected_versions_are_words_or_numbers() {
        assert_eq!(parse_expected(b"any"), Ok(expected::ANY));
        assert_eq!(parse_expected(b"NO-STREAM"), Ok(expected::NO_STREAM));
        assert_eq!(parse_expected(b"exists"), Ok(expected::STREAM_EXISTS));
        assert_eq!(parse_expected(b"7"), Ok(7));
        assert_eq!(parse_expected(b"-2"), Ok(-2));
        assert!(parse_expected(b"-4").is_err());
        assert!(parse_expected(b"seven").is_err());
    }

    #[test]
    fn agg_options_are_the_cli_flags() {
        let s = 1_000_000_000;
        let now = 1_733_472_000 * s;
        let q = agg_request(
            &args(&[
                "since",
                "1h",
                "BUCKET",
                "1m",
                "GROUP-BY",
                "stream",
                "TOP",
                "3",
                "ORDER",
                "sum",
                "WHERE",
                "data.a=b=c",
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            (q.from_ns, q.to_ns, q.bucket_ns),
            (now - 3600 * s, now, 60 * s)
        );
        assert_eq!(q.group_by, "stream");
        assert_eq!(q.top_k, 3);
        assert_eq!(q.order, GroupOrder::Sum);
        assert_eq!(
            (q.where_field.as_str(), q.where_value.as_str()),
            ("data.a", "b=c")
        );
        let q = agg_request(&args(&["STREAM-PREFIX", "o-"]), now).unwrap();
        assert_eq!(
            (q.stream.as_str(), q.stream_match),
            ("o-", NameMatch::Prefix)
        );
        for bad in [
            &["SINCE"][..],
            &["SINCE", "1x"],
            &["FROM", "2024-12-06T08:00:00Z", "SINCE", "1h"],
            &["STREAM", "a", "STREAM-PREFIX", "b"],
            &["TOP", "0"],
            &["ORDER", "max"],
            &["WHERE", "data.a"],
            &["NOPE", "1"],
            &["TOP", "1", "TOP", "2"],
        ] {
            assert!(agg_request(&args(bad), now).is_err(), "{bad:?}");
        }
        let e = agg_request(&args(&["SINCE", "1x"]), now).unwrap_err();
        assert!(e.starts_with("SINCE "), "{e}");
    }
}
