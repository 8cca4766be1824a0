//! The Rust client: one TCP connection, many requests in flight (pipelining), replies matched
//! by request id, subscriptions as a stream of events.
//!
//! Shard-aware routing: HELLO's reply names an address per partition. When the server
//! advertises addresses other than the one connected to (its `shard_ports`), the client
//! opens one more connection per distinct address and sends every request about one stream
//! (append, read, stream info, a stream's aggregate or subscription) over the connection of
//! the stream's partition, so the owning shard serves it without a cross-shard hop. Every
//! other request uses the first connection. An advertised address that cannot be reached
//! falls back to the first connection (the server routes any request on any port).
//!
//! [`Client`] is runtime-agnostic: its request methods are `async` and their futures are
//! woken by the connection's reader thread, so they run on any executor (or none: see
//! [`BlockingClient`], which drives them with `block_on`). Writes go through a mutex-guarded
//! socket; a background thread reads every frame and completes the matching request or
//! feeds the matching subscription.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::protocol::{
    code, decode_response, encode_request, Bucket, Direction, Event, FrameHeader, RecordedEvent,
    Request, Response, SubscribeTarget, FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The stream's last version did not match; `current` is it (-1: no events).
    #[error("wrong expected version: the stream is at version {current}")]
    WrongExpectedVersion { current: i64, message: String },
    #[error("server error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("connection closed: {0}")]
    Closed(String),
}

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::WrongExpectedVersion { .. } => Some(code::WRONG_EXPECTED_VERSION),
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn server_error(code: u16, message: String, current_version: Option<i64>) -> ClientError {
    if code == code::WRONG_EXPECTED_VERSION {
        ClientError::WrongExpectedVersion {
            current: current_version.unwrap_or(-1),
            message,
        }
    } else {
        ClientError::Server { code, message }
    }
}

/// The result of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    pub first_version: u64,
    pub last_version: u64,
    pub partition: u32,
    pub lsn: u64,
}

/// Stream information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub next_version: u64,
    pub first_lsn: u64,
    pub last_lsn: u64,
}

enum Pending {
    Waiting(Option<Waker>),
    Done(Response),
}

/// What a subscription yields.
#[derive(Debug)]
pub enum SubscriptionItem {
    Events(Vec<RecordedEvent>),
    /// The server ended the subscription (e.g. code 30: too slow).
    Ended(ClientError),
}

struct Inner {
    writer: Mutex<TcpStream>,
    pending: Mutex<HashMap<u64, Pending>>,
    subs: Mutex<HashMap<u64, mpsc::Sender<SubscriptionItem>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    close_reason: Mutex<String>,
    partitions: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader thread reads from a clone of the socket: shutting it down ends that
        // thread and lets the server see the connection close.
        if let Ok(w) = self.writer.get_mut() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// An evring connection (async API): the first connection, plus one per shard port when
/// the server advertises them.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Partition → the connection to its owner; empty when the server advertises no
    /// addresses beyond the one connected to.
    routes: Arc<Vec<Arc<Inner>>>,
}

/// A reply that has not arrived yet.
pub struct ReplyFuture {
    inner: Arc<Inner>,
    id: u64,
}

impl Future for ReplyFuture {
    type Output = Result<Response, ClientError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut pending = self.inner.pending.lock().expect("pending lock");
        match pending.remove(&self.id) {
            Some(Pending::Done(resp)) => Poll::Ready(Ok(resp)),
            Some(Pending::Waiting(_)) | None => {
                if self.inner.closed.load(Ordering::Acquire) {
                    let reason = self.inner.close_reason.lock().expect("reason").clone();
                    return Poll::Ready(Err(ClientError::Closed(reason)));
                }
                pending.insert(self.id, Pending::Waiting(Some(cx.waker().clone())));
                Poll::Pending
            }
        }
    }
}

impl Drop for ReplyFuture {
    fn drop(&mut self) {
        if let Ok(mut p) = self.inner.pending.lock() {
            p.remove(&self.id);
        }
    }
}

fn read_frame(stream: &mut impl Read) -> Result<(FrameHeader, Vec<u8>), ClientError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    stream.read_exact(&mut header)?;
    let header = FrameHeader::parse(&header).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let mut body = vec![0u8; header.body_len()];
    stream.read_exact(&mut body)?;
    Ok((header, body))
}

/// Opens one connection, sends HELLO and returns it with HELLO's partition addresses.
fn open(
    addr: impl ToSocketAddrs,
    client_name: &str,
    auth_token: &str,
) -> Result<(Arc<Inner>, Vec<String>), ClientError> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let inner = Arc::new(Inner {
        writer: Mutex::new(stream),
        pending: Mutex::new(HashMap::new()),
        subs: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        closed: AtomicBool::new(false),
        close_reason: Mutex::new(String::new()),
        partitions: AtomicU64::new(0),
    });
    let weak = Arc::downgrade(&inner);
    std::thread::Builder::new()
        .name("evring-client-reader".into())
        .spawn(move || {
            let reason = loop {
                let (header, body) = match read_frame(&mut reader) {
                    Ok(f) => f,
                    Err(e) => break e.to_string(),
                };
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let resp = match decode_response(header.opcode, &body) {
                    Ok(r) => r,
                    Err(e) => break format!("undecodable reply: {e}"),
                };
                inner.dispatch(header.request_id, resp);
            };
            if let Some(inner) = weak.upgrade() {
                inner.close(reason);
            }
        })?;
    let hello = futures_lite::future::block_on(inner.request(&Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: client_name.into(),
        auth_token: auth_token.into(),
    }))?;
    match hello {
        Response::Hello {
            partition_addresses,
            ..
        } => {
            inner
                .partitions
                .store(partition_addresses.len() as u64, Ordering::Release);
            Ok((inner, partition_addresses))
        }
        Response::Error {
            code,
            message,
            current_version,
        } => Err(server_error(code, message, current_version)),
        other => Err(ClientError::Protocol(format!(
            "unexpected HELLO reply {other:?}"
        ))),
    }
}

impl Client {
    /// Connects, sends HELLO and waits for its reply; when the server advertises shard
    /// ports, also connects to each (see the module docs).
    pub fn connect(
        addr: impl ToSocketAddrs,
        client_name: &str,
        auth_token: &str,
    ) -> Result<Client, ClientError> {
        let (inner, addresses) = open(addr, client_name, auth_token)?;
        let connected = inner.writer.lock().expect("writer lock").peer_addr()?;
        let mut routes = Vec::new();
        if addresses
            .iter()
            .any(|a| a.parse::<std::net::SocketAddr>().ok() != Some(connected))
        {
            let mut by_address: HashMap<String, Arc<Inner>> = HashMap::new();
            by_address.insert(connected.to_string(), inner.clone());
            for a in &addresses {
                let conn = match by_address.get(a) {
                    Some(c) => c.clone(),
                    None => {
                        let c = match open(a.as_str(), client_name, auth_token) {
                            Ok((c, _)) => c,
                            // Unreachable from here (NAT, firewall): the first connection
                            // serves these partitions too.
                            Err(ClientError::Io(_)) => inner.clone(),
                            Err(e) => return Err(e),
                        };
                        by_address.insert(a.clone(), c.clone());
                        c
                    }
                };
                routes.push(conn);
            }
        }
        Ok(Client {
            inner,
            routes: Arc::new(routes),
        })
    }

    /// Connections this client holds open (1 unless the server advertises shard ports).
    pub fn connections(&self) -> usize {
        let mut seen: Vec<*const Inner> = vec![Arc::as_ptr(&self.inner)];
        for r in self.routes.iter() {
            if !seen.contains(&Arc::as_ptr(r)) {
                seen.push(Arc::as_ptr(r));
            }
        }
        seen.len()
    }

    /// The connection for a request: its stream's partition's, when routing.
    fn conn_for(&self, req: &Request) -> &Arc<Inner> {
        let stream = match req {
            Request::Append { stream, .. }
            | Request::Read { stream, .. }
            | Request::StreamInfo { stream } => stream,
            Request::Aggregate { stream, .. } if !stream.is_empty() => stream,
            Request::Subscribe {
                target: SubscribeTarget::Stream,
                name,
                ..
            } => name,
            _ => return &self.inner,
        };
        if self.routes.is_empty() {
            return &self.inner;
        }
        let p = crate::protocol::partition_of(stream, self.routes.len() as u32);
        &self.routes[p as usize]
    }

    /// Partition count the server announced.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions.load(Ordering::Acquire) as u32
    }

    /// Sends one request (over its stream's connection when routing); the future resolves
    /// with its reply.
    pub fn request(&self, req: &Request) -> ReplyFuture {
        self.conn_for(req).request(req)
    }

    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(&Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Appends events; `expected_version` is -1 (any), -2 (no stream), -3 (exists) or the
    /// stream's last version.
    pub async fn append(
        &self,
        stream: &str,
        expected_version: i64,
        events: Vec<Event>,
    ) -> Result<AppendResult, ClientError> {
        let req = Request::Append {
            stream: stream.into(),
            expected_version,
            events,
        };
        match self.request(&req).await? {
            Response::Appended {
                first_version,
                last_version,
                partition,
                lsn,
            } => Ok(AppendResult {
                first_version,
                last_version,
                partition,
                lsn,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Reads up to `max_count` events; returns them and whether the end was reached.
    pub async fn read(
        &self,
        stream: &str,
        from_version: u64,
        max_count: u32,
        direction: Direction,
    ) -> Result<(Vec<RecordedEvent>, bool), ClientError> {
        let req = Request::Read {
            stream: stream.into(),
            from_version,
            max_count,
            direction,
        };
        match self.request(&req).await? {
            Response::Events {
                mut events,
                end_of_stream,
            } => {
                // A READ reply is one stream's; the wire leaves its name out.
                for e in &mut events {
                    e.stream = stream.to_string();
                }
                Ok((events, end_of_stream))
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn stream_info(&self, stream: &str) -> Result<StreamInfo, ClientError> {
        match self
            .request(&Request::StreamInfo {
                stream: stream.into(),
            })
            .await?
        {
            Response::StreamInfo {
                next_version,
                first_lsn,
                last_lsn,
            } => Ok(StreamInfo {
                next_version,
                first_lsn,
                last_lsn,
            }),
            other => Err(unexpected(other)),
        }
    }

    pub async fn aggregate(
        &self,
        stream: &str,
        type_prefix: &str,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    ) -> Result<Vec<Bucket>, ClientError> {
        let req = Request::Aggregate {
            stream: stream.into(),
            type_prefix: type_prefix.into(),
            from_ns,
            to_ns,
            bucket_ns,
        };
        match self.request(&req).await? {
            Response::Aggregated { buckets } => Ok(buckets),
            other => Err(unexpected(other)),
        }
    }

    /// Server statistics as JSON text.
    /// EXECUTE: a command (bytes the model understands; JSON for `"kv"`) to `model`.
    pub async fn execute(&self, model: &str, command: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let req = Request::Execute {
            model: model.into(),
            command,
        };
        match self.request(&req).await? {
            Response::Executed { result } => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    /// QUERY: a read-only question to `model`.
    pub async fn query(&self, model: &str, query: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let req = Request::Query {
            model: model.into(),
            query,
        };
        match self.request(&req).await? {
            Response::Queried { result } => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    pub async fn stats(&self) -> Result<String, ClientError> {
        match self.request(&Request::Stats).await? {
            Response::Stats { json } => Ok(json),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes; history from `from` first (stream version for a stream, LSN per
    /// partition otherwise; `u64::MAX` = live only), then live events.
    pub async fn subscribe(
        &self,
        target: SubscribeTarget,
        name: &str,
        from: u64,
        type_prefix: &str,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_request(Request::Subscribe {
            target,
            name: name.into(),
            from,
            type_prefix: type_prefix.into(),
            positions: Vec::new(),
        })
        .await
    }

    /// Subscribes to every partition's events (`SubscribeTarget::All`) from a checkpoint:
    /// each partition from its own position. Keep the checkpoint up to date with
    /// [`Checkpoint::advance`] as events arrive, store it (its `Display` form), and resume
    /// from it after a restart or a cut-off with no gap and no duplicate.
    pub async fn subscribe_all_from(
        &self,
        checkpoint: &Checkpoint,
        type_prefix: &str,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_request(Request::Subscribe {
            target: SubscribeTarget::All,
            name: String::new(),
            from: 0,
            type_prefix: type_prefix.into(),
            positions: checkpoint.positions.clone(),
        })
        .await
    }

    async fn subscribe_request(&self, req: Request) -> Result<Subscription, ClientError> {
        let conn = self.conn_for(&req).clone();
        let id = conn.next_id.fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = mpsc::channel();
        conn.subs.lock().expect("subs lock").insert(id, tx);
        conn.send_with_id(id, &req);
        let reply = ReplyFuture {
            inner: conn.clone(),
            id,
        }
        .await;
        match reply {
            Ok(Response::Subscribed) => Ok(Subscription { id, conn, rx }),
            Ok(other) => {
                conn.subs.lock().expect("subs lock").remove(&id);
                Err(unexpected(other))
            }
            Err(e) => {
                conn.subs.lock().expect("subs lock").remove(&id);
                Err(e)
            }
        }
    }
}

fn unexpected(resp: Response) -> ClientError {
    match resp {
        Response::Error {
            code,
            message,
            current_version,
        } => server_error(code, message, current_version),
        other => ClientError::Protocol(format!("unexpected reply {:?}", other.opcode())),
    }
}

impl Inner {
    /// Sends one request on this connection; the future resolves with its reply.
    fn request(self: &Arc<Self>, req: &Request) -> ReplyFuture {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        self.send_with_id(id, req);
        ReplyFuture {
            inner: self.clone(),
            id,
        }
    }

    fn send_with_id(&self, id: u64, req: &Request) {
        self.pending
            .lock()
            .expect("pending lock")
            .insert(id, Pending::Waiting(None));
        let mut frame = Vec::new();
        encode_request(&mut frame, id, req);
        let mut w = self.writer.lock().expect("writer lock");
        if let Err(e) = w.write_all(&frame) {
            drop(w);
            self.close(format!("write failed: {e}"));
        }
    }

    fn dispatch(&self, id: u64, resp: Response) {
        // Subscription traffic: pushes, and errors after the subscription was accepted.
        {
            let subs = self.subs.lock().expect("subs lock");
            if let Some(tx) = subs.get(&id) {
                let accepted = !self.pending.lock().expect("pending").contains_key(&id);
                match resp {
                    Response::Pushed { events } | Response::PushedV1 { events } => {
                        let _ = tx.send(SubscriptionItem::Events(events));
                        return;
                    }
                    Response::Error {
                        code,
                        message,
                        current_version,
                    } if accepted => {
                        let _ = tx.send(SubscriptionItem::Ended(server_error(
                            code,
                            message,
                            current_version,
                        )));
                        drop(subs);
                        self.subs.lock().expect("subs lock").remove(&id);
                        return;
                    }
                    _ => {}
                }
            }
        }
        let mut pending = self.pending.lock().expect("pending lock");
        if let Some(Pending::Waiting(waker)) = pending.insert(id, Pending::Done(resp)) {
            if let Some(w) = waker {
                w.wake();
            }
        } else {
            // Nobody waits for this id (a dropped future, or an error frame with id 0).
            pending.remove(&id);
        }
    }

    fn close(&self, reason: String) {
        *self.close_reason.lock().expect("reason") = reason.clone();
        self.closed.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self
            .pending
            .lock()
            .expect("pending lock")
            .values_mut()
            .filter_map(|p| match p {
                Pending::Waiting(w) => w.take(),
                Pending::Done(_) => None,
            })
            .collect();
        for w in wakers {
            w.wake();
        }
        for (_, tx) in self.subs.lock().expect("subs lock").drain() {
            let _ = tx.send(SubscriptionItem::Ended(ClientError::Closed(reason.clone())));
        }
    }
}

/// A live subscription: events arrive in LSN order per partition.
pub struct Subscription {
    id: u64,
    /// The connection the subscription lives on.
    conn: Arc<Inner>,
    rx: mpsc::Receiver<SubscriptionItem>,
}

impl Subscription {
    /// The subscription's id (its request id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next batch, waiting up to `timeout`; `None` on timeout.
    pub fn next_timeout(&self, timeout: Duration) -> Option<SubscriptionItem> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next batch, waiting as long as it takes.
    pub fn next(&self) -> SubscriptionItem {
        self.rx
            .recv()
            .unwrap_or_else(|_| SubscriptionItem::Ended(ClientError::Closed("closed".into())))
    }

    /// Ends the subscription.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.conn.subs.lock().expect("subs lock").remove(&self.id);
        match self
            .conn
            .request(&Request::Unsubscribe {
                subscription_id: self.id,
            })
            .await?
        {
            Response::Subscribed => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// The same client with blocking methods.
#[derive(Clone)]
pub struct BlockingClient {
    pub client: Client,
}

impl BlockingClient {
    pub fn connect(
        addr: impl ToSocketAddrs,
        client_name: &str,
        auth_token: &str,
    ) -> Result<BlockingClient, ClientError> {
        Ok(BlockingClient {
            client: Client::connect(addr, client_name, auth_token)?,
        })
    }
    pub fn ping(&self) -> Result<(), ClientError> {
        futures_lite::future::block_on(self.client.ping())
    }
    pub fn append(
        &self,
        stream: &str,
        expected_version: i64,
        events: Vec<Event>,
    ) -> Result<AppendResult, ClientError> {
        futures_lite::future::block_on(self.client.append(stream, expected_version, events))
    }
    pub fn read(
        &self,
        stream: &str,
        from_version: u64,
        max_count: u32,
        direction: Direction,
    ) -> Result<(Vec<RecordedEvent>, bool), ClientError> {
        futures_lite::future::block_on(self.client.read(stream, from_version, max_count, direction))
    }
    pub fn stream_info(&self, stream: &str) -> Result<StreamInfo, ClientError> {
        futures_lite::future::block_on(self.client.stream_info(stream))
    }
    pub fn stats(&self) -> Result<String, ClientError> {
        futures_lite::future::block_on(self.client.stats())
    }
    pub fn execute(&self, model: &str, command: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        futures_lite::future::block_on(self.client.execute(model, command))
    }
    pub fn query(&self, model: &str, query: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        futures_lite::future::block_on(self.client.query(model, query))
    }
    pub fn aggregate(
        &self,
        stream: &str,
        type_prefix: &str,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    ) -> Result<Vec<Bucket>, ClientError> {
        futures_lite::future::block_on(self.client.aggregate(
            stream,
            type_prefix,
            from_ns,
            to_ns,
            bucket_ns,
        ))
    }
    pub fn subscribe(
        &self,
        target: SubscribeTarget,
        name: &str,
        from: u64,
        type_prefix: &str,
    ) -> Result<Subscription, ClientError> {
        futures_lite::future::block_on(self.client.subscribe(target, name, from, type_prefix))
    }
    pub fn subscribe_all_from(
        &self,
        checkpoint: &Checkpoint,
        type_prefix: &str,
    ) -> Result<Subscription, ClientError> {
        futures_lite::future::block_on(self.client.subscribe_all_from(checkpoint, type_prefix))
    }
    pub fn partitions(&self) -> u32 {
        self.client.partitions()
    }
}

/// Where a subscription to every partition stands: per partition, the LSN of the next event
/// to deliver. Written as the positions separated by commas, in partition order
/// (`"1204,0,877"`; `-` for "live only"), so it can be stored and handed back
/// ([`Client::subscribe_all_from`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    positions: Vec<u64>,
}

impl Checkpoint {
    /// Every partition from its first event.
    pub fn beginning(partitions: u32) -> Checkpoint {
        Checkpoint {
            positions: vec![0; partitions as usize],
        }
    }

    /// Each partition from its position in `positions` (partition order; `u64::MAX`: live).
    pub fn from_positions(positions: Vec<u64>) -> Checkpoint {
        Checkpoint { positions }
    }

    /// Every partition from its next new event (live only).
    pub fn live(partitions: u32) -> Checkpoint {
        Checkpoint {
            positions: vec![u64::MAX; partitions as usize],
        }
    }

    /// Moves past `events` (pushed by a subscription to every partition).
    pub fn advance(&mut self, events: &[RecordedEvent]) {
        for e in events {
            if let Some(p) = self.positions.get_mut(e.partition as usize) {
                if *p == u64::MAX || *p <= e.lsn {
                    *p = e.lsn + 1;
                }
            }
        }
    }

    /// The position of each partition, in partition order.
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if *p == u64::MAX {
                f.write_str("-")?;
            } else {
                write!(f, "{p}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Checkpoint {
    type Err = String;
    fn from_str(text: &str) -> Result<Checkpoint, String> {
        let positions = text
            .trim()
            .split(',')
            .map(|p| match p.trim() {
                "-" => Ok(u64::MAX),
                n => n
                    .parse::<u64>()
                    .map_err(|_| format!("checkpoint position {n:?} is not a number or \"-\"")),
            })
            .collect::<Result<Vec<u64>, String>>()?;
        Ok(Checkpoint { positions })
    }
}

/// An event with just a type and data (no id, server timestamp, no value).
pub fn event(event_type: &str, data: impl Into<Vec<u8>>) -> Event {
    Event {
        id: [0; 16],
        event_type: event_type.into(),
        timestamp_ns: 0,
        value: f64::NAN,
        data: data.into(),
        metadata: Vec::new(),
    }
}
