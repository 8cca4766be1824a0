//! XREAD on the RESP port, with Redis 7.0's semantics (`xreadCommand` in `t_stream.c`,
//! `serveClientsBlockedOnStreamKey` in `blocked.c`).
//!
//! ## Without BLOCK, and before blocking
//!
//! The keys are grouped by partition and each partition's owner reads, in one call, its
//! streams' entries after the IDs given (`$`: the stream's last visible ID, 0-0 for a stream
//! with none, so nothing), at most COUNT per key ([`ReadOp::After`]). The reply names every
//! key that has entries, in the order given (a key given twice is read twice); with none the
//! reply is a null array, unless BLOCK asks to wait.
//!
//! ## Blocking
//!
//! The request registers one wait at each partition its keys span ([`ReadOp::Wait`]), with
//! the IDs read above (`$` resolved: entries that arrive in between are above it, so none is
//! missed; a key given twice waits on its first ID, as in Redis). A partition's owner ends its
//! wait when one of those streams gets an entry above its ID — written by XADD or a native
//! APPEND alike, since both are made visible by `Partition::publish` — and replies with that
//! stream's entries (at most COUNT, 1000 without COUNT), so a blocked XREAD never replies an
//! empty array. The first partition to reply wins; the reply names that one key.
//!
//! The request's task waits for the first of: a partition's reply, the BLOCK timeout (then
//! the null array), its connection closing (no reply), the server stopping (`-SHUTDOWN`). It
//! answers first, then cancels the other waits: it sets the wait's cancel flag, shared with
//! every owner, and sends each owner a cancel that wakes the wait; an owner checks the flag
//! before it registers the wait, so a cancel that overtakes the wait still ends it. The task
//! ends once every owner replied, so a wait never outlives its request (at a server stop it
//! gives the owners 500 ms). `evring_xread_waits` counts the waits registered per partition.
//!
//! A connection runs a blocking XREAD alone ([`super::resp_conn`]): at most one is blocked
//! per connection, so at most `max_connections` are, each holding its request and its keys
//! and IDs (at most [`MAX_KEYS`]).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::resp_commands::wrong_arity;
use super::resp_conn::RespRequest;
use super::resp_streams::{
    error_text, parse_id, range_all, stream_name, write_entries, RespOp, RespOutcome, INVALID_ID,
};
use super::route::{OpResult, PartOp, Shard};
use crate::protocol::{partition_of, RecordedEvent, StreamId};
use crate::resp::{Reply, RespVersion};
use crate::stream::{Partition, WaitEnd, WaitKey};

/// Entries a woken XREAD without COUNT replies at most (Redis's
/// `XREAD_BLOCKED_DEFAULT_COUNT`).
pub const BLOCKED_DEFAULT_COUNT: usize = 1000;

/// The most keys an XREAD may name (an evring limit: Redis has none). It bounds what a
/// blocked XREAD holds (docs/OPERATIONS.md).
pub const MAX_KEYS: usize = 10_000;

/// A BLOCK longer than this (about 100 years) waits without a timeout.
const MAX_BLOCK_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// How long a stopping server's blocked XREAD waits for the owners to end its waits.
const STOP_CLEANUP: Duration = Duration::from_millis(500);

const UNBALANCED: &str = "Unbalanced XREAD list of streams: for each stream key an ID or '$' \
                          must be specified.";

type Entries = Vec<(StreamId, RecordedEvent)>;

/// XREAD's part on one partition, run by its owner.
#[derive(Debug)]
pub enum ReadOp {
    /// Each stream's entries after its ID (`None`: `$`), at most `count` each.
    After {
        streams: Vec<(String, Option<StreamId>)>,
        count: usize,
        /// The XREAD has BLOCK (see `BLOCKED_RACE_NS` in [`super::resp_groups`]).
        blocking: bool,
    },
    /// Waits until one of `streams` has entries after its ID, then reads them (at most
    /// `count`); ends early once `cancelled` is set and a [`ReadOp::Cancel`] arrives.
    Wait {
        key: WaitKey,
        streams: Vec<(String, StreamId)>,
        count: usize,
        cancelled: Arc<AtomicBool>,
        /// XREADGROUP `>`: woken, it reads as this group's consumer (module docs of
        /// [`super::resp_groups`]).
        group: Option<GroupRead>,
    },
    /// Wakes wait `key` so it sees its cancel flag.
    Cancel { key: WaitKey },
}

/// What the owner answers.
#[derive(Debug)]
pub enum ReadOutcome {
    /// [`ReadOp::After`]: per stream, the ID read after (`$` resolved) and the entries.
    After(Vec<(StreamId, Entries)>),
    /// [`ReadOp::Wait`]: the stream that got entries (its index) and its entries; `None`:
    /// cancelled.
    Woken(Option<(usize, Entries)>),
    /// [`ReadOp::Cancel`] done.
    Done,
}

/// A key of the request.
struct Key {
    /// Its index in the request's arguments (the reply names it as given).
    arg: usize,
    stream: String,
    /// `None`: `$` (XREADGROUP: `>`).
    id: Option<StreamId>,
}

/// A parsed XREAD or XREADGROUP.
struct Xread {
    /// 0: no COUNT.
    count: usize,
    /// BLOCK milliseconds (0: no timeout).
    block: Option<u64>,
    keys: Vec<Key>,
    /// XREADGROUP's group, consumer and NOACK.
    group: Option<GroupRead>,
}

/// Whose reads an XREADGROUP makes.
#[derive(Clone, Debug)]
pub struct GroupRead {
    pub group: Vec<u8>,
    pub consumer: Vec<u8>,
    pub noack: bool,
}

/// An ID as XREAD reads it: `ms-seq` or `ms` (seq 0); `-` and `+` are not IDs here.
fn parse_read_id(b: &[u8]) -> Option<StreamId> {
    if b.len() > 127 || b == b"-" || b == b"+" {
        return None;
    }
    parse_id(b, 0)
}

/// XREAD's arguments, checked in Redis's order and with its error texts.
fn parse(req: &RespRequest, xreadgroup: bool) -> Result<Xread, String> {
    let args = &req.args;
    let argc = args.len();
    if argc < if xreadgroup { 7 } else { 4 } {
        return Err(wrong_arity(if xreadgroup {
            b"xreadgroup"
        } else {
            b"xread"
        }));
    }
    let (mut count, mut block, mut streams_arg) = (0usize, None, 0usize);
    let mut group: Option<GroupRead> = None;
    let mut noack = false;
    let mut i = 1;
    while i < argc {
        let more = argc - i - 1;
        let o = args[i].to_ascii_uppercase();
        match o.as_slice() {
            b"BLOCK" if more > 0 => {
                i += 1;
                let ms = crate::resp::string2ll(&args[i])
                    .ok_or("timeout is not an integer or out of range")?;
                if ms < 0 {
                    return Err("timeout is negative".into());
                }
                block = Some(ms as u64);
            }
            b"COUNT" if more > 0 => {
                i += 1;
                let n = crate::resp::string2ll(&args[i])
                    .ok_or("value is not an integer or out of range")?;
                count = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
            }
            b"STREAMS" if more > 0 => {
                streams_arg = i + 1;
                if (argc - streams_arg) % 2 != 0 {
                    return Err(UNBALANCED.into());
                }
                break;
            }
            b"GROUP" if more >= 2 && xreadgroup => {
                group = Some(GroupRead {
                    group: args[i + 1].clone(),
                    consumer: args[i + 2].clone(),
                    noack: false,
                });
                i += 2;
            }
            b"NOACK" if xreadgroup => noack = true,
            b"GROUP" if more >= 2 => {
                return Err(
                    "The GROUP option is only supported by XREADGROUP. You called \
                            XREAD instead."
                        .into(),
                )
            }
            b"NOACK" => {
                return Err(
                    "The NOACK option is only supported by XREADGROUP. You called \
                            XREAD instead."
                        .into(),
                )
            }
            _ => return Err("syntax error".into()),
        }
        i += 1;
    }
    if streams_arg == 0 {
        return Err("syntax error".into());
    }
    if xreadgroup && group.is_none() {
        return Err("Missing GROUP option for XREADGROUP".into());
    }
    if let Some(g) = group.as_mut() {
        g.noack = noack;
    }
    let n = (argc - streams_arg) / 2;
    if n > MAX_KEYS {
        return Err(format!(
            "XREAD names {n} keys: this server reads at most {MAX_KEYS} keys at once"
        ));
    }
    let mut keys = Vec::with_capacity(n);
    for k in 0..n {
        let arg = streams_arg + k;
        let stream = stream_name(req.ctx, &args[arg])?;
        let id = match args[arg + n].as_slice() {
            b"$" if xreadgroup => {
                return Err(
                    "The $ ID is meaningless in the context of XREADGROUP: you want to \
                            read the history of this consumer by specifying a proper ID, or \
                            use the > ID to get new messages. The $ ID would just return an \
                            empty result set."
                        .into(),
                )
            }
            b">" if xreadgroup => None,
            b"$" => None,
            b">" => {
                return Err(
                    "The > ID can be specified only when calling XREADGROUP using the \
                            GROUP <group> <consumer> option."
                        .into(),
                )
            }
            other => Some(parse_read_id(other).ok_or(INVALID_ID)?),
        };
        keys.push(Key { arg, stream, id });
    }
    Ok(Xread {
        count,
        block,
        keys,
        group,
    })
}

type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs every future at once; their outputs in order.
async fn join_all<T>(mut futures: Vec<Pending<'_, T>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future is done"))
        .collect()
}

/// Runs `op` on partition `p`.
async fn call(shard: &Rc<Shard>, p: u32, op: ReadOp) -> Result<ReadOutcome, String> {
    match shard.call(p, PartOp::Resp(RespOp::Read(op))).await {
        OpResult::Resp(RespOutcome::Read(outcome)) => Ok(outcome),
        OpResult::Err(e) => Err(error_text(&e)),
        other => Err(format!("internal error: unexpected reply {other:?}")),
    }
}

/// The keys `chosen` (indexes into `keys`) grouped by partition, in partition order.
fn by_partition(shard: &Shard, keys: &[Key], chosen: &[usize]) -> Vec<(u32, Vec<usize>)> {
    let mut groups: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for &k in chosen {
        let p = partition_of(&keys[k].stream, shard.shared.partitions);
        groups.entry(p).or_default().push(k);
    }
    groups.into_iter().collect()
}

/// Answers with the entries of each key: RESP2 `[[key, entries], …]`, RESP3 a map.
fn answer_streams(req: &RespRequest, served: &[(usize, &Entries)]) {
    req.answer(|r: &mut Reply<'_>| {
        let resp2 = r.version() == RespVersion::Resp2;
        if resp2 {
            r.array_len(served.len());
        } else {
            r.map_len(served.len());
        }
        for (arg, entries) in served {
            if resp2 {
                r.array_len(2);
            }
            r.bulk(&req.args[*arg]);
            write_entries(r, entries);
        }
    });
}

/// XREAD [COUNT count] [BLOCK milliseconds] STREAMS key [key …] id [id …]
pub(super) async fn xread(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let x = parse(req, false)?;
    let count = if x.count == 0 { usize::MAX } else { x.count };
    let all: Vec<usize> = (0..x.keys.len()).collect();
    let groups = by_partition(shard, &x.keys, &all);
    let calls: Vec<Pending<'_, _>> = groups
        .iter()
        .map(|(p, ks)| {
            let streams = ks
                .iter()
                .map(|&k| (x.keys[k].stream.clone(), x.keys[k].id))
                .collect();
            let op = ReadOp::After {
                streams,
                count,
                blocking: x.block.is_some(),
            };
            Box::pin(call(shard, *p, op)) as Pending<'_, _>
        })
        .collect();
    // Per key: the ID read after, and the entries.
    let mut read: Vec<Option<(StreamId, Entries)>> = x.keys.iter().map(|_| None).collect();
    for ((_, ks), outcome) in groups.iter().zip(join_all(calls).await) {
        match outcome? {
            ReadOutcome::After(list) if list.len() == ks.len() => {
                for (&k, got) in ks.iter().zip(list) {
                    read[k] = Some(got);
                }
            }
            other => return Err(format!("internal error: unexpected reply {other:?}")),
        }
    }
    let read: Vec<(StreamId, Entries)> = read
        .into_iter()
        .map(|r| r.expect("every key was read"))
        .collect();
    let served: Vec<(usize, &Entries)> = x
        .keys
        .iter()
        .zip(&read)
        .filter(|(_, (_, entries))| !entries.is_empty())
        .map(|(key, (_, entries))| (key.arg, entries))
        .collect();
    if !served.is_empty() {
        answer_streams(req, &served);
        return Ok(());
    }
    let Some(block) = x.block else {
        req.answer(|r| {
            r.null_array();
        });
        return Ok(());
    };
    let after: Vec<StreamId> = read.iter().map(|(id, _)| *id).collect();
    block_for(shard, req, &x, &after, block).await
}

thread_local! {
    /// The number of this shard's next wait.
    static NEXT_WAIT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A wait key no other wait of this shard has.
fn next_wait_key(shard: &Shard) -> WaitKey {
    let n = NEXT_WAIT.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    (shard.id as u32, n)
}

/// How a blocked XREAD's wait ended.
enum End {
    /// Group `g`'s key `i` (index in the group) got `entries`.
    Woken(usize, usize, Entries),
    Timeout,
    /// The connection closed (`false`) or the server is stopping (`true`).
    Ended(bool),
    Failed(String),
}

/// Counts a blocked XREAD out of INFO's `blocked_clients` when it ends, however it ends.
struct Unblock<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Unblock<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Blocks until a key gets entries after `after[k]` (see the module docs).
async fn block_for(
    shard: &Rc<Shard>,
    req: &RespRequest,
    x: &Xread,
    after: &[StreamId],
    block: u64,
) -> Result<(), String> {
    let blocked = &shard.shared.resp.blocked;
    blocked.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let _blocked = Unblock(blocked);
    let key = next_wait_key(shard);
    let cancelled = Arc::new(AtomicBool::new(false));
    let count = if x.count == 0 {
        BLOCKED_DEFAULT_COUNT
    } else {
        x.count
    };
    // A key given twice waits on its first ID.
    let mut first: Vec<usize> = Vec::new();
    for (k, key) in x.keys.iter().enumerate() {
        if !first.iter().any(|&f| x.keys[f].stream == key.stream) {
            first.push(k);
        }
    }
    let groups = by_partition(shard, &x.keys, &first);
    let mut waits: Vec<Option<Pending<'_, _>>> = groups
        .iter()
        .map(|(p, ks)| {
            let op = ReadOp::Wait {
                key,
                streams: ks
                    .iter()
                    .map(|&k| (x.keys[k].stream.clone(), after[k]))
                    .collect(),
                count,
                cancelled: cancelled.clone(),
                group: x.group.clone(),
            };
            Some(Box::pin(call(shard, *p, op)) as Pending<'_, _>)
        })
        .collect();
    let mut timer: Option<Pending<'_, ()>> = (block > 0 && block <= MAX_BLOCK_MS)
        .then(|| Box::pin(glommio::timer::sleep(Duration::from_millis(block))) as Pending<'_, ()>);
    let mut ended = Box::pin(req.connection_ended());
    let end = std::future::poll_fn(|cx| {
        for (g, slot) in waits.iter_mut().enumerate() {
            let Some(wait) = slot.as_mut() else { continue };
            if let Poll::Ready(outcome) = wait.as_mut().poll(cx) {
                *slot = None;
                return Poll::Ready(match outcome {
                    Ok(ReadOutcome::Woken(Some((i, entries)))) => End::Woken(g, i, entries),
                    Ok(other) => End::Failed(format!("internal error: unexpected reply {other:?}")),
                    Err(text) => End::Failed(text),
                });
            }
        }
        if timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
        {
            return Poll::Ready(End::Timeout);
        }
        if let Poll::Ready(stopping) = ended.as_mut().poll(cx) {
            return Poll::Ready(End::Ended(stopping));
        }
        Poll::Pending
    })
    .await;
    let mut stopping = false;
    let mut result = Ok(());
    match end {
        End::Woken(g, i, entries) => answer_streams(req, &[(x.keys[groups[g].1[i]].arg, &entries)]),
        End::Timeout => req.answer(|r| {
            r.null_array();
        }),
        End::Ended(true) => {
            stopping = true;
            req.answer(|r| {
                r.error(
                    "-SHUTDOWN the server is shutting down: XREAD again once it is back, from \
                     the last ID received",
                );
            });
        }
        End::Ended(false) => req.drop_answer(),
        End::Failed(text) => result = Err(text),
    }
    // The waits still registered end now.
    cancelled.store(true, Ordering::Release);
    let cleanup = async {
        for ((p, _), wait) in groups.iter().zip(waits) {
            if let Some(wait) = wait {
                let _ = call(shard, *p, ReadOp::Cancel { key }).await;
                let _ = wait.await;
            }
        }
    };
    if stopping || shard.shared.stop.load(Ordering::Acquire) {
        let _ = glommio::timer::timeout(STOP_CLEANUP, async {
            cleanup.await;
            Ok::<(), glommio::GlommioError<()>>(())
        })
        .await;
    } else {
        cleanup.await;
    }
    result
}

/// A blocked XREADGROUP woken on `stream`: its entries read as the group's consumer
/// (`None`: none came, wait on), or Redis's error when the stream or the group is gone.
async fn group_wake(
    p: &Partition,
    stream: &str,
    g: &GroupRead,
    count: usize,
) -> Result<Option<Entries>, super::api_error::ApiError> {
    use super::resp_groups::{blocked_error, run_write, EntryForm, GroupAnswer, GroupItem};
    let gone = |e: &crate::stream::GroupError| {
        super::api_error::ApiError::new(crate::protocol::code::INVALID_ARGUMENT, blocked_error(e))
    };
    if !p.stream_placed(stream) {
        return Err(gone(&crate::stream::GroupError::NoStream));
    }
    let request = crate::stream::GroupRequest::Read {
        group: g.group.clone(),
        consumer: g.consumer.clone(),
        after: None,
        count,
        noack: g.noack,
    };
    match run_write(p, stream.to_string(), request, EntryForm::Events).await? {
        GroupAnswer::Read { items, .. } if !items.is_empty() => Ok(Some(
            items
                .list
                .into_iter()
                .filter_map(|item| match item {
                    GroupItem::Entry(id, Some(e)) => Some((id, e)),
                    _ => None,
                })
                .collect(),
        )),
        GroupAnswer::Read { .. } => Ok(None),
        GroupAnswer::Refused(e) => Err(gone(&e)),
        other => Err(super::api_error::ApiError::new(
            crate::protocol::code::INVALID_ARGUMENT,
            format!("internal error: unexpected reply {other:?}"),
        )),
    }
}

/// A native GROUP_READ that found nothing new: waits up to `block` for entries new to the
/// group on `stream`, then reads them as the consumer (the owner's `ReadOp::Wait` with a
/// group, as a blocked XREADGROUP). No entries when the time passes; error 31 when the server
/// stops meanwhile (it is checked every 100 ms); the group or stream going away answers as
/// a blocked XREADGROUP's does.
pub(super) async fn group_wait(
    shard: &Rc<Shard>,
    stream: &str,
    group: GroupRead,
    count: usize,
    block: Duration,
) -> Result<Entries, super::api_error::ApiError> {
    use super::api_error::ApiError;
    let p = partition_of(stream, shard.shared.partitions);
    let key = next_wait_key(shard);
    let cancelled = Arc::new(AtomicBool::new(false));
    let op = ReadOp::Wait {
        key,
        streams: vec![(stream.to_string(), StreamId::ZERO)],
        count: count.min(BLOCKED_DEFAULT_COUNT),
        cancelled: cancelled.clone(),
        group: Some(group),
    };
    let mut wait = Box::pin(shard.call(p, PartOp::Resp(RespOp::Read(op))));
    let deadline = std::time::Instant::now() + block;
    let mut stopping = false;
    let outcome = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let tick = left.min(Duration::from_millis(100));
        let polled = glommio::timer::timeout(tick, async {
            Ok::<_, glommio::GlommioError<()>>(wait.as_mut().await)
        })
        .await;
        if let Ok(outcome) = polled {
            break Some(outcome);
        }
        stopping = shard.shared.stop.load(Ordering::Acquire);
        if stopping || left.is_zero() {
            break None;
        }
    };
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => {
            cancelled.store(true, Ordering::Release);
            let _ = shard
                .call(p, PartOp::Resp(RespOp::Read(ReadOp::Cancel { key })))
                .await;
            let outcome = wait.await;
            if stopping {
                return Err(ApiError::new(
                    crate::protocol::code::SHUTTING_DOWN,
                    "the server is shutting down: read again once it is back",
                ));
            }
            outcome
        }
    };
    match outcome {
        OpResult::Resp(RespOutcome::Read(ReadOutcome::Woken(Some((_, entries))))) => Ok(entries),
        OpResult::Resp(RespOutcome::Read(ReadOutcome::Woken(None))) => Ok(Vec::new()),
        OpResult::Err(e) => Err(e),
        other => Err(ApiError::new(
            crate::protocol::code::INVALID_ARGUMENT,
            format!("internal error: unexpected reply {other:?}"),
        )),
    }
}

/// XREADGROUP GROUP group consumer [COUNT count] [BLOCK milliseconds] [NOACK] STREAMS key
/// [key …] id [id …] (module docs of [`super::resp_groups`]).
pub(super) async fn xreadgroup(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    use super::resp_groups::{call_group, no_key_or_group, EntryForm, GroupAnswer, GroupOp, Items};
    let x = parse(req, true)?;
    let g = x.group.clone().expect("XREADGROUP has a group");
    let count = if x.count == 0 { usize::MAX } else { x.count };
    let mut served: Vec<(usize, Items)> = Vec::new();
    for key in &x.keys {
        let request = crate::stream::GroupRequest::Read {
            group: g.group.clone(),
            consumer: g.consumer.clone(),
            after: key.id,
            count,
            noack: g.noack,
        };
        let op = if x.block.is_some() && key.id.is_none() {
            GroupOp::BlockingRead {
                stream: key.stream.clone(),
                request,
                form: EntryForm::Resp,
            }
        } else {
            GroupOp::Write {
                stream: key.stream.clone(),
                request,
                form: EntryForm::Resp,
            }
        };
        match call_group(shard, op).await? {
            GroupAnswer::Read {
                served: true,
                items,
            } => served.push((key.arg, items)),
            GroupAnswer::Read { .. } => {}
            GroupAnswer::Refused(
                crate::stream::GroupError::NoGroup | crate::stream::GroupError::NoStream,
            ) => {
                return Err(no_key_or_group(
                    &req.args[key.arg],
                    &g.group,
                    " in XREADGROUP with GROUP option",
                ))
            }
            GroupAnswer::Gone => {
                return Err(super::resp_groups::blocked_error(
                    &crate::stream::GroupError::NoStream,
                ))
            }
            GroupAnswer::Refused(e) => return Err(e.to_string()),
            other => return Err(format!("internal error: unexpected reply {other:?}")),
        }
    }
    if !served.is_empty() {
        req.answer(|r: &mut Reply<'_>| {
            let resp2 = r.version() == RespVersion::Resp2;
            if resp2 {
                r.array_len(served.len());
            } else {
                r.map_len(served.len());
            }
            for (arg, items) in &served {
                if resp2 {
                    r.array_len(2);
                }
                r.bulk(&req.args[*arg]);
                super::resp_groups::write_items(r, items);
            }
        });
        return Ok(());
    }
    let Some(block) = x.block else {
        req.answer(|r| {
            r.null_array();
        });
        return Ok(());
    };
    let after = vec![StreamId::ZERO; x.keys.len()];
    block_for(shard, req, &x, &after, block).await
}

/// Runs XREAD's part on partition `p`, its owner.
pub(super) async fn run_op(p: &Partition, op: ReadOp) -> OpResult {
    let outcome = match op {
        ReadOp::After {
            streams,
            count,
            blocking,
        } => {
            let mut out = Vec::with_capacity(streams.len());
            for (stream, id) in streams {
                let race = super::resp_groups::BLOCKED_RACE_NS;
                if blocking && p.is_other_type(&stream) && p.deleted_lately(&stream, race) {
                    // Replaced by another type just before this XREAD came (SET): concurrent
                    // with it, so ordered first, as for XREADGROUP (`BLOCKED_RACE_NS`) — the
                    // XREAD blocked on the stream, and waits on from 0-0.
                    out.push((id.unwrap_or(StreamId::ZERO), Vec::new()));
                    continue;
                }
                if p.is_other_type(&stream) {
                    return OpResult::Err(super::api_error::ApiError::new(
                        crate::protocol::code::INVALID_ARGUMENT,
                        super::resp_streams::WRONGTYPE,
                    ));
                }
                let Some(after) = id else {
                    out.push((
                        p.last_visible_id(&stream).unwrap_or(StreamId::ZERO),
                        Vec::new(),
                    ));
                    continue;
                };
                let entries = match after.successor() {
                    Some(start) => {
                        match range_all(p, &stream, start, StreamId::MAX, count, false).await {
                            Ok(entries) => entries,
                            Err(e) => return OpResult::Err(e.into()),
                        }
                    }
                    None => Vec::new(),
                };
                out.push((after, entries));
            }
            ReadOutcome::After(out)
        }
        ReadOp::Wait {
            key,
            mut streams,
            count,
            cancelled,
            group,
        } => loop {
            if cancelled.load(Ordering::Acquire) {
                break ReadOutcome::Woken(None);
            }
            let i = match p.wait_for_entries(key, &streams).await {
                WaitEnd::Cancelled => break ReadOutcome::Woken(None),
                WaitEnd::Ready(i) => i,
            };
            let (stream, after) = &streams[i];
            if let Some(g) = &group {
                match Box::pin(group_wake(p, stream, g, count)).await {
                    Ok(Some(entries)) => break ReadOutcome::Woken(Some((i, entries))),
                    Ok(None) => {
                        let last = p.last_visible_id(stream).unwrap_or(StreamId::ZERO);
                        streams[i].1 = last.max(*after);
                        continue;
                    }
                    Err(e) => return OpResult::Err(e),
                }
            }
            if p.is_other_type(stream) {
                // The key became a list, string or set since it was found ready (SET, or DEL
                // then LPUSH or SADD): as Redis 7.0 does for XREAD, the wait goes on (only an
                // event stream's entries make a wait ready; a group reader answered above).
                continue;
            }
            // Ready: the stream's last ID is above `after`, so `after` has a successor.
            let start = after.successor().unwrap_or(StreamId::MAX);
            match range_all(p, stream, start, StreamId::MAX, count, false).await {
                Ok(entries) if !entries.is_empty() => break ReadOutcome::Woken(Some((i, entries))),
                // The entries above `after` are gone already: wait for the next ones.
                Ok(_) => {
                    if let Some(last) = p.last_visible_id(stream) {
                        streams[i].1 = last.max(*after);
                    }
                }
                Err(e) => return OpResult::Err(e.into()),
            }
        },
        ReadOp::Cancel { key } => {
            p.cancel_wait(key);
            ReadOutcome::Done
        }
    };
    OpResult::Resp(RespOutcome::Read(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_ids_read_as_redis_reads_them() {
        assert_eq!(crate::resp::string2ll(b"0"), Some(0));
        assert_eq!(crate::resp::string2ll(b"-12"), Some(-12));
        assert_eq!(
            crate::resp::string2ll(b"9223372036854775807"),
            Some(i64::MAX)
        );
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1.5",
            b"9223372036854775808",
        ] {
            assert_eq!(
                crate::resp::string2ll(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_read_id(b"5"), Some(StreamId::new(5, 0)));
        assert_eq!(
            parse_read_id(b"1-18446744073709551615"),
            Some(StreamId::new(1, u64::MAX))
        );
        for bad in [&b"-"[..], b"+", b"x", b"1-", b"-1", b"1-x", b"1-2-3"] {
            assert_eq!(parse_read_id(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
