//! MULTI, EXEC and DISCARD on the RESP port (Redis 7.0's `multi.c`), handled as requests
//! are read ([`admit`]).
//!
//! ## Queueing
//!
//! After MULTI, every command but EXEC, DISCARD, MULTI, WATCH, QUIT and RESET is queued and
//! answered `+QUEUED` in its turn among the replies, not run. A command Redis would refuse
//! before running it (unknown, wrong number of arguments, an unknown CONFIG subcommand) is
//! answered with that error instead and marks the transaction, which EXEC then discards with
//! `-EXECABORT`; so does a transaction whose queued commands would take more than
//! `request_frame_bytes_max` bytes (a transaction is one request in pieces). RESET discards
//! the transaction; MULTI inside one is an error that leaves it going.
//!
//! ## EXEC
//!
//! The queued commands' keys must all be in one partition, or EXEC answers
//! `-CROSSSLOT Keys in request don't hash to the same slot` and discards them (a command's
//! keys are read from its arguments: [`command_keys`]; a queued SELECT changes the database
//! of the keys after it). Then the commands run in order, and EXEC answers an array of their
//! replies. Each run of consecutive write commands (XADD, XDEL, XTRIM, XSETID, DEL, UNLINK,
//! LPUSH, RPUSH, SET, SADD, FLUSHDB, FLUSHALL: [`super::resp_writes`]) is one partition
//! transaction
//! (`crate::stream::Partition::transaction`): placed in one turn of the partition with no
//! other write between, in the journal's one open frame, so durable together (a crash keeps
//! all of them or none) and visible together (a blocked XREAD woken by the first sees all).
//! Writes that outgrow the open frame's room span frames in a row instead, each durable on
//! its own; FLUSHDB/FLUSHALL reach every partition, one after another. Any other command
//! (a read) runs once the writes before it are answered, and sees them. Connection commands
//! (SELECT, CLIENT, HELLO, …) take effect when EXEC is read, for the commands after them.
//!
//! Nothing else of this connection runs between an EXEC's commands — requests read after
//! EXEC wait until its last command is answered, or until its last writes have their turn
//! at a partition of this shard ([`Gate`], `run_writes`), and those read before it were
//! started before its first. Another connection's write may fall between two runs of writes
//! split by a read, never inside a run.
//!
//! WATCH is refused (`ERR WATCH is not supported by this server`; inside MULTI, Redis's
//! `WATCH inside MULTI is not allowed`), so EXEC never aborts for a watched key. UNWATCH,
//! with nothing ever watched, answers `+OK`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use super::conn::Admitted;
use super::resp_commands::{unknown_command, wrong_arity};
use super::resp_conn::{Ctx, Ordered, Resp, RespRequest, DATABASES};
use super::resp_stats::Mark;
use super::route::Shard;
use crate::protocol::partition_of;
use crate::resp::{Reply, RespVersion};

/// A connection's transaction state.
#[derive(Default)]
pub(super) struct MultiState {
    /// The transaction being queued: after MULTI, before EXEC or DISCARD.
    queue: Option<Queue>,
    /// The last EXEC's gate, while it is closed: requests read after that EXEC wait for it.
    gate: Option<Rc<Gate>>,
}

#[derive(Default)]
struct Queue {
    commands: Vec<RespRequest>,
    /// A command was refused while queueing: EXEC aborts.
    dirty: bool,
    /// What the queued commands take (their arguments, and 16 bytes per argument).
    bytes: usize,
}

/// What a request carries of transactions.
#[derive(Default)]
pub(super) struct TxLink {
    /// Wait for this gate before running (an EXEC read before this request).
    after: Option<Rc<Gate>>,
    /// This request is an EXEC: its commands.
    exec: Option<Box<Exec>>,
}

impl TxLink {
    /// Neither an EXEC nor behind one: it runs as it is read.
    pub(super) fn is_plain(&self) -> bool {
        self.after.is_none() && self.exec.is_none()
    }
}

/// An EXEC's commands to run in its task.
struct Exec {
    /// The commands to run in order, answering into `replies`.
    commands: Vec<RespRequest>,
    /// Every queued command's reply (the connection commands' are there already).
    replies: Rc<RefCell<Ordered>>,
    count: usize,
    /// The protocol of the EXEC's own reply (a queued HELLO changes the replies after it).
    version: RespVersion,
    /// Opened once EXEC has its reply.
    gate: Rc<Gate>,
}

/// Holds the requests read after an EXEC until it is answered. Waiters are woken in the
/// order they began to wait, which is the order they were read.
#[derive(Default)]
pub(super) struct Gate {
    open: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    fn open(&self) {
        self.open.set(true);
        for w in self.waiters.take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.open.get() {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Opens the gate when dropped: when EXEC has answered, or its task is dropped with the
/// connection.
struct OpenOnDrop(Rc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Redis 7.0's arity of each command the RESP port knows (negative: at least that many
/// arguments, the name included), for the checks made while queueing. A command the port
/// serves but this table lacks is queued unchecked and checked when it runs.
const ARITY: &[(&str, i64)] = &[
    ("PING", -1),
    ("ECHO", 2),
    ("SELECT", 2),
    ("AUTH", -2),
    ("HELLO", -1),
    ("CLIENT", -2),
    ("COMMAND", -1),
    ("RESET", 1),
    ("QUIT", -1),
    ("XADD", -5),
    ("XLEN", 2),
    ("XRANGE", -4),
    ("XREVRANGE", -4),
    ("XREAD", -4),
    ("XDEL", -3),
    ("XTRIM", -4),
    ("XSETID", -3),
    ("XINFO", -2),
    ("XGROUP", -2),
    ("XREADGROUP", -7),
    ("XACK", -4),
    ("XPENDING", -3),
    ("XCLAIM", -6),
    ("XAUTOCLAIM", -6),
    ("RENAME", 3),
    ("RESTORE", -4),
    ("LPUSH", -3),
    ("RPUSH", -3),
    ("LLEN", 2),
    ("LRANGE", 4),
    ("SET", -3),
    ("GET", 2),
    ("SADD", -3),
    ("SMEMBERS", 2),
    ("SCARD", 2),
    ("SISMEMBER", 3),
    ("DEL", -2),
    ("UNLINK", -2),
    ("DBSIZE", 1),
    ("EXISTS", -2),
    ("TYPE", 2),
    ("KEYS", 2),
    ("SCAN", -2),
    ("INFO", -1),
    ("CONFIG", -2),
    ("MULTI", 1),
    ("EXEC", 1),
    ("DISCARD", 1),
    ("WATCH", -2),
    ("UNWATCH", 1),
];

/// The checks Redis makes before it queues a command: it exists and has its arity (`name`
/// upper-cased).
fn check(name: &[u8], args: &[Vec<u8>]) -> Result<(), String> {
    check_in(name, args, true)
}

/// Whether a command passes the checks Redis makes before it runs one (outside a
/// transaction): whether an error it is answered with is a rejection (INFO commandstats'
/// `rejected_calls`) rather than a failure.
pub(super) fn prechecks_pass(args: &[Vec<u8>]) -> bool {
    let Some(first) = args.first() else {
        return false;
    };
    check_in(&first.to_ascii_uppercase(), args, false).is_ok()
}

fn check_in(name: &[u8], args: &[Vec<u8>], in_multi: bool) -> Result<(), String> {
    if let Some(checked) = super::resp_ev::check(name, args, in_multi) {
        return checked;
    }
    let known = super::resp_streams::COMMANDS
        .iter()
        .any(|c| c.as_bytes() == name);
    if !known {
        return Err(unknown_command(args));
    }
    if let Some(&(_, arity)) = ARITY.iter().find(|(n, _)| n.as_bytes() == name) {
        let n = args.len() as i64;
        if (arity > 0 && n != arity) || n < -arity {
            return Err(wrong_arity(name));
        }
    }
    if name == b"CONFIG" {
        super::resp_info::config_check(args)?;
    }
    Ok(())
}

/// The keys a command names (`name` upper-cased), as Redis's key specs find them.
pub(super) fn command_keys<'a>(name: &[u8], args: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
    let rest = args.get(1..).unwrap_or_default();
    match name {
        b"XADD" | b"XLEN" | b"XRANGE" | b"XREVRANGE" | b"XDEL" | b"XTRIM" | b"XSETID" | b"TYPE"
        | b"LPUSH" | b"RPUSH" | b"LLEN" | b"LRANGE" | b"SET" | b"GET" | b"SADD" | b"SMEMBERS"
        | b"SCARD" | b"SISMEMBER" | b"XACK" | b"XPENDING" | b"XCLAIM" | b"XAUTOCLAIM"
        | b"RESTORE" => rest.iter().take(1).map(Vec::as_slice).collect(),
        b"XGROUP" => rest.iter().skip(1).take(1).map(Vec::as_slice).collect(),
        b"RENAME" => rest.iter().take(2).map(Vec::as_slice).collect(),
        b"EXISTS" | b"DEL" | b"UNLINK" => rest.iter().map(Vec::as_slice).collect(),
        n if n.starts_with(b"EV.") => super::resp_ev::command_keys(n, args),
        b"XREAD" | b"XREADGROUP" => {
            // XREAD … STREAMS key … id …: the first half of what follows STREAMS.
            let Some(at) = rest.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else {
                return Vec::new();
            };
            let after = &rest[at + 1..];
            after[..after.len() / 2].iter().map(Vec::as_slice).collect()
        }
        _ => Vec::new(),
    }
}

/// Handles `req` if transactions are concerned (MULTI, EXEC, DISCARD, WATCH, UNWATCH, or any
/// command while queueing); gives it back otherwise, tied to the last EXEC's gate. Counts
/// every command read (INFO's `total_commands_processed`).
pub(super) fn admit(
    conn: &mut Resp,
    name: &[u8],
    mut req: RespRequest,
) -> Result<Admitted<RespRequest>, RespRequest> {
    let shard = conn.shard();
    shard.shared.resp.count_command(shard.id);
    let max_queued = shard.shared.config.request_frame_bytes_max as usize;
    let queueing = conn.multi_mut().queue.is_some();
    let answer_error = |conn: &mut Resp, req: &RespRequest, text: String| {
        // A refused command marks the transaction being queued.
        if let Some(q) = conn.multi_mut().queue.as_mut() {
            q.dirty = true;
        }
        req.mark.set(Mark::Rejected);
        req.answer(|r| {
            r.error(text);
        });
    };
    match name {
        b"MULTI" | b"EXEC" | b"DISCARD" | b"WATCH" | b"UNWATCH" => {
            if let Err(text) = check(name, &req.args) {
                answer_error(conn, &req, text);
                return Ok(Admitted::Done);
            }
        }
        _ => {}
    }
    match name {
        b"MULTI" if queueing => req.answer(|r| {
            r.error("MULTI calls can not be nested");
        }),
        b"MULTI" => {
            conn.multi_mut().queue = Some(Queue::default());
            req.answer(|r| {
                r.ok();
            });
        }
        b"DISCARD" if queueing => {
            conn.multi_mut().queue = None;
            req.answer(|r| {
                r.ok();
            });
        }
        b"DISCARD" => req.answer(|r| {
            r.error("DISCARD without MULTI");
        }),
        b"EXEC" if queueing => return Ok(exec(conn, req)),
        b"EXEC" => req.answer(|r| {
            r.error("EXEC without MULTI");
        }),
        b"WATCH" if queueing => req.answer(|r| {
            r.error("WATCH inside MULTI is not allowed");
        }),
        b"WATCH" => req.answer(|r| {
            r.error("WATCH is not supported by this server");
        }),
        b"UNWATCH" if !queueing => req.answer(|r| {
            r.ok();
        }),
        b"RESET" => {
            conn.multi_mut().queue = None;
            return Err(req);
        }
        b"QUIT" => return Err(req),
        _ if queueing => {
            if let Err(text) = check(name, &req.args) {
                answer_error(conn, &req, text);
                return Ok(Admitted::Done);
            }
            let max = max_queued;
            let size: usize = req.args.iter().map(|a| a.len() + 16).sum();
            let q = conn.multi_mut().queue.as_mut().expect("queueing");
            if q.bytes + size > max {
                answer_error(
                    conn,
                    &req,
                    format!(
                        "the transaction's queued commands exceed {max} bytes \
                         (request_frame_bytes_max)"
                    ),
                );
                return Ok(Admitted::Done);
            }
            // As Redis: a transaction that will abort keeps nothing more.
            if !q.dirty {
                q.bytes += size;
                let queued =
                    RespRequest::new(std::mem::take(&mut req.args), req.ctx, req.order.clone());
                q.commands.push(queued);
            }
            // Counted when EXEC runs it, not now.
            req.mark.set(Mark::Uncounted);
            req.answer(|r| {
                r.simple("QUEUED");
            });
        }
        _ => {
            let state = conn.multi_mut();
            if let Some(gate) = &state.gate {
                if gate.open.get() {
                    state.gate = None;
                } else {
                    req.tx.after = Some(gate.clone());
                }
            }
            return Err(req);
        }
    }
    Ok(Admitted::Done)
}

/// EXEC read while queueing: aborts, refuses, or runs the connection commands now and
/// hands the rest to its task.
fn exec(conn: &mut Resp, mut req: RespRequest) -> Admitted<RespRequest> {
    let queue = conn.multi_mut().queue.take().expect("queueing");
    if queue.dirty {
        req.answer(|r| {
            r.error("-EXECABORT Transaction discarded because of previous errors.");
        });
        return Admitted::Done;
    }
    let ctx = *conn.ctx_mut();
    if partitions(conn, ctx, &queue.commands).len() > 1 {
        // Refused before it runs, as Redis Cluster refuses it.
        req.mark.set(Mark::Rejected);
        req.answer(|r| {
            r.error("-CROSSSLOT Keys in request don't hash to the same slot");
        });
        return Admitted::Done;
    }
    let count = queue.commands.len();
    // Room for an XADD's reply (a stream ID of up to 41 characters, as a bulk string) each.
    let replies = Rc::new(RefCell::new(Ordered::collector(
        conn.shard().clone(),
        count * 48,
    )));
    let mut commands = Vec::new();
    let mut heavy = false;
    for (seq, mut q) in queue.commands.into_iter().enumerate() {
        q.seq = seq as u64;
        q.order = replies.clone();
        q.ctx = *conn.ctx_mut();
        let name = crate::resp::Upper::new(&q.args[0]);
        if name == b"UNWATCH" {
            q.answer(|r| {
                r.ok();
            });
            continue;
        }
        if super::resp_commands::connection_command(conn, &name, &q).is_none() {
            heavy |= super::resp_keys::is_heavy(&name) || is_read(&name);
            commands.push(q);
        }
    }
    let gate = Rc::new(Gate::default());
    let state = conn.multi_mut();
    req.tx.after = state.gate.replace(gate.clone()).filter(|g| !g.open.get());
    req.tx.exec = Some(Box::new(Exec {
        commands,
        replies,
        count,
        version: ctx.version,
        gate,
    }));
    Admitted::Run {
        request: req,
        heavy,
    }
}

fn is_read(name: &[u8]) -> bool {
    matches!(name, b"XRANGE" | b"XREVRANGE" | b"XREAD")
}

/// The partitions the queued commands' keys are in, the database followed through queued
/// SELECTs.
fn partitions(conn: &Resp, ctx: Ctx, commands: &[RespRequest]) -> BTreeSet<u32> {
    let count = conn.shard().shared.partitions;
    let mut ctx = ctx;
    let mut parts = BTreeSet::new();
    for q in commands {
        let name = crate::resp::Upper::new(&q.args[0]);
        if name == b"SELECT" {
            let db = crate::resp::string2ll(&q.args[1]);
            if let Some(db) = db.filter(|db| (0..i64::from(DATABASES)).contains(db)) {
                ctx.db = db as u32;
            }
            continue;
        }
        for key in command_keys(&name, &q.args) {
            if let Ok(stream) = super::resp_streams::stream_name(ctx, key) {
                parts.insert(partition_of(&stream, count));
            }
        }
    }
    parts
}

/// Runs a request read on a RESP connection (once the EXEC before it, if any, is answered).
pub(super) async fn run(shard: Rc<Shard>, mut req: RespRequest) {
    if let Some(gate) = req.tx.after.take() {
        gate.wait().await;
    }
    req.start();
    match req.tx.exec.take() {
        Some(exec) => Box::pin(run_exec(shard, req, *exec)).await,
        None => super::resp_streams::run(shard, req).await,
    }
}

/// Runs an EXEC's commands one after the other, then answers with their replies.
async fn run_exec(shard: Rc<Shard>, req: RespRequest, exec: Exec) {
    let gate = exec.gate.clone();
    let _open = OpenOnDrop(exec.gate);
    let mut commands = exec.commands.into_iter().peekable();
    while let Some(q) = commands.next() {
        let name = crate::resp::Upper::new(&q.args[0]);
        if !super::resp_writes::is_write(&name) {
            q.start();
            super::resp_streams::run(shard.clone(), q).await;
            continue;
        }
        // A run of write commands: one partition transaction (module docs).
        let mut run = vec![q];
        while let Some(next) =
            commands.next_if(|n| super::resp_writes::is_write(&crate::resp::Upper::new(&n.args[0])))
        {
            run.push(next);
        }
        let last = commands.peek().is_none();
        run_writes(&shard, run, last.then_some(&*gate)).await;
    }
    let (count, replies) = exec.replies.borrow_mut().take_collected();
    assert_eq!(count, exec.count, "every queued command answered");
    let mut bytes = Vec::with_capacity(24 + replies.len());
    Reply::new(&mut bytes, exec.version).array_len(exec.count);
    bytes.extend_from_slice(&replies);
    req.answer_bytes(&bytes);
}

/// Runs consecutive write commands of an EXEC as one transaction, then answers each.
///
/// `gate`: the EXEC's gate, when these are its last commands. If their transaction runs on a
/// partition of this shard, the gate opens as soon as the transaction has its turn there
/// (its first poll: a local call reaches `Partition::transaction`'s turn ticket without
/// yielding), not once it is answered: the connection's later requests then reach the
/// partition after it — placed after it, in order — while it is still becoming durable, so
/// pipelined transactions share frames. (A later read still waits for the EXEC's answer, as
/// every read waits for the requests before it.)
async fn run_writes(shard: &Rc<Shard>, run: Vec<RespRequest>, gate: Option<&Gate>) {
    let mut parsed = Vec::with_capacity(run.len());
    let mut writes = Vec::new();
    // One clock reading for the run's start and one for its end (INFO commandstats' usec),
    // not two per command.
    let started = Instant::now();
    for q in run {
        q.start_at(started);
        let name = crate::resp::Upper::new(&q.args[0]);
        match super::resp_writes::parse(shard, &q, &name) {
            Ok(w) => {
                parsed.push((q, Some((w.answer, w.writes.len()))));
                writes.extend(w.writes);
            }
            Err(text) => {
                q.answer(|r| {
                    r.error(text);
                });
                parsed.push((q, None));
            }
        }
    }
    let partitions = shard.shared.partitions;
    let local = |w: &crate::stream::TxWrite| match w {
        crate::stream::TxWrite::Change {
            request: crate::stream::ChangeRequest::DeleteDatabase,
            ..
        } => None,
        other => {
            let p = partition_of(other.stream(), partitions);
            (shard.owner_of(p) == shard.id).then_some(p)
        }
    };
    let first = writes.first().and_then(local);
    let early = gate.filter(|_| first.is_some() && writes.iter().all(|w| local(w) == first));
    let done = open_after_first_poll(super::resp_writes::run_writes(shard, writes), early);
    let results = match done.await {
        Ok(results) => results,
        Err(text) => {
            for (q, w) in parsed {
                if w.is_some() {
                    q.answer(|r| {
                        r.error(&text);
                    });
                }
            }
            return;
        }
    };
    let asked: usize = parsed.iter().filter_map(|(_, w)| w.map(|(_, n)| n)).sum();
    assert_eq!(results.len(), asked, "one result per write of the run");
    let ended = Instant::now();
    let mut at = 0;
    for (q, w) in parsed {
        if let Some((answer, n)) = w {
            q.end_at(ended);
            super::resp_writes::answer(&q, answer, &results[at..at + n]);
            at += n;
        }
    }
}

/// Runs `fut`, opening `gate` (if any) right after its first poll.
async fn open_after_first_poll<F: std::future::Future>(fut: F, gate: Option<&Gate>) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut gate = gate;
    std::future::poll_fn(|cx| {
        let polled = fut.as_mut().poll(cx);
        if let Some(g) = gate.take() {
            g.open();
        }
        polled
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn keys_are_read_from_the_arguments() {
        let keys = |a: &[&str]| {
            let v = args(a);
            let name = v[0].to_ascii_uppercase();
            command_keys(&name, &v)
                .into_iter()
                .map(|k| String::from_utf8(k.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&["xadd", "s", "*", "a", "1"]), ["s"]);
        assert_eq!(keys(&["EXISTS", "a", "b"]), ["a", "b"]);
        assert_eq!(
            keys(&["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"]),
            ["a", "b"]
        );
        assert!(keys(&["PING"]).is_empty());
        assert!(keys(&["KEYS", "*"]).is_empty());
    }

    #[test]
    fn commands_are_checked_before_they_are_queued() {
        assert!(check(b"XADD", &args(&["XADD", "s", "*", "a", "1"])).is_ok());
        assert_eq!(
            check(b"XADD", &args(&["XADD", "s", "*", "a"])).unwrap_err(),
            "wrong number of arguments for 'xadd' command"
        );
        assert!(check(b"NOPE", &args(&["nope", "x"]))
            .unwrap_err()
            .starts_with("unknown command 'nope'"));
        assert!(check(b"CONFIG", &args(&["CONFIG", "x"]))
            .unwrap_err()
            .starts_with("unknown subcommand 'x'"));
    }
}
