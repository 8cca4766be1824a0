//! The RESP port (Redis protocol) on the connection loop ([`Protocol`]): requests parsed by
//! [`crate::resp::RequestParser`], the connection's own commands answered in order as they
//! are read (PING, ECHO, HELLO, AUTH, SELECT, CLIENT, COMMAND, QUIT), an XADD without
//! trimming placed as it is read when it can be ([`super::placed`]), and every other
//! command run in its own task like a native request ([`super::resp_streams`]). MULTI,
//! EXEC and DISCARD are handled as requests are read too: between MULTI and EXEC commands
//! are queued, not run ([`super::resp_multi`]).
//!
//! ## Replies in request order
//!
//! A Redis client matches replies to requests by order, but requests run concurrently (a
//! pipelined XADD waits for its frame to be durable while the next is placed, so pipelined
//! writes share frames). Each request gets a sequence number when it is read; its reply goes
//! through [`Ordered`], which sends replies strictly in sequence order and holds a reply
//! that is ready before those ahead of it. Invariant: `next` is the sequence number of the
//! oldest request not yet answered, and every held reply's number is above it.
//!
//! Writes of one connection keep their order: requests are started in the order they are
//! read, and a partition places appends in the order they reach it. A request that has to
//! wait before it starts (behind a blocking command, below, or behind an EXEC's gate) is
//! marked waiting ([`Ordered::wait_to_start`]) until it starts ([`RespRequest::start`]), and
//! no request after it starts before it does: one read after it waits too, even if what held
//! it back is over, since its task may not have run yet.
//!
//! ## Blocking commands
//!
//! A blocking command (XREAD or XREADGROUP with BLOCK) runs alone, as Redis runs it: it starts once every
//! request before it is answered, and the requests after it start once it is answered
//! ([`Ordered::turn`]). So a connection has at most one blocked command at a time, and a
//! write pipelined behind a blocked XREAD waits for it, as in Redis. A request that was
//! held this way and finds its connection closed is not run.
//!
//! A read of stream state (XLEN, XRANGE, XREVRANGE, XREAD, XINFO, EXISTS, TYPE, KEYS, SCAN,
//! DBSIZE, the consumer-group commands that look at entries — XREADGROUP, XPENDING, XGROUP,
//! XCLAIM, XAUTOCLAIM — and EV.READ, EV.INFO, EV.AGG, EV.QUERY) runs alone the same way, so
//! it sees every write the connection sent before it (a write is visible once durable, and a read started
//! while the write is in flight would miss it). Writes pipelined one after another still run
//! concurrently and share frames.
//!
//! ## Counting
//!
//! Every reply to a command goes through [`RespRequest::answer_bytes`] (`answer` writes into
//! it), which counts it in INFO commandstats and errorstats ([`super::resp_stats`]) on the
//! shard it runs on, as the request's [`RespRequest::mark`] says: a call (failed if an
//! error), a rejection, or nothing (`+QUEUED`). A command that answers in its own way must
//! answer through it to be counted; [`RespRequest::start`] marks when it started to run.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Instant;

use super::conn::{Admitted, ConnOut, Decoded, Fault, Protocol, Timeout};
use super::resp_stats::Mark;
use super::route::Shard;
use crate::resp::{Parsed, Reply, RequestLimits, RequestParser, RespVersion};

/// Databases a connection may SELECT (0..16), as Redis's default `databases`.
pub use crate::stream::DATABASES;

thread_local! {
    /// The buffer replies are written in on this shard ([`RespRequest::answer`]).
    static REPLY_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest reply buffer kept for the next reply: a larger one (a long XRANGE) is freed.
const REPLY_BUFFER_KEPT: usize = 64 * 1024;

thread_local! {
    /// Argument lists of finished requests, kept with their arguments' buffers so the next
    /// request's arguments are copied into them instead of into fresh allocations.
    static ARG_LISTS: RefCell<Vec<Vec<Vec<u8>>>> = const { RefCell::new(Vec::new()) };
}

/// The most argument lists a shard keeps ([`ARG_LISTS`]), and the most bytes each may hold
/// (its arguments' buffers and the list itself): at most 512 KiB per shard
/// (docs/OPERATIONS.md, *Memory budget*).
pub const ARG_LISTS_KEPT: usize = 512;
pub const ARG_LIST_BYTES_KEPT: usize = 1024;

/// `args` as an owned list, in a kept list's buffers when the shard has one.
fn owned_args(args: crate::resp::Args<'_>) -> Vec<Vec<u8>> {
    let mut list = ARG_LISTS.with(|l| l.borrow_mut().pop()).unwrap_or_default();
    list.truncate(args.len());
    for (i, arg) in args.iter().enumerate() {
        match list.get_mut(i) {
            Some(buf) => {
                buf.clear();
                buf.extend_from_slice(arg);
            }
            None => list.push(arg.to_vec()),
        }
    }
    list
}

/// Keeps a finished request's argument list for [`owned_args`], within the bounds.
fn keep_args(list: Vec<Vec<u8>>) {
    let bytes = list.capacity() * std::mem::size_of::<Vec<u8>>()
        + list.iter().map(Vec::capacity).sum::<usize>();
    if list.is_empty() || bytes > ARG_LIST_BYTES_KEPT {
        return;
    }
    ARG_LISTS.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() < ARG_LISTS_KEPT {
            l.push(list);
        }
    });
}

/// Sends a connection's replies in request order (see the module docs).
pub(super) struct Ordered {
    /// The shard the connection is on (where its replies are counted: [`RespRequest::answer`]).
    shard: Rc<Shard>,
    /// Where replies go in order; `None`: into `collected` (the replies of an EXEC's
    /// commands, [`Ordered::collector`]).
    out: Option<Rc<ConnOut>>,
    next: u64,
    held: BTreeMap<u64, Vec<u8>>,
    /// The blocking commands not answered yet (see the module docs).
    blocking: BTreeSet<u64>,
    /// Requests that have to wait before they start and have not started yet
    /// ([`Ordered::wait_to_start`]).
    waiting: BTreeSet<u64>,
    /// Requests waiting for their turn ([`Ordered::turn`]).
    turn_wakers: Vec<std::task::Waker>,
    /// The replies of an EXEC's commands, one after another, when `out` is `None`; how
    /// many.
    collected: Vec<u8>,
    collected_count: usize,
}

impl Ordered {
    /// Queues the reply to request `seq`; sends it and every held reply that follows it
    /// once every request before it is answered.
    pub(super) fn reply(cell: &RefCell<Ordered>, seq: u64, bytes: &[u8]) {
        let mut o = cell.borrow_mut();
        let o = &mut *o;
        assert!(seq >= o.next, "request {seq} answered twice");
        let was_blocking = !o.blocking.is_empty() && o.blocking.remove(&seq);
        let before = o.next;
        if seq == o.next {
            // In order (the common case): straight out, not through `held`.
            match &o.out {
                Some(out) => out.send_bytes(bytes),
                None => {
                    o.collected.extend_from_slice(bytes);
                    o.collected_count += 1;
                }
            }
            o.next += 1;
        } else {
            o.held.insert(seq, bytes.to_vec());
        }
        while let Some(bytes) = {
            let next = o.next;
            if o.held.is_empty() {
                None
            } else {
                o.held.remove(&next)
            }
        } {
            match &o.out {
                Some(out) => out.send_bytes(&bytes),
                None => {
                    o.collected.extend_from_slice(&bytes);
                    o.collected_count += 1;
                }
            }
            o.next += 1;
        }
        if was_blocking || o.next != before {
            for w in o.turn_wakers.drain(..) {
                w.wake();
            }
        }
    }

    /// Collects replies in sequence order, from 0, instead of sending them, with room for
    /// `bytes` of them at first.
    pub(super) fn collector(shard: Rc<Shard>, bytes: usize) -> Ordered {
        Ordered {
            shard,
            out: None,
            next: 0,
            held: BTreeMap::new(),
            blocking: BTreeSet::new(),
            waiting: BTreeSet::new(),
            turn_wakers: Vec::new(),
            collected: Vec::with_capacity(bytes),
            collected_count: 0,
        }
    }

    /// The replies collected so far, in sequence order, one after another, and how many.
    pub(super) fn take_collected(&mut self) -> (usize, Vec<u8>) {
        let count = std::mem::take(&mut self.collected_count);
        (count, std::mem::take(&mut self.collected))
    }
    /// Whether request `seq` has to wait for its turn ([`Ordered::turn`]): a blocking
    /// command before it (or it) is not answered, or a request before it waits to start.
    pub(super) fn holds(cell: &RefCell<Ordered>, seq: u64) -> bool {
        let o = cell.borrow();
        o.blocking.range(..=seq).next().is_some() || o.waiting.range(..seq).next().is_some()
    }

    /// Marks request `seq` as waiting to start: no request after it starts before it does.
    pub(super) fn wait_to_start(cell: &RefCell<Ordered>, seq: u64) {
        cell.borrow_mut().waiting.insert(seq);
    }

    /// Request `seq` starts: the requests waiting behind it may go on.
    fn started(cell: &RefCell<Ordered>, seq: u64) {
        let mut o = cell.borrow_mut();
        if !o.waiting.is_empty() && o.waiting.remove(&seq) {
            for w in o.turn_wakers.drain(..) {
                w.wake();
            }
        }
    }

    /// Resolves once request `seq` may start: a blocking command once every request before
    /// it is answered; any other once every blocking command before it is; either once no
    /// request before it waits to start.
    pub(super) async fn turn(cell: &RefCell<Ordered>, seq: u64) {
        std::future::poll_fn(|cx| {
            let mut o = cell.borrow_mut();
            let ready = o.waiting.range(..seq).next().is_none()
                && if o.blocking.contains(&seq) {
                    o.next >= seq
                } else {
                    o.blocking.range(..seq).next().is_none()
                };
            if ready {
                return std::task::Poll::Ready(());
            }
            if !o.turn_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                o.turn_wakers.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Whether a request runs alone (see the module docs): a read of stream state, XREAD with
/// BLOCK among them.
fn runs_alone(name: &[u8]) -> bool {
    matches!(
        name,
        b"XREAD"
            | b"XLEN"
            | b"XRANGE"
            | b"XREVRANGE"
            | b"XINFO"
            | b"EXISTS"
            | b"TYPE"
            | b"KEYS"
            | b"SCAN"
            | b"DBSIZE"
            | b"XREADGROUP"
            | b"XPENDING"
            | b"XGROUP"
            | b"XCLAIM"
            | b"XAUTOCLAIM"
            | b"RENAME"
            | b"RESTORE"
    ) || super::resp_ev::runs_alone(name)
}

/// What a command needs to know of its connection when it runs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ctx {
    pub(super) db: u32,
    pub(super) version: RespVersion,
}

/// A command read from a RESP connection, to run.
pub(super) struct RespRequest {
    pub(super) seq: u64,
    pub(super) args: Vec<Vec<u8>>,
    pub(super) ctx: Ctx,
    pub(super) order: Rc<RefCell<Ordered>>,
    /// Its part in transactions ([`super::resp_multi`]).
    pub(super) tx: super::resp_multi::TxLink,
    /// How its reply counts in INFO commandstats ([`super::resp_stats`]).
    pub(super) mark: Cell<Mark>,
    /// When it started to run (INFO commandstats' `usec`); `None`: answered as it was read.
    pub(super) started: Cell<Option<Instant>>,
    /// When its run ended, when one clock reading serves several answers (an EXEC's run of
    /// writes); `None`: read when it is answered.
    ended: Cell<Option<Instant>>,
}

impl Drop for RespRequest {
    fn drop(&mut self) {
        keep_args(std::mem::take(&mut self.args));
    }
}

impl RespRequest {
    /// A request of `args` in the connection state `ctx`, replying through `order`.
    pub(super) fn new(args: Vec<Vec<u8>>, ctx: Ctx, order: Rc<RefCell<Ordered>>) -> RespRequest {
        RespRequest {
            seq: 0,
            args,
            ctx,
            order,
            tx: Default::default(),
            mark: Cell::new(Mark::Run),
            started: Cell::new(None),
            ended: Cell::new(None),
        }
    }

    /// Answers it with what `write` writes, in the shard's reply buffer: a reply sent in
    /// order is copied once, into its connection's outbound buffer, and allocates nothing.
    pub(super) fn answer(&self, write: impl FnOnce(&mut Reply<'_>)) {
        // Taken, not borrowed: an answer written while another is (none is today) would get
        // an empty buffer of its own instead of a double borrow.
        let mut bytes = REPLY_BUFFER.take();
        bytes.clear();
        write(&mut Reply::new(&mut bytes, self.ctx.version));
        self.answer_bytes(&bytes);
        if bytes.capacity() <= REPLY_BUFFER_KEPT {
            REPLY_BUFFER.set(bytes);
        }
    }

    /// Answers it with `bytes`, a whole reply. Every reply to a command comes here, and is
    /// counted in INFO commandstats and errorstats ([`super::resp_stats`]).
    pub(super) fn answer_bytes(&self, bytes: &[u8]) {
        {
            let o = self.order.borrow();
            let shard = &o.shard;
            shard.shared.resp.stats.record(
                shard.id,
                &self.args,
                self.mark.get(),
                bytes,
                || {
                    self.started.get().map_or(0, |t| {
                        let end = self.ended.get().unwrap_or_else(Instant::now);
                        end.saturating_duration_since(t).as_micros() as u64
                    })
                },
                || super::resp_multi::prechecks_pass(&self.args),
            );
        }
        Ordered::reply(&self.order, self.seq, bytes);
    }

    /// Marks it started to run now (INFO commandstats' `usec`).
    pub(super) fn start(&self) {
        self.start_reading(Instant::now());
    }

    /// Marks it started to run, at `at`: a clock reading taken for it or shared with the
    /// requests read with it.
    pub(super) fn start_reading(&self, at: Instant) {
        Ordered::started(&self.order, self.seq);
        self.start_at(at);
    }

    /// Marks it started to run at `at`, a clock reading shared by the commands of a run.
    pub(super) fn start_at(&self, at: Instant) {
        self.started.set(Some(at));
    }

    /// Marks its run ended at `at`, a clock reading shared by the commands of a run.
    pub(super) fn end_at(&self, at: Instant) {
        self.ended.set(Some(at));
    }

    /// Answers it with nothing: its connection is gone.
    pub(super) fn drop_answer(&self) {
        Ordered::reply(&self.order, self.seq, &[]);
    }

    /// Resolves once the connection is closed or the server stops; true if it stops.
    pub(super) async fn connection_ended(&self) -> bool {
        let out = self.order.borrow().out.clone();
        // The commands of an EXEC have no connection of their own: theirs never ends first.
        let Some(out) = out else {
            return std::future::pending().await;
        };
        out.ended().await;
        out.stopping.get()
    }
}

/// The RESP protocol on one connection.
pub(super) struct Resp {
    shard: Rc<Shard>,
    parser: RequestParser,
    order: Rc<RefCell<Ordered>>,
    next_seq: u64,
    ctx: Ctx,
    authenticated: bool,
    name: Option<Vec<u8>>,
    id: u64,
    multi: super::resp_multi::MultiState,
}

/// A reply for a protocol error, then the connection closes.
fn protocol_fault(message: Vec<u8>) -> Fault {
    let mut reply = Vec::new();
    Reply::new(&mut reply, RespVersion::Resp2).error(&message);
    Fault {
        reply,
        reason: String::from_utf8_lossy(&message).into_owned(),
    }
}

impl Protocol for Resp {
    type Request = RespRequest;

    fn open(shard: &Rc<Shard>, out: &Rc<ConnOut>, _local_ip: Option<std::net::IpAddr>) -> Self {
        let cfg = &shard.shared.config;
        let needs_auth = !cfg.auth_token.is_empty();
        let mut parser = RequestParser::new(RequestLimits {
            max_bulk_bytes: cfg.request_frame_bytes_max as usize,
            max_request_bytes: cfg.request_frame_bytes_max as usize,
        });
        parser.set_auth_required(needs_auth);
        // The connection loop numbered this connection before opening it: a client id unique
        // across shards, from 1.
        let conn = shard.next_conn.get().saturating_sub(1);
        let id = conn * shard.shared.shards as u64 + shard.id as u64 + 1;
        Resp {
            shard: shard.clone(),
            parser,
            order: Rc::new(RefCell::new(Ordered {
                shard: shard.clone(),
                out: Some(out.clone()),
                next: 0,
                held: BTreeMap::new(),
                blocking: BTreeSet::new(),
                waiting: BTreeSet::new(),
                turn_wakers: Vec::new(),
                collected: Vec::new(),
                collected_count: 0,
            })),
            next_seq: 0,
            ctx: Ctx {
                db: 0,
                version: RespVersion::Resp2,
            },
            authenticated: !needs_auth,
            name: None,
            id,
            multi: super::resp_multi::MultiState::default(),
        }
    }

    fn refuse(_message: &str) -> Vec<u8> {
        b"-ERR max number of clients reached\r\n".to_vec()
    }

    fn handshake_deadline(&self) -> Option<Instant> {
        None
    }

    fn timeout(&self, _what: Timeout) -> Fault {
        let cfg = &self.shard.shared.config;
        protocol_fault(
            format!(
                "Protocol error: the rest of a request did not arrive within {} ms \
                 (frame_timeout_ms)",
                cfg.frame_timeout_ms
            )
            .into_bytes(),
        )
    }

    fn decode(&mut self, buf: &[u8]) -> Decoded<RespRequest> {
        let (used, args) = match self.parser.parse(buf) {
            Ok(Parsed::NeedMore) => {
                return Decoded::Partial {
                    need: buf.len() + 1,
                }
            }
            // An empty request is skipped: the connection loop consumes it as a request that
            // `admit` answers with nothing.
            Ok(Parsed::Empty { used }) => (used, Vec::new()),
            Ok(Parsed::Command { used, args }) => (used, owned_args(args)),
            Err(e) => {
                let fault = protocol_fault(e.message());
                // Counted as Redis counts its protocol errors (no command's).
                let stats = &self.shard.shared.resp.stats;
                stats.count_error(self.shard.id, &fault.reply);
                return Decoded::Fault(fault);
            }
        };
        let request = RespRequest::new(args, self.ctx, self.order.clone());
        Decoded::Request(request, used)
    }

    fn admit(&mut self, mut request: RespRequest) -> Admitted<RespRequest> {
        if request.args.is_empty() {
            return Admitted::Done;
        }
        request.seq = self.next_seq;
        self.next_seq += 1;
        request.ctx = self.ctx;
        let name = crate::resp::Upper::new(&request.args[0]);
        if !self.authenticated && !matches!(name.as_slice(), b"AUTH" | b"HELLO" | b"QUIT") {
            request.mark.set(Mark::Rejected);
            request.answer(|r| {
                r.error("-NOAUTH Authentication required.");
            });
            return Admitted::Done;
        }
        let request = match super::resp_multi::admit(self, &name, request) {
            Ok(admitted) => return admitted,
            Err(request) => request,
        };
        match super::resp_commands::connection_command(self, &name, &request) {
            Some(Handled::Answered) => Admitted::Done,
            Some(Handled::Close) => Admitted::Close(Fault {
                reply: Vec::new(),
                reason: "QUIT".into(),
            }),
            None => {
                if runs_alone(&name) {
                    self.order.borrow_mut().blocking.insert(request.seq);
                }
                let heavy = super::resp_keys::is_heavy(&name) || super::resp_ev::is_heavy(&name);
                Admitted::Run { request, heavy }
            }
        }
    }

    fn is_read(request: &RespRequest) -> bool {
        request.args.first().is_some_and(|n| {
            let n = crate::resp::Upper::new(n);
            matches!(n.as_slice(), b"XRANGE" | b"XREVRANGE" | b"XREAD")
                || super::resp_ev::is_read(&n)
        })
    }

    fn run_now(
        shard: &Rc<Shard>,
        _out: &Rc<ConnOut>,
        request: RespRequest,
        permits: super::conn::Permits,
        clock: &super::conn::LazyClock,
    ) -> Option<(RespRequest, super::conn::Permits)> {
        // Behind a blocking command, or behind a request waiting to start: it waits for its
        // turn in a task (below).
        if Ordered::holds(&request.order, request.seq) {
            return Some((request, permits));
        }
        super::resp_writes::xadd_now(shard, request, permits, clock)
    }

    async fn run(shard: Rc<Shard>, out: Rc<ConnOut>, _conn: u64, request: RespRequest) {
        let held = Ordered::holds(&request.order, request.seq);
        if held || !request.tx.is_plain() {
            // Started by `RespRequest::start` (after an EXEC's gate, if any).
            Ordered::wait_to_start(&request.order, request.seq);
        }
        if held {
            Ordered::turn(&request.order, request.seq).await;
            if out.closed.get() {
                Ordered::started(&request.order, request.seq);
                request.drop_answer();
                return;
            }
            if out.stopping.get() {
                Ordered::started(&request.order, request.seq);
                request.mark.set(Mark::Rejected);
                request.answer(|r| {
                    r.error("-SHUTDOWN the server is shutting down: the command was not run");
                });
                return;
            }
        }
        super::resp_multi::run(shard, request).await
    }
}

/// What a connection command did.
pub(super) enum Handled {
    Answered,
    /// Answered, then the connection closes (QUIT).
    Close,
}

/// The connection state the connection commands change.
impl Resp {
    pub(super) fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }
    pub(super) fn ctx_mut(&mut self) -> &mut Ctx {
        &mut self.ctx
    }
    pub(super) fn authenticate(&mut self) {
        self.authenticated = true;
        self.parser.set_auth_required(false);
    }
    /// After RESET on a server with `auth_token`: the client must authenticate again.
    pub(super) fn reset_authentication(&mut self) {
        self.authenticated = false;
        self.parser.set_auth_required(true);
    }
    pub(super) fn is_authenticated(&self) -> bool {
        self.authenticated
    }
    pub(super) fn name(&self) -> Option<&[u8]> {
        self.name.as_deref()
    }
    pub(super) fn set_name(&mut self, name: Option<Vec<u8>>) {
        self.name = name;
    }
    pub(super) fn id(&self) -> u64 {
        self.id
    }
    pub(super) fn multi_mut(&mut self) -> &mut super::resp_multi::MultiState {
        &mut self.multi
    }
}
