//! Consumer groups on the RESP port, with Redis 7.0's semantics and error texts
//! (`t_stream.c`): XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM, and the group
//! parts of XINFO.
//!
//! Each command that changes group state runs on the stream's partition owner as a
//! transaction of one [`TxWrite::Group`] (`crate::stream::group_ops`): resolved in its turn,
//! journaled, applied when placed, answered once durable — an XREADGROUP's reply (which
//! makes entries pending) included, as Redis with `appendfsync always` does. The entries a
//! reply carries are fetched by LSN on the owner after that.
//!
//! An XREADGROUP with `>` that finds nothing and has BLOCK waits as a blocked XREAD does
//! ([`super::resp_read`], `ReadOp::Wait` with a group): woken by new entries it reads
//! again as the group; woken because the stream or the group went away it answers Redis's
//! `-UNBLOCKED …` or `-NOGROUP …` error.

use std::rc::Rc;

use super::api_error::ApiError;
use super::resp_commands::wrong_arity;
use super::resp_conn::RespRequest;
use super::resp_streams::{
    call_in, integer, parse_id, stream_name, write_entry, RespOp, RespOutcome, INVALID_ID,
    WRONGTYPE,
};
use super::route::{OpResult, Shard};
use crate::protocol::{code, partition_of, RecordedEvent, StreamId};
use crate::resp::Reply;
use crate::stream::{
    ClaimTime, GroupDone, GroupError, GroupRequest, GroupStart, Partition, StreamCounters,
    StreamError, StreamGroups, TxDone, TxWrite,
};

/// An entry of a reply: its ID and event (`None`: deleted from the stream meanwhile), its
/// ID and its fields encoded for RESP, or its ID alone (JUSTID).
#[derive(Debug)]
pub enum GroupItem {
    Entry(StreamId, Option<RecordedEvent>),
    /// [`EntryForm::Resp`]: the entry's fields are `fields[range]` of its [`Items`].
    Fields(StreamId, std::ops::Range<usize>),
    Id(StreamId),
}

/// The entries of a reply.
#[derive(Debug, Default)]
pub struct Items {
    pub list: Vec<GroupItem>,
    /// The fields of the list's [`GroupItem::Fields`], one after another.
    pub fields: Vec<u8>,
}

impl Items {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The form a reply's entries take on the owner: events (a native request's reply encodes
/// them), or the fields of each entry encoded as a RESP reply writes them (the same bytes in
/// RESP2 and RESP3), straight from the ring or the journal's frame, with no copy of the
/// event in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryForm {
    Events,
    Resp,
}

/// What the owner answers for a [`GroupOp`].
#[derive(Debug)]
pub enum GroupAnswer {
    Ok,
    Count(u64),
    /// XREADGROUP: whether the key is in the reply, and its entries.
    Read {
        served: bool,
        items: Items,
    },
    Claimed(Items),
    AutoClaimed {
        next: StreamId,
        items: Items,
        deleted: Vec<StreamId>,
    },
    Pending(PendingAnswer),
    Groups(Vec<GroupInfo>),
    /// Refused by the group state.
    Refused(GroupError),
    /// No such key (XPENDING, XINFO).
    NoKey,
    /// A blocking read's key was deleted just before it came (see [`BLOCKED_RACE_NS`]).
    Gone,
}

/// How recent a deletion of its key a blocking XREADGROUP that finds no key or group takes
/// as having happened while it was blocked: requests of different connections that arrive
/// this close together are concurrent (they run on different shards, and one may overtake the
/// other), so ordering the read first is as true as ordering it last, and it answers what a
/// read that blocked first gets — `-UNBLOCKED the stream key no longer exists` — instead of
/// `-NOGROUP No such key …`.
pub const BLOCKED_RACE_NS: u64 = 100_000_000;

/// XPENDING's two forms.
#[derive(Debug)]
pub enum PendingAnswer {
    Summary {
        count: u64,
        range: Option<(StreamId, StreamId)>,
        consumers: Vec<(Vec<u8>, u64)>,
    },
    /// ID, consumer, idle ms, deliveries.
    Entries(Vec<(StreamId, Vec<u8>, u64, u64)>),
}

/// A group as XINFO shows it.
#[derive(Debug)]
pub struct GroupInfo {
    pub name: Vec<u8>,
    pub last_id: StreamId,
    pub entries_read: Option<u64>,
    pub lag: Option<u64>,
    pub pending_count: u64,
    /// ID, consumer, delivery time, deliveries (FULL only, at most its COUNT).
    pub pending: Vec<(StreamId, Vec<u8>, u64, u64)>,
    pub consumers: Vec<ConsumerInfo>,
}

/// A consumer as XINFO shows it.
#[derive(Debug)]
pub struct ConsumerInfo {
    pub name: Vec<u8>,
    pub seen_ms: u64,
    pub active_ms: Option<u64>,
    pub pending_count: u64,
    /// ID, delivery time, deliveries (FULL only).
    pub pending: Vec<(StreamId, u64, u64)>,
}

/// XPENDING's extended form.
#[derive(Clone, Debug)]
pub struct PendingQuery {
    pub min_idle_ms: u64,
    pub start: StreamId,
    pub end: StreamId,
    pub count: usize,
    pub consumer: Option<Vec<u8>>,
}

/// What XINFO asks of the groups.
#[derive(Clone, Debug)]
pub enum InfoWhat {
    /// Every group, with its consumers (and with FULL, its pending entries: at most this
    /// many per list, `usize::MAX`: all).
    Groups { full: Option<usize> },
    /// One group's consumers.
    Consumers(Vec<u8>),
}

/// A group command for the stream's owner.
#[derive(Debug)]
pub enum GroupOp {
    Write {
        stream: String,
        request: GroupRequest,
        form: EntryForm,
    },
    /// XREADGROUP `>` with BLOCK: as `Write`, but a key deleted within
    /// [`BLOCKED_RACE_NS`] answers [`GroupAnswer::Gone`].
    BlockingRead {
        stream: String,
        request: GroupRequest,
        form: EntryForm,
    },
    Pending {
        stream: String,
        group: Vec<u8>,
        query: Option<PendingQuery>,
    },
    Info {
        stream: String,
        what: InfoWhat,
    },
}

impl GroupOp {
    /// The stream it is on.
    pub fn stream(&self) -> &str {
        match self {
            GroupOp::Write { stream, .. }
            | GroupOp::BlockingRead { stream, .. }
            | GroupOp::Pending { stream, .. }
            | GroupOp::Info { stream, .. } => stream,
        }
    }
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a group command on the partition's owner.
pub(super) async fn run_op(p: &Partition, op: GroupOp) -> OpResult {
    let answer = match op {
        GroupOp::Write {
            stream,
            request,
            form,
        } => match run_write(p, stream, request, form).await {
            Ok(a) => a,
            Err(e) => return OpResult::Err(e),
        },
        GroupOp::BlockingRead {
            stream,
            request,
            form,
        } => match run_write(p, stream.clone(), request, form).await {
            Ok(GroupAnswer::Refused(GroupError::NoGroup | GroupError::NoStream))
                if p.deleted_lately(&stream, BLOCKED_RACE_NS) =>
            {
                GroupAnswer::Gone
            }
            Ok(a) => a,
            Err(e) => return OpResult::Err(e),
        },
        GroupOp::Pending {
            stream,
            group,
            query,
        } => {
            if p.is_list(&stream) {
                return OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, WRONGTYPE));
            }
            let now = now_ms();
            p.groups_of(&stream, |groups, _| pending(groups, &group, query, now))
                .unwrap_or(GroupAnswer::Refused(GroupError::NoGroup))
        }
        GroupOp::Info { stream, what } => {
            if p.is_list(&stream) {
                return OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, WRONGTYPE));
            }
            p.groups_of(&stream, |groups, counters| info(groups, counters, &what))
                .unwrap_or(GroupAnswer::NoKey)
        }
    };
    OpResult::Resp(RespOutcome::Group(answer))
}

/// Runs a group command that may change state, and fetches the entries it answers with, in
/// `form`.
pub(super) async fn run_write(
    p: &Partition,
    stream: String,
    request: GroupRequest,
    form: EntryForm,
) -> Result<GroupAnswer, ApiError> {
    let write = TxWrite::Group { stream, request };
    let done = match p.transaction(vec![write]).await.pop() {
        Some(Ok(TxDone::Group(done))) => done,
        Some(Ok(other)) => unreachable!("a group write answers as one: {other:?}"),
        Some(Err(StreamError::Group(g))) => return Ok(GroupAnswer::Refused(g)),
        Some(Err(StreamError::WrongType { .. })) => {
            return Err(ApiError::new(code::INVALID_ARGUMENT, WRONGTYPE))
        }
        Some(Err(e)) => return Err(e.into()),
        None => unreachable!("one result per write"),
    };
    Ok(match done {
        GroupDone::Ok => GroupAnswer::Ok,
        GroupDone::Count(n) => GroupAnswer::Count(n),
        GroupDone::Read { served, entries } => GroupAnswer::Read {
            served,
            items: fetch(p, entries, false, form).await?,
        },
        GroupDone::Claimed(entries) => GroupAnswer::Claimed(fetch(p, entries, true, form).await?),
        GroupDone::AutoClaimed {
            next,
            entries,
            deleted,
        } => GroupAnswer::AutoClaimed {
            next,
            items: fetch(p, entries, true, form).await?,
            deleted,
        },
    })
}

/// The events of entries by LSN, in `form`; an entry without one is answered by its ID
/// alone when `bare` (JUSTID), else with no fields (a history read's deleted entry).
///
/// The events found are a prefix of the LSNs asked for, in their order, and each is matched
/// to its entry by its place in that order: a run read from the journal backwards (a claim
/// of IDs newest first) is scanned oldest first, so the order in which events are found is
/// not the order of the reply.
async fn fetch(
    p: &Partition,
    entries: Vec<crate::stream::GroupEntry>,
    bare: bool,
    form: EntryForm,
) -> Result<Items, ApiError> {
    let lsns: Vec<u64> = entries.iter().filter_map(|(_, l)| *l).collect();
    let mut fields = Vec::new();
    let list = match form {
        EntryForm::Events => {
            let found = p.fetch_lsns(&lsns, usize::MAX).await;
            let mut found = found.map_err(ApiError::from)?.into_iter();
            place(entries, bare, |id| {
                found.next().map(|e| GroupItem::Entry(id, Some(e)))
            })
        }
        EntryForm::Resp => {
            // Room for entries of a hundred bytes or so at once.
            fields.reserve(lsns.len() * 160);
            let found = p
                .fetch_as(&lsns, usize::MAX, |v| {
                    let start = fields.len();
                    super::resp_streams::encode_record_fields(&mut fields, &v.record);
                    start..fields.len()
                })
                .await;
            let mut found = found.map_err(ApiError::from)?.0.into_iter();
            place(entries, bare, |id| {
                found.next().map(|range| GroupItem::Fields(id, range))
            })
        }
    };
    Ok(Items { list, fields })
}

/// The reply's list: each entry with an LSN as `found` gives it the next event found (none
/// left: no fields), each without one by its ID alone when `bare`, else with no fields.
fn place(
    entries: Vec<crate::stream::GroupEntry>,
    bare: bool,
    mut found: impl FnMut(StreamId) -> Option<GroupItem>,
) -> Vec<GroupItem> {
    entries
        .into_iter()
        .map(|(id, lsn)| match lsn {
            Some(_) => found(id).unwrap_or(GroupItem::Entry(id, None)),
            None if bare => GroupItem::Id(id),
            None => GroupItem::Entry(id, None),
        })
        .collect()
}

fn pending(
    groups: &StreamGroups,
    group: &[u8],
    query: Option<PendingQuery>,
    now: u64,
) -> GroupAnswer {
    let Some(g) = groups.groups.get(group) else {
        return GroupAnswer::Refused(GroupError::NoGroup);
    };
    let Some(q) = query else {
        let range = g
            .pending
            .keys()
            .next()
            .map(|first| (*first, *g.pending.keys().next_back().expect("not empty")));
        let consumers = g
            .consumers
            .iter()
            .filter(|(_, c)| !c.pending.is_empty())
            .map(|(name, c)| (name.clone(), c.pending.len() as u64))
            .collect();
        return GroupAnswer::Pending(PendingAnswer::Summary {
            count: g.pending.len() as u64,
            range,
            consumers,
        });
    };
    let mut out = Vec::new();
    if q.start <= q.end && q.count > 0 {
        let ids: Box<dyn Iterator<Item = &StreamId>> = match &q.consumer {
            Some(name) => match g.consumers.get(name) {
                Some(c) => Box::new(c.pending.range(q.start..=q.end)),
                None => Box::new(std::iter::empty()),
            },
            None => Box::new(g.pending.range(q.start..=q.end).map(|(id, _)| id)),
        };
        for id in ids {
            let p = &g.pending[id];
            let idle = now.saturating_sub(p.delivery_ms);
            if q.min_idle_ms > 0 && idle < q.min_idle_ms {
                continue;
            }
            out.push((*id, p.consumer.to_vec(), idle, p.delivery_count));
            if out.len() == q.count {
                break;
            }
        }
    }
    GroupAnswer::Pending(PendingAnswer::Entries(out))
}

fn info(groups: &StreamGroups, counters: &StreamCounters, what: &InfoWhat) -> GroupAnswer {
    let consumers_of = |g: &crate::stream::Group, full: Option<usize>| {
        g.consumers
            .iter()
            .map(|(name, c)| ConsumerInfo {
                name: name.clone(),
                seen_ms: c.seen_ms,
                active_ms: c.active_ms,
                pending_count: c.pending.len() as u64,
                pending: full.map_or_else(Vec::new, |n| {
                    c.pending
                        .iter()
                        .take(n)
                        .map(|id| {
                            let p = &g.pending[id];
                            (*id, p.delivery_ms, p.delivery_count)
                        })
                        .collect()
                }),
            })
            .collect()
    };
    match what {
        InfoWhat::Consumers(name) => match groups.groups.get(name) {
            None => GroupAnswer::Refused(GroupError::NoGroup),
            Some(g) => GroupAnswer::Groups(vec![GroupInfo {
                name: name.clone(),
                last_id: g.last_id,
                entries_read: g.entries_read,
                lag: counters.lag(g),
                pending_count: g.pending.len() as u64,
                pending: Vec::new(),
                consumers: consumers_of(g, None),
            }]),
        },
        InfoWhat::Groups { full } => GroupAnswer::Groups(
            groups
                .groups
                .iter()
                .map(|(name, g)| GroupInfo {
                    name: name.clone(),
                    last_id: g.last_id,
                    entries_read: g.entries_read,
                    lag: counters.lag(g),
                    pending_count: g.pending.len() as u64,
                    pending: full.map_or_else(Vec::new, |n| {
                        g.pending
                            .iter()
                            .take(n)
                            .map(|(id, p)| {
                                (*id, p.consumer.to_vec(), p.delivery_ms, p.delivery_count)
                            })
                            .collect()
                    }),
                    consumers: consumers_of(g, *full),
                })
                .collect(),
        ),
    }
}

/// Runs `op` on the partition of its stream and returns its answer.
pub(super) async fn call_group(shard: &Rc<Shard>, op: GroupOp) -> Result<GroupAnswer, String> {
    let p = partition_of(op.stream(), shard.shared.partitions);
    match call_in(shard, p, RespOp::Group(op)).await? {
        RespOutcome::Group(a) => Ok(a),
        other => Err(format!("internal error: unexpected reply {other:?}")),
    }
}

/// Whether `name` (upper-cased) is a command of this module.
pub(super) fn is_group_command(name: &[u8]) -> bool {
    matches!(
        name,
        b"XGROUP" | b"XREADGROUP" | b"XACK" | b"XPENDING" | b"XCLAIM" | b"XAUTOCLAIM"
    )
}

/// Runs and answers a command of this module.
pub(super) async fn run(shard: &Rc<Shard>, req: &RespRequest, name: &[u8]) -> Result<(), String> {
    match name {
        b"XGROUP" => xgroup(shard, req).await,
        b"XREADGROUP" => Box::pin(super::resp_read::xreadgroup(shard, req)).await,
        b"XACK" => xack(shard, req).await,
        b"XPENDING" => xpending(shard, req).await,
        b"XCLAIM" => xclaim(shard, req).await,
        b"XAUTOCLAIM" => xautoclaim(shard, req).await,
        _ => unreachable!("not a group command"),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The NOGROUP error of XREADGROUP, XPENDING, XCLAIM, XAUTOCLAIM.
pub(super) fn no_key_or_group(key: &[u8], group: &[u8], suffix: &str) -> String {
    format!(
        "-NOGROUP No such key '{}' or consumer group '{}'{suffix}",
        lossy(key),
        lossy(group)
    )
}

fn subcommand_syntax(cmd: &str, sub: &[u8]) -> String {
    format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try {cmd} HELP.",
        lossy(sub)
    )
}

/// A strict ID (`ms-seq`, `ms`; not `-`, `+`).
fn strict_id(b: &[u8]) -> Result<StreamId, String> {
    if b == b"-" || b == b"+" || b.len() > 127 {
        return Err(INVALID_ID.into());
    }
    parse_id(b, 0).ok_or_else(|| INVALID_ID.to_string())
}

async fn xgroup(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    let Some(sub) = args.get(1).map(|s| s.to_ascii_uppercase()) else {
        return Err(wrong_arity(b"xgroup"));
    };
    if sub == b"HELP" {
        if args.len() != 2 {
            return Err(wrong_arity(b"xgroup|help"));
        }
        let lines = [
            "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CREATE <key> <groupname> <id|$> [option]",
            "    Create a new consumer group. Options are:",
            "    * MKSTREAM",
            "      Create the empty stream if it does not exist.",
            "    * ENTRIESREAD entries_read",
            "      Set the group's entries_read counter (internal use).",
            "CREATECONSUMER <key> <groupname> <consumer>",
            "    Create a new consumer in the specified group.",
            "DELCONSUMER <key> <groupname> <consumer>",
            "    Remove the specified consumer.",
            "DESTROY <key> <groupname>",
            "    Remove the specified group.",
            "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            "    Set the current group ID and entries_read counter.",
            "HELP",
            "    Print this help.",
        ];
        super::resp_commands::help(req, &lines);
        return Ok(());
    }
    let (min, max, arity_name): (usize, usize, &[u8]) = match sub.as_slice() {
        b"CREATE" => (5, 8, b"xgroup|create"),
        b"SETID" => (5, 7, b"xgroup|setid"),
        b"DESTROY" => (4, 4, b"xgroup|destroy"),
        b"CREATECONSUMER" => (5, 5, b"xgroup|createconsumer"),
        b"DELCONSUMER" => (5, 5, b"xgroup|delconsumer"),
        _ => return Err(subcommand_syntax("XGROUP", &args[1])),
    };
    if args.len() < min || (min == max && args.len() != min) {
        return Err(wrong_arity(arity_name));
    }
    // Options of CREATE and SETID.
    let mut mkstream = false;
    let mut entries_read = None;
    let mut i = 5;
    while i < args.len() {
        let o = args[i].to_ascii_uppercase();
        if sub == b"CREATE" && o == b"MKSTREAM" {
            mkstream = true;
            i += 1;
        } else if (sub == b"CREATE" || sub == b"SETID") && o == b"ENTRIESREAD" && i + 1 < args.len()
        {
            let n = integer(&args[i + 1])?;
            if n < -1 {
                return Err("value for ENTRIESREAD must be positive or -1".into());
            }
            entries_read = u64::try_from(n).ok();
            i += 2;
        } else {
            return Err(subcommand_syntax("XGROUP", &args[1]));
        }
    }
    if args.len() > max {
        return Err(subcommand_syntax("XGROUP", &args[1]));
    }
    let key = &args[2];
    let stream = stream_name(req.ctx, key)?;
    let group = args[3].clone();
    let start = |b: &[u8]| -> Result<GroupStart, String> {
        if b == b"$" {
            Ok(GroupStart::Last)
        } else if sub == b"CREATE" {
            strict_id(b).map(GroupStart::Id)
        } else {
            // SETID takes `-` and `+` too, as Redis's non-strict parse does.
            parse_id(b, 0)
                .map(GroupStart::Id)
                .ok_or_else(|| INVALID_ID.to_string())
        }
    };
    let request = match sub.as_slice() {
        b"CREATE" => GroupRequest::Create {
            group: group.clone(),
            start: start(&args[4])?,
            mkstream,
            entries_read,
        },
        b"SETID" => GroupRequest::SetId {
            group: group.clone(),
            start: start(&args[4])?,
            entries_read,
        },
        b"DESTROY" => GroupRequest::Destroy {
            group: group.clone(),
        },
        b"CREATECONSUMER" => GroupRequest::CreateConsumer {
            group: group.clone(),
            consumer: args[4].clone(),
        },
        _ => GroupRequest::DeleteConsumer {
            group: group.clone(),
            consumer: args[4].clone(),
        },
    };
    let answer = call_group(
        shard,
        GroupOp::Write {
            stream,
            request,
            form: EntryForm::Resp,
        },
    )
    .await?;
    match answer {
        GroupAnswer::Ok => req.answer(|r| {
            r.ok();
        }),
        GroupAnswer::Count(n) => req.answer(|r| {
            r.int(n as i64);
        }),
        GroupAnswer::Refused(GroupError::NoStream) => {
            return Err(
                "The XGROUP subcommand requires the key to exist. Note that for CREATE \
                        you may want to use the MKSTREAM option to create an empty stream \
                        automatically."
                    .into(),
            )
        }
        GroupAnswer::Refused(GroupError::GroupExists) => {
            return Err("-BUSYGROUP Consumer Group name already exists".into())
        }
        GroupAnswer::Refused(GroupError::NoGroup) => {
            return Err(format!(
                "-NOGROUP No such consumer group '{}' for key name '{}'",
                lossy(&group),
                lossy(key)
            ))
        }
        GroupAnswer::Refused(e) => return Err(e.to_string()),
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
}

async fn xack(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 4 {
        return Err(wrong_arity(b"xack"));
    }
    let ids = args[3..]
        .iter()
        .map(|a| strict_id(a))
        .collect::<Result<Vec<_>, _>>()?;
    let stream = stream_name(req.ctx, &args[1])?;
    let request = GroupRequest::Ack {
        group: args[2].clone(),
        ids,
    };
    match call_group(
        shard,
        GroupOp::Write {
            stream,
            request,
            form: EntryForm::Resp,
        },
    )
    .await?
    {
        GroupAnswer::Count(n) => req.answer(|r| {
            r.int(n as i64);
        }),
        GroupAnswer::Refused(_) => req.answer(|r| {
            r.int(0);
        }),
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
}

/// An interval bound of XPENDING and XAUTOCLAIM: `(` makes it exclusive.
fn interval(b: &[u8], missing_seq: u64, start: bool) -> Result<StreamId, String> {
    let (exclusive, id) = match b.strip_prefix(b"(") {
        Some(rest) => (true, rest),
        None => (false, b),
    };
    let id = parse_id(id, missing_seq).ok_or_else(|| INVALID_ID.to_string())?;
    if !exclusive {
        return Ok(id);
    }
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

async fn xpending(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 3 {
        return Err(wrong_arity(b"xpending"));
    }
    if args.len() != 3 && !(6..=9).contains(&args.len()) {
        return Err("syntax error".into());
    }
    let query = if args.len() >= 6 {
        let mut at = 3;
        let mut min_idle_ms = 0;
        if args[3].eq_ignore_ascii_case(b"IDLE") {
            min_idle_ms = integer(&args[4])?.max(0) as u64;
            if args.len() < 8 {
                return Err("syntax error".into());
            }
            at += 2;
        }
        let count = integer(&args[at + 2])?.max(0) as usize;
        let start = interval(&args[at], 0, true)?;
        let end = interval(&args[at + 1], u64::MAX, false)?;
        let consumer = args.get(at + 3).cloned();
        if args.len() > at + 4 {
            return Err("syntax error".into());
        }
        Some(PendingQuery {
            min_idle_ms,
            start,
            end,
            count,
            consumer,
        })
    } else {
        None
    };
    let stream = stream_name(req.ctx, &args[1])?;
    let op = GroupOp::Pending {
        stream: stream.clone(),
        group: args[2].clone(),
        query,
    };
    match call_group(shard, op).await? {
        GroupAnswer::Pending(PendingAnswer::Summary {
            count,
            range,
            consumers,
        }) => req.answer(|r| {
            r.array_len(4).int(count as i64);
            match range {
                None => {
                    r.null().null().null_array();
                }
                Some((first, last)) => {
                    r.bulk(first.to_string()).bulk(last.to_string());
                    r.array_len(consumers.len());
                    for (name, n) in &consumers {
                        r.array_len(2).bulk(name).bulk(n.to_string());
                    }
                }
            }
        }),
        GroupAnswer::Pending(PendingAnswer::Entries(list)) => req.answer(|r| {
            r.array_len(list.len());
            for (id, consumer, idle, count) in &list {
                r.array_len(4)
                    .bulk(id.text())
                    .bulk(consumer)
                    .int(*idle as i64)
                    .int(*count as i64);
            }
        }),
        GroupAnswer::Refused(_) | GroupAnswer::NoKey => {
            return Err(no_key_or_group(&args[1], &args[2], ""))
        }
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
}

/// A non-negative integer option, or Redis's error text for it.
fn option_integer(b: &[u8], what: &str) -> Result<i64, String> {
    crate::resp::string2ll(b).ok_or_else(|| what.to_string())
}

async fn xclaim(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 6 {
        return Err(wrong_arity(b"xclaim"));
    }
    let min_idle = option_integer(&args[4], "Invalid min-idle-time argument for XCLAIM")?;
    let mut ids = Vec::new();
    let mut j = 5;
    while j < args.len() {
        match strict_id(&args[j]) {
            Ok(id) => ids.push(id),
            Err(_) => break,
        }
        j += 1;
    }
    let mut time = None;
    let mut retry_count = None;
    let mut force = false;
    let mut just_id = false;
    let mut last_id = None;
    while j < args.len() {
        let more = j + 1 < args.len();
        let o = args[j].to_ascii_uppercase();
        match o.as_slice() {
            b"FORCE" => force = true,
            b"JUSTID" => just_id = true,
            b"IDLE" if more => {
                j += 1;
                let n = option_integer(&args[j], "Invalid IDLE option argument for XCLAIM")?;
                time = Some(ClaimTime::Idle(n.max(0) as u64));
            }
            b"TIME" if more => {
                j += 1;
                let n = option_integer(&args[j], "Invalid TIME option argument for XCLAIM")?;
                time = Some(ClaimTime::At(n.max(0) as u64));
            }
            b"RETRYCOUNT" if more => {
                j += 1;
                let n = option_integer(&args[j], "Invalid RETRYCOUNT option argument for XCLAIM")?;
                retry_count = Some(n.max(0) as u64);
            }
            b"LASTID" if more => {
                j += 1;
                last_id = Some(strict_id(&args[j])?);
            }
            _ => {
                return Err(format!("Unrecognized XCLAIM option '{}'", lossy(&args[j])));
            }
        }
        j += 1;
    }
    let stream = stream_name(req.ctx, &args[1])?;
    let request = GroupRequest::Claim {
        group: args[2].clone(),
        consumer: args[3].clone(),
        min_idle_ms: min_idle.max(0) as u64,
        ids,
        time,
        retry_count,
        force,
        just_id,
        last_id,
    };
    match call_group(
        shard,
        GroupOp::Write {
            stream,
            request,
            form: EntryForm::Resp,
        },
    )
    .await?
    {
        GroupAnswer::Claimed(items) => req.answer(|r| write_items(r, &items)),
        other => return Err(claim_error(args, other)),
    }
    Ok(())
}

/// XCLAIM's and XAUTOCLAIM's error for an answer other than what they claimed.
fn claim_error(args: &[Vec<u8>], answer: GroupAnswer) -> String {
    match answer {
        GroupAnswer::Refused(GroupError::NoGroup | GroupError::NoStream) => {
            no_key_or_group(&args[1], &args[2], "")
        }
        GroupAnswer::Refused(e) => e.to_string(),
        other => format!("internal error: unexpected reply {other:?}"),
    }
}

async fn xautoclaim(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 6 {
        return Err(wrong_arity(b"xautoclaim"));
    }
    let min_idle = option_integer(&args[4], "Invalid min-idle-time argument for XAUTOCLAIM")?;
    let start = interval(&args[5], 0, true)?;
    let mut count = 100usize;
    let mut just_id = false;
    let mut j = 6;
    // Redis bounds COUNT so that its attempts (10 per entry) and IDs fit in a long.
    let max_count = (i64::MAX / 16) as u64;
    while j < args.len() {
        let o = args[j].to_ascii_uppercase();
        if o == b"COUNT" && j + 1 < args.len() {
            let n = crate::resp::string2ll(&args[j + 1])
                .ok_or_else(|| "value is not an integer or out of range".to_string())?;
            if n < 1 || n as u64 > max_count {
                return Err("COUNT must be > 0".into());
            }
            count = n as usize;
            j += 2;
        } else if o == b"JUSTID" {
            just_id = true;
            j += 1;
        } else {
            return Err("syntax error".into());
        }
    }
    let stream = stream_name(req.ctx, &args[1])?;
    let request = GroupRequest::AutoClaim {
        group: args[2].clone(),
        consumer: args[3].clone(),
        min_idle_ms: min_idle.max(0) as u64,
        start,
        count,
        just_id,
    };
    match call_group(
        shard,
        GroupOp::Write {
            stream,
            request,
            form: EntryForm::Resp,
        },
    )
    .await?
    {
        GroupAnswer::AutoClaimed {
            next,
            items,
            deleted,
        } => req.answer(|r| {
            r.array_len(3).bulk(next.to_string());
            write_items(r, &items);
            r.array_len(deleted.len());
            for id in &deleted {
                r.bulk(id.text());
            }
        }),
        other => return Err(claim_error(args, other)),
    }
    Ok(())
}

/// Entries as Redis replies them: `[id, fields]`, `[id, nil]` for one deleted meanwhile,
/// or the bare ID (JUSTID).
pub(super) fn write_items(r: &mut Reply<'_>, items: &Items) {
    r.array_len(items.list.len());
    for item in &items.list {
        match item {
            GroupItem::Entry(id, Some(e)) => write_entry(r, *id, e),
            GroupItem::Fields(id, range) => {
                r.array_len(2).bulk(id.text());
                r.encoded(&items.fields[range.clone()]);
            }
            GroupItem::Entry(id, None) => {
                r.array_len(2).bulk(id.text()).null_array();
            }
            GroupItem::Id(id) => {
                r.bulk(id.text());
            }
        }
    }
}

/// The groups of a stream for XINFO (`None`: no such key).
pub(super) async fn group_infos(
    shard: &Rc<Shard>,
    stream: &str,
    what: InfoWhat,
) -> Result<Option<Vec<GroupInfo>>, String> {
    let op = GroupOp::Info {
        stream: stream.to_string(),
        what,
    };
    match call_group(shard, op).await? {
        GroupAnswer::Groups(list) => Ok(Some(list)),
        GroupAnswer::NoKey => Ok(None),
        GroupAnswer::Refused(_) => Ok(Some(Vec::new())),
        other => Err(format!("internal error: unexpected reply {other:?}")),
    }
}

/// XINFO GROUPS key.
pub(super) async fn xinfo_groups(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let stream = stream_name(req.ctx, &req.args[2])?;
    let Some(list) = group_infos(shard, &stream, InfoWhat::Groups { full: None }).await? else {
        return Err("no such key".into());
    };
    req.answer(|r| {
        r.array_len(list.len());
        for g in &list {
            r.map_len(6);
            r.bulk("name").bulk(&g.name);
            r.bulk("consumers").int(g.consumers.len() as i64);
            r.bulk("pending").int(g.pending_count as i64);
            r.bulk("last-delivered-id").bulk(g.last_id.text());
            r.bulk("entries-read");
            opt_int(r, g.entries_read);
            r.bulk("lag");
            opt_int(r, g.lag);
        }
    });
    Ok(())
}

/// XINFO CONSUMERS key group.
pub(super) async fn xinfo_consumers(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let (key, group) = (&req.args[2], &req.args[3]);
    let stream = stream_name(req.ctx, key)?;
    let op = GroupOp::Info {
        stream: stream.clone(),
        what: InfoWhat::Consumers(group.clone()),
    };
    let list = match call_group(shard, op).await? {
        GroupAnswer::Groups(mut list) if list.len() == 1 => list.pop().expect("one").consumers,
        GroupAnswer::NoKey => return Err("no such key".into()),
        GroupAnswer::Refused(_) => {
            return Err(format!(
                "-NOGROUP No such consumer group '{}' for key name '{}'",
                lossy(group),
                lossy(key)
            ))
        }
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    };
    let now = now_ms();
    req.answer(|r| {
        r.array_len(list.len());
        for c in &list {
            r.map_len(4);
            r.bulk("name").bulk(&c.name);
            r.bulk("pending").int(c.pending_count as i64);
            r.bulk("idle").int(now.saturating_sub(c.seen_ms) as i64);
            r.bulk("inactive")
                .int(c.active_ms.map_or(-1, |a| now.saturating_sub(a) as i64));
        }
    });
    Ok(())
}

/// The `groups` of XINFO STREAM FULL.
pub(super) fn write_full_groups(r: &mut Reply<'_>, list: &[GroupInfo]) {
    r.array_len(list.len());
    for g in list {
        r.map_len(7);
        r.bulk("name").bulk(&g.name);
        r.bulk("last-delivered-id").bulk(g.last_id.text());
        r.bulk("entries-read");
        opt_int(r, g.entries_read);
        r.bulk("lag");
        opt_int(r, g.lag);
        r.bulk("pel-count").int(g.pending_count as i64);
        r.bulk("pending").array_len(g.pending.len());
        for (id, consumer, ms, count) in &g.pending {
            r.array_len(4)
                .bulk(id.text())
                .bulk(consumer)
                .int(*ms as i64)
                .int(*count as i64);
        }
        r.bulk("consumers").array_len(g.consumers.len());
        for c in &g.consumers {
            r.map_len(5);
            r.bulk("name").bulk(&c.name);
            r.bulk("seen-time").int(c.seen_ms as i64);
            r.bulk("active-time")
                .int(c.active_ms.map_or(-1, |a| a as i64));
            r.bulk("pel-count").int(c.pending_count as i64);
            r.bulk("pending").array_len(c.pending.len());
            for (id, ms, count) in &c.pending {
                r.array_len(3)
                    .bulk(id.text())
                    .int(*ms as i64)
                    .int(*count as i64);
            }
        }
    }
}

fn opt_int(r: &mut Reply<'_>, v: Option<u64>) {
    match v {
        Some(n) => {
            r.int(n as i64);
        }
        None => {
            r.null();
        }
    }
}

/// A group read's failure while blocked, in Redis's words (`blocked.c`).
pub(super) fn blocked_error(e: &GroupError) -> String {
    match e {
        GroupError::NoGroup => {
            "-NOGROUP the consumer group this client was blocked on no longer exists".into()
        }
        GroupError::NoStream => "-UNBLOCKED the stream key no longer exists".into(),
        other => other.to_string(),
    }
}
