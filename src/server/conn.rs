//! Client connections: accepting them and the connection loop (their outbound buffer and
//! writer task: [`super::outbound`]).
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};

use glommio::sync::{Semaphore, StaticPermit};

use super::outbound::write_loop;
pub(super) use super::outbound::ConnOut;
use super::route::{PartOp, Shard};
use crate::net::NetRing;
use crate::protocol::{code, Response};

/// What the connection loop ([`Shard::serve`]) needs of a wire protocol: decoding requests
/// from the bytes received, the handshake, and running a request. Replies are the
/// protocol's own bytes, queued on the connection's [`ConnOut`].
pub(super) trait Protocol: Sized + 'static {
    type Request: 'static;
    /// The protocol's state on a new connection.
    fn open(shard: &Rc<Shard>, out: &Rc<ConnOut>, local_ip: Option<std::net::IpAddr>) -> Self;
    /// The reply that refuses a connection beyond `max_connections`.
    fn refuse(message: &str) -> Vec<u8>;
    /// Until when the client has to finish the handshake; `None` once it has.
    fn handshake_deadline(&self) -> Option<Instant>;
    /// The reply to a timeout: a request begun and not finished within `frame_timeout_ms`,
    /// or a handshake not finished by its deadline.
    fn timeout(&self, what: Timeout) -> Fault;
    /// The next request at the start of `buf`.
    fn decode(&mut self, buf: &[u8]) -> Decoded<Self::Request>;
    /// A request read: answered here (the handshake), refused, or to be run.
    fn admit(&mut self, request: Self::Request) -> Admitted<Self::Request>;
    /// Whether a request's reply may be as large as a READ's (`max_read_bytes`).
    fn is_read(request: &Self::Request) -> bool;
    /// Runs an admitted request at once, without a task, when it can ([`super::placed`]);
    /// otherwise gives it back with its permits, to [`Protocol::run`] in a task. `clock`
    /// is the time the connection's current run of requests was read.
    fn run_now(
        _shard: &Rc<Shard>,
        _out: &Rc<ConnOut>,
        request: Self::Request,
        permits: Permits,
        _clock: &LazyClock,
    ) -> Option<(Self::Request, Permits)> {
        Some((request, permits))
    }
    /// Runs an admitted request, replying through `out` (at most
    /// `max_in_flight_per_connection` at once per connection).
    fn run(
        shard: Rc<Shard>,
        out: Rc<ConnOut>,
        conn: u64,
        request: Self::Request,
    ) -> impl std::future::Future<Output = ()> + 'static;
}

/// One reading of the monotonic clock, taken when first asked for and kept until
/// [`LazyClock::forget`]: the requests a connection decodes from what one receive brought
/// (and the appends a completer answers at once) share one reading instead of one each
/// (a clock read is about 1.5% of the shard per use per request on this machine kind).
#[derive(Default)]
pub(super) struct LazyClock(Cell<Option<Instant>>);

impl LazyClock {
    pub(super) fn now(&self) -> Instant {
        match self.0.get() {
            Some(t) => t,
            None => {
                let t = Instant::now();
                self.0.set(Some(t));
                t
            }
        }
    }

    /// The next [`LazyClock::now`] reads the clock again.
    pub(super) fn forget(&self) {
        self.0.set(None);
    }
}

/// A running request's in-flight permits (its share of `heavy`, if any, and its one of
/// `max_in_flight_per_connection`), held until it is answered.
pub(super) type Permits = (Option<StaticPermit>, StaticPermit);

/// What [`Protocol::decode`] found.
pub(super) enum Decoded<R> {
    /// A whole request, and the bytes it took.
    Request(R, usize),
    /// The request is not all there yet: at least `need` bytes are.
    Partial { need: usize },
    /// Bytes that are not the protocol: the reply to send before the connection closes.
    Fault(Fault),
}

/// What [`Protocol::admit`] decided.
pub(super) enum Admitted<R> {
    /// Run it; `heavy`: its reply may be as large as an AGGREGATE's.
    Run { request: R, heavy: bool },
    /// Answered already (the handshake).
    Done,
    /// Refused: reply, then close.
    Close(Fault),
}

/// A reply to send before closing the connection, and why it closes.
pub(super) struct Fault {
    pub(super) reply: Vec<u8>,
    pub(super) reason: String,
}

/// What timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timeout {
    Frame,
    Handshake,
}

/// The bytes received on a connection and not yet decoded.
struct Input {
    sock: Rc<TcpStream>,
    ring: Rc<NetRing>,
    buf: Vec<u8>,
    /// `buf[start..end]` is what is buffered.
    start: usize,
    end: usize,
    /// When the request now partly buffered was first found incomplete (or its first byte
    /// arrived, when it began a read): its frame timer starts there.
    partial_since: Option<Instant>,
}

/// Bytes read at once: pipelined requests arrive many to a segment, and one read takes them
/// all.
const READ_CHUNK: usize = 64 * 1024;

impl Input {
    fn new(sock: Rc<TcpStream>, ring: Rc<NetRing>) -> Input {
        Input {
            sock,
            ring,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            partial_since: None,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        assert!(
            self.start <= self.end,
            "a protocol consumed what it was not given"
        );
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // The rest of the buffer (if any) begins the next request: its frame timer starts
        // when it is first found incomplete ([`Input::fill`]), not here, so a pipelined
        // burst of requests reads the clock once, not once per request.
        self.partial_since = None;
    }

    /// Reads more, until at least `need` bytes are buffered or one read returned. Between
    /// requests a connection may idle as long as it likes (until the server stops or the
    /// handshake deadline passes); once a request has begun, the rest of it must arrive
    /// within `frame_timeout_ms` (slow-drip clients).
    async fn fill<P: Protocol>(
        &mut self,
        need: usize,
        proto: &P,
        out: &ConnOut,
        cfg: &crate::config::Config,
    ) -> Result<(), Fault> {
        // Room for the whole request, at the start of the buffer.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need.max(READ_CHUNK) {
            self.buf.resize(need.max(READ_CHUNK), 0);
        }
        let frame_timeout = Duration::from_millis(u64::from(cfg.frame_timeout_ms));
        let now = Instant::now();
        let mut deadline = None;
        let mut on_timeout = Timeout::Frame;
        if self.end > 0 {
            deadline = Some(*self.partial_since.get_or_insert(now) + frame_timeout);
        }
        if let Some(h) = proto.handshake_deadline() {
            if deadline.is_none_or(|d| h < d) {
                deadline = Some(h);
                on_timeout = Timeout::Handshake;
            }
        }
        // Nothing buffered: the next request has not been sent yet, so the kernel waits for
        // it before reading (POLL_FIRST) instead of trying a read that finds nothing.
        let poll_first = self.end == 0;
        let read =
            futures_lite::future::or(async { Some(self.receive(poll_first).await) }, async {
                out.stopped().await;
                None
            });
        let got = match deadline {
            None => read.await,
            Some(d) => {
                let left = d.saturating_duration_since(now);
                match glommio::timer::timeout(left, async { Ok(read.await) }).await {
                    Ok(got) => got,
                    Err(_) => return Err(proto.timeout(on_timeout)),
                }
            }
        };
        let closing = |reason: String| Fault {
            reply: Vec::new(),
            reason,
        };
        match got {
            None => Err(closing("the server is stopping".into())),
            Some(Ok(None)) => Err(closing("closed by the client".into())),
            Some(Ok(Some(bytes))) => {
                if self.end == 0 {
                    self.partial_since = Some(now);
                }
                let end = self.end + bytes.len();
                if self.buf.len() < end {
                    self.buf.resize(end, 0);
                }
                self.buf[self.end..end].copy_from_slice(&bytes);
                self.end = end;
                Ok(())
            }
            Some(Err(e)) => Err(closing(format!("read: {e}"))),
        }
    }

    /// One receive on the shard's network ring. Every provided buffer in use (ENOBUFS: other
    /// connections' bytes not yet copied out) is waited out: those copies come first.
    async fn receive(&self, poll_first: bool) -> std::io::Result<Option<crate::net::Received>> {
        loop {
            match self.ring.recv(self.sock.as_raw_fd(), poll_first).await {
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    glommio::executor().yield_task_queue_now().await;
                }
                other => return other,
            }
        }
    }

    /// Reads and drops what the client still sends, until it closes.
    async fn drain(&mut self) -> glommio::Result<(), ()> {
        while let Ok(Some(_)) = self.receive(false).await {}
        Ok(())
    }
}

impl Shard {
    /// At a server stop, after the journals closed: ends every subscription of this shard's
    /// connections with error 31 and stops each connection's reader, so the connection
    /// answers what it read (error 31 since the stop began), sends what is queued and
    /// closes. Waits for that, two seconds at most.
    pub async fn shut_down_connections(&self) {
        let conns: Vec<Rc<ConnOut>> = self.conns.borrow().values().cloned().collect();
        for out in conns {
            let subs: Vec<u64> = out.subs.borrow_mut().drain().map(|(id, _)| id).collect();
            for sub in subs {
                out.send(
                    sub,
                    &Response::error(
                        code::SHUTTING_DOWN,
                        "subscription ended: the server is shutting down; resubscribe from the \
                         last position received once it is back",
                    ),
                );
            }
            out.stop();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !self.conns.borrow().is_empty() && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Accepts connections speaking protocol `P` on the shard's network ring, for as long
    /// as the shard runs.
    pub(super) async fn accept_loop<P: Protocol>(self: Rc<Self>, listener: TcpListener) {
        let ring = self.net.clone();
        loop {
            let (res, _) = ring.accept(listener.as_raw_fd()).await;
            if res >= 0 {
                // SAFETY: a completed accept's result is a new descriptor owned by nothing
                // else; the stream takes it over and closes it.
                let stream = unsafe { TcpStream::from_raw_fd(res) };
                let shard = self.clone();
                glommio::spawn_local(async move { shard.serve_connection::<P>(stream).await })
                    .detach();
                continue;
            }
            let e = std::io::Error::from_raw_os_error(-res);
            if self.shared.stop.load(Ordering::Acquire) {
                return;
            }
            metrics::counter!(crate::metrics::ACCEPT_FAILURES).increment(1);
            if let Some(repeats) = self.accept_failures.occurred(std::time::Instant::now()) {
                tracing::warn!(
                    error = %e,
                    repeats_since_last_logged = repeats,
                    "accepting a client connection failed (logged at most every {} s); \
                     \"Too many open files\" means the open-file limit is too low for \
                     the load: raise it (LimitNOFILE= in the unit, ulimit -n) or lower \
                     max_connections",
                    crate::log_limit::REPEAT_PERIOD.as_secs()
                );
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Serves one client connection speaking protocol `P` until it closes, the client breaks
    /// the protocol, or the server stops. Generic over the wire protocol: the limits, the
    /// back-pressure, the timeouts and the clean-up are the same for every protocol.
    pub(super) async fn serve_connection<P: Protocol>(self: Rc<Self>, stream: TcpStream) {
        let cfg = &self.shared.config;
        let count = self.shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(crate::metrics::CONNECTIONS).set(count as f64);
        let peer = stream.peer_addr().ok();
        // The address this client reached us at: HELLO advertises shard ports on it when
        // the listener is bound to a wildcard address.
        let local_ip = stream.local_addr().ok().map(|a| a.ip());
        let _ = stream.set_nodelay(true);
        let sock = Rc::new(stream);
        if count > cfg.max_connections as usize {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            let refusal = P::refuse(&format!(
                "too many connections (max_connections = {})",
                cfg.max_connections
            ));
            let _ = super::outbound::send_all(&self.net, &sock, refusal).await;
            let _ = sock.shutdown(std::net::Shutdown::Write);
            return;
        }
        let conn_id = self.next_conn.get();
        self.next_conn.set(conn_id + 1);
        let out = Rc::new(ConnOut::new(cfg.connection_buffer_bytes as usize));
        self.conns.borrow_mut().insert(conn_id, out.clone());
        let writer = glommio::spawn_local(write_loop(out.clone(), self.net.clone(), sock.clone()));
        let mut input = Input::new(sock, self.net.clone());
        let in_flight = InFlight::new(cfg);
        let mut proto = P::open(&self, &out, local_ip);
        let reason = self
            .read_requests(&mut proto, &mut input, &out, &in_flight, conn_id)
            .await;
        tracing::debug!(?peer, %reason, "connection closing");
        self.close_connection(conn_id, &out, &in_flight, writer, input)
            .await;
    }

    /// The connection loop: decodes requests, admits them, and places an append at once when
    /// it can ([`super::placed`]) or runs the request in its own task (in a reused box:
    /// [`crate::shard::task_box`]), within the connection's in-flight limits. Returns why the
    /// connection closes.
    async fn read_requests<P: Protocol>(
        self: &Rc<Self>,
        proto: &mut P,
        input: &mut Input,
        out: &Rc<ConnOut>,
        in_flight: &InFlight,
        conn_id: u64,
    ) -> String {
        let cfg = &self.shared.config;
        // When the bytes being decoded were read: read once per receive, for the requests
        // placed at once (their INFO commandstats start).
        let clock = LazyClock::default();
        loop {
            // A client that does not read its replies is not read either: the outbound
            // buffer stays near `connection_buffer_bytes` instead of growing without bound.
            out.wait_for_room().await;
            if out.stopping.get() {
                return "the server is stopping".to_string();
            }
            let request = match proto.decode(input.buffered()) {
                Decoded::Request(request, used) => {
                    input.consume(used);
                    request
                }
                Decoded::Fault(fault) => return send_fault(out, fault),
                Decoded::Partial { need } => match input.fill(need, proto, out, cfg).await {
                    Ok(()) => {
                        clock.forget();
                        continue;
                    }
                    Err(fault) => return send_fault(out, fault),
                },
            };
            let (request, weight) = match proto.admit(request) {
                Admitted::Done => continue,
                Admitted::Close(fault) => return send_fault(out, fault),
                Admitted::Run { request, heavy } => {
                    let weight = if heavy {
                        in_flight.heavy_slots
                    } else {
                        u64::from(P::is_read(&request))
                    };
                    (request, weight)
                }
            };
            let Some((permit, heavy_permit)) = in_flight.acquire(weight).await else {
                return "permits closed".into();
            };
            let Some((request, permits)) =
                P::run_now(self, out, request, (heavy_permit, permit), &clock)
            else {
                continue;
            };
            let run = P::run(self.clone(), out.clone(), conn_id, request);
            crate::shard::task_box::spawn_reused(run, permits);
        }
    }

    /// Closes a connection whose loop ended: waits for its requests' replies on a server
    /// stop, lets the writer send what is queued, drops its subscriptions at their
    /// partitions, and forgets it.
    async fn close_connection(
        self: &Rc<Self>,
        conn_id: u64,
        out: &Rc<ConnOut>,
        in_flight: &InFlight,
        writer: glommio::Task<()>,
        mut input: Input,
    ) {
        let cfg = &self.shared.config;
        if self.shared.stop.load(Ordering::Acquire) {
            // A server stop: the requests this connection read get their replies before the
            // writer sends what is queued and closes.
            let _ = in_flight
                .permits
                .acquire_permit(u64::from(cfg.max_in_flight_per_connection))
                .await;
        }
        out.closed.set(true);
        out.wake_writer();
        writer.await;
        if out.stopping.get() {
            // The replies are sent and the write side shut. Read what the client still sends
            // until it closes (two seconds at most): closing a socket with unread input resets
            // the connection, which can destroy replies the client has not read yet.
            let _ = glommio::timer::timeout(Duration::from_secs(2), input.drain()).await;
        }
        // Drop the connection's subscriptions at their partitions.
        let subs: Vec<(u64, Vec<u32>)> = out.subs.borrow_mut().drain().collect();
        for (sub, parts) in subs {
            for p in parts {
                let op = PartOp::Unsubscribe {
                    origin: self.id,
                    conn: conn_id,
                    sub,
                };
                let _ = self.call(p, op).await;
            }
        }
        self.conns.borrow_mut().remove(&conn_id);
        let left = self.shared.connections.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(crate::metrics::CONNECTIONS).set(left as f64);
    }
}

/// Queues a protocol fault's reply on `out`; returns why the connection closes.
fn send_fault(out: &ConnOut, fault: Fault) -> String {
    out.send_bytes(&fault.reply);
    fault.reason
}

/// A connection's limits on the requests running at once.
struct InFlight {
    /// At most `max_in_flight_per_connection` requests.
    permits: Rc<Semaphore>,
    /// Requests with large replies also take room from `heavy`, so the replies being built
    /// at once add at most about `connection_buffer_bytes` (READ) or one AGGREGATE reply
    /// to what waits in the outbound buffer.
    heavy: Rc<Semaphore>,
    /// All of `heavy`: what a request whose reply may be as large as an AGGREGATE's takes.
    heavy_slots: u64,
}

impl InFlight {
    fn new(cfg: &crate::config::Config) -> InFlight {
        let permits = Rc::new(Semaphore::new(u64::from(cfg.max_in_flight_per_connection)));
        let heavy_slots =
            (u64::from(cfg.connection_buffer_bytes) / u64::from(cfg.max_read_bytes)).max(1);
        let heavy = Rc::new(Semaphore::new(heavy_slots));
        InFlight {
            permits,
            heavy,
            heavy_slots,
        }
    }

    /// Room for one more request weighing `weight` of `heavy`; `None` once the semaphores
    /// are closed.
    async fn acquire(&self, weight: u64) -> Option<(StaticPermit, Option<StaticPermit>)> {
        let permit = self.permits.acquire_static_permit(1).await.ok()?;
        let heavy_permit = if weight > 0 {
            Some(self.heavy.acquire_static_permit(weight).await.ok()?)
        } else {
            None
        };
        Some((permit, heavy_permit))
    }
}
