//! One shard: a glommio executor that owns some partitions, accepts connections on the shared
//! client port (SO_REUSEPORT), serves their requests, and forwards requests for partitions it
//! does not own over bounded cross-shard channels.
//!
//! ## Cross-shard protocol
//!
//! Every ordered pair of shards has one bounded channel carrying [`ShardMsg`]. A request for
//! a remote partition is a `Call` with a token; the owner runs it in its own task and answers
//! with a `Reply` carrying the token. A full channel makes the caller wait (back-pressure);
//! the receiving loop never waits on anything but its channel, so calls cannot deadlock.
//! Subscriptions live on the connection's shard; partitions push matching events to it
//! (`Push`). A push that finds the channel full drops the subscription: the subscriber gets
//! error 30 and resubscribes from its last position (bounded memory, never unbounded
//! buffering).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::net::{TcpListener, TcpStream};

use super::slot::{slot, Filler};
use super::ApiError;
use crate::config::Config;
use crate::constants::HELLO_FRAME_BYTES_MAX;
use crate::engine::kv::KvModel;
use crate::engine::Engine;
use crate::protocol::{
    self, code, decode_request, encode_response, partition_of, Direction, Event, FrameHeader,
    RecordedEvent, Request, Response, SubscribeTarget, FRAME_HEADER_BYTES, PROTOCOL_VERSION,
    PROTOCOL_VERSION_MIN,
};
use crate::stream::{AppendOk, Partition, PartitionStats, PublishSink, StreamInfo};

/// An operation on one partition.
#[derive(Debug)]
pub enum PartOp {
    Append {
        stream: String,
        expected_version: i64,
        events: Vec<Event>,
    },
    Read {
        stream: String,
        from: u64,
        max: u32,
        direction: Direction,
    },
    Info {
        stream: String,
    },
    /// The partition's events from LSN `from` on, at most `max` (and `max_read_bytes`), from
    /// its journal: a subscription's catch-up of what the ring no longer holds.
    ReadRange {
        from: u64,
        max: usize,
    },
    Aggregate {
        stream: String,
        type_prefix: String,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    },
    Stats,
    Subscribe {
        origin: usize,
        conn: u64,
        sub: u64,
        target: SubscribeTarget,
        stream: String,
        from: u64,
        type_prefix: String,
    },
    Unsubscribe {
        origin: usize,
        conn: u64,
        sub: u64,
    },
    /// A command to the partition's key-value engine.
    KvExecute(crate::engine::kv::KvCommand),
    KvGet {
        key: String,
        as_of: Option<u64>,
    },
    KvList {
        prefix: String,
        limit: usize,
    },
    /// EXECUTE or QUERY of the served model (on partition 0's shard).
    Model {
        blob: Vec<u8>,
        is_query: bool,
    },
}

#[derive(Debug)]
pub enum OpResult {
    Json(serde_json::Value),
    Blob(Vec<u8>),
    Appended(AppendOk),
    Events(Vec<RecordedEvent>, bool),
    Info(StreamInfo),
    Buckets(Vec<crate::aggregate::Bucket>),
    Stats(PartitionStats),
    Done,
    Err(ApiError),
}

/// Messages between shards.
#[derive(Debug)]
pub enum ShardMsg {
    Call {
        from: usize,
        token: u64,
        partition: u32,
        op: PartOp,
    },
    Reply {
        token: u64,
        result: OpResult,
    },
    Push {
        conn: u64,
        sub: u64,
        events: Vec<RecordedEvent>,
    },
}

/// State shared by every shard thread.
pub struct Shared {
    pub config: Config,
    pub partitions: u32,
    pub shards: usize,
    pub client_addr: SocketAddr,
    /// Each shard's own client port, by shard (`shard_ports`); set once every shard listens.
    pub shard_addrs: std::sync::OnceLock<Vec<SocketAddr>>,
    /// Partition calls forwarded to another shard (STATS `cross_shard_calls`).
    pub cross_shard_calls: std::sync::atomic::AtomicU64,
    pub connections: AtomicUsize,
    pub stop: AtomicBool,
    /// The name of the user's model this server serves, if any (on partition 0's shard).
    pub served_model: Option<String>,
    /// Every partition's view (its ring and type names), set by its owner once recovered:
    /// any shard serves AGGREGATE and the ring part of a subscription's catch-up through it,
    /// without a message to the owner.
    pub views: Vec<std::sync::OnceLock<crate::stream::PartitionView>>,
}

/// Outbound side of one connection: encoded frames waiting for the writer task.
struct ConnOut {
    buf: RefCell<Vec<u8>>,
    /// The writer task, waiting for bytes to send.
    waker: RefCell<Option<std::task::Waker>>,
    /// The reader, waiting for the buffer to drop to `limit` (see `wait_for_room`).
    room_waker: RefCell<Option<std::task::Waker>>,
    /// Subscription catch-ups, waiting for room for their next chunk (see `wait_for_room_for`).
    catch_up_wakers: RefCell<Vec<std::task::Waker>>,
    closed: Cell<bool>,
    limit: usize,
    /// Subscriptions of this connection: id → type prefix filter is applied at the source.
    subs: RefCell<HashMap<u64, Vec<u32>>>,
    /// Set at a server stop: the reader stops reading requests.
    stopping: Cell<bool>,
    /// The protocol version the client's HELLO asked for (pushes name their streams from 2).
    version: Cell<u16>,
    /// The reader, waiting between frames (see `stopped`).
    stop_waker: RefCell<Option<std::task::Waker>>,
}

impl ConnOut {
    /// Resolves once the outbound buffer holds at most `limit` bytes (or the connection is
    /// closed). The writer task wakes it each time it takes the buffer.
    async fn wait_for_room(&self) {
        std::future::poll_fn(|cx| {
            if self.closed.get() || self.buf.borrow().len() <= self.limit {
                std::task::Poll::Ready(())
            } else {
                *self.room_waker.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Resolves once `bytes` more fit in the outbound buffer without taking it past `limit`,
    /// or it is empty, or the connection is closed, or the server is stopping. A catch-up
    /// waits here before it offers a chunk: the subscriber reads history at its own pace,
    /// where a live push to a full buffer drops the subscription (the subscriber is too
    /// slow). At a stop it waits no more: the stop ended the subscription (error 31), and
    /// the catch-up ends with it.
    async fn wait_for_room_for(&self, bytes: usize) {
        std::future::poll_fn(|cx| {
            let held = self.buf.borrow().len();
            if self.closed.get() || self.stopping.get() || held == 0 || held + bytes <= self.limit {
                std::task::Poll::Ready(())
            } else {
                let mut wakers = self.catch_up_wakers.borrow_mut();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Resolves once `stop` was called.
    async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            if self.stopping.get() {
                std::task::Poll::Ready(())
            } else {
                *self.stop_waker.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// A server stop: the reader reads no more requests.
    fn stop(&self) {
        self.stopping.set(true);
        if let Some(w) = self.stop_waker.borrow_mut().take() {
            w.wake();
        }
        for w in self.catch_up_wakers.take() {
            w.wake();
        }
    }

    fn wake_reader(&self) {
        if let Some(w) = self.room_waker.borrow_mut().take() {
            w.wake();
        }
        for w in self.catch_up_wakers.take() {
            w.wake();
        }
    }

    fn send(&self, request_id: u64, resp: &Response) {
        if self.closed.get() {
            return;
        }
        encode_response(&mut self.buf.borrow_mut(), request_id, 0, resp);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Queues pushed events unless the buffer is over its limit; false means too slow.
    fn push(&self, sub: u64, events: &[RecordedEvent]) -> bool {
        if self.closed.get() || !self.subs.borrow().contains_key(&sub) {
            return false;
        }
        if self.buf.borrow().len() > self.limit {
            return false;
        }
        let named = self.version.get() >= 2;
        protocol::encode_pushed(&mut self.buf.borrow_mut(), sub, events, named);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
        true
    }
}

/// A SUBSCRIBE's fields.
struct SubscribeRequest {
    target: SubscribeTarget,
    name: String,
    from: u64,
    type_prefix: String,
    /// One start per partition the target spans, or empty (`from` everywhere).
    positions: Vec<u64>,
}

/// (origin shard, connection, subscription, partition).
type SinkKey = (usize, u64, u64, u32);

/// A live model subscription: its sink id at the engine, and the engine.
type ModelSink = (u64, Rc<dyn super::serve::ModelEngine>);

/// One shard's context.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub partitions: HashMap<u32, Rc<Partition>>,
    senders: Vec<Option<ConnectedSender<ShardMsg>>>,
    next_token: Cell<u64>,
    waiting: RefCell<HashMap<u64, Filler<OpResult>>>,
    next_conn: Cell<u64>,
    conns: RefCell<HashMap<u64, Rc<ConnOut>>>,
    /// Sinks registered at local partitions for subscriptions: (origin, conn, sub, partition).
    sinks: RefCell<HashMap<SinkKey, Rc<dyn PublishSink>>>,
    /// The key-value engine of each local partition.
    pub kv: HashMap<u32, Engine<KvModel>>,
    /// Live sinks of model subscriptions at the local engines: key → (sink id, engine).
    model_sinks: RefCell<HashMap<SinkKey, ModelSink>>,
    /// The user's model, on the shard that owns partition 0.
    pub served: Option<(String, Rc<dyn super::serve::ModelService>)>,
    /// The log of failed accepts (out of file descriptors repeats them at every accept).
    accept_failures: crate::log_limit::LogLimit,
    /// Messages this shard sent to others (calls, replies, pushes).
    messages_sent: metrics::Counter,
}

/// Pushes a partition's events to a subscriber, filtering by stream or type prefix.
struct SubSink {
    shard: std::rc::Weak<Shard>,
    origin: usize,
    conn: u64,
    sub: u64,
    stream: Option<String>,
    type_prefix: String,
}

impl PublishSink for SubSink {
    fn offer(&self, stream: &str, events: &[RecordedEvent]) -> bool {
        let Some(shard) = self.shard.upgrade() else {
            return false;
        };
        if self.stream.as_deref().is_some_and(|s| s != stream) {
            return true;
        }
        let selected: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| e.event.event_type.starts_with(&self.type_prefix))
            .cloned()
            .collect();
        if selected.is_empty() {
            return true;
        }
        shard.deliver_push(self.origin, self.conn, self.sub, selected)
    }
}

/// Why a request frame could not be read: the connection ended, or an error to reply before
/// closing it (request id, code, message).
enum FrameReadError {
    Closed(String),
    Reply(u64, u16, String),
}

/// Waits for the next request frame and reads it. Between frames a connection may idle as
/// long as it likes; once a frame has begun it must arrive whole within `frame_timeout`
/// (slowloris), a timer armed only when the frame is not already buffered.
async fn next_frame<R: futures_lite::AsyncBufRead + futures_lite::AsyncRead + Unpin>(
    rd: &mut R,
    max_frame_bytes: u32,
    frame_timeout: Duration,
    cfg: &Config,
    out: &ConnOut,
) -> Result<(FrameHeader, Request), FrameReadError> {
    // The wait for a frame's first bytes ends when the server stops.
    let filled = futures_lite::future::or(
        async { Some(rd.fill_buf().await.map(|b| b.is_empty())) },
        async {
            out.stopped().await;
            None
        },
    )
    .await;
    match filled {
        None => return Err(FrameReadError::Closed("the server is stopping".into())),
        Some(Ok(true)) => return Err(FrameReadError::Closed("closed by the client".into())),
        Some(Ok(false)) => {}
        Some(Err(e)) => return Err(FrameReadError::Closed(format!("read: {e}"))),
    }
    // The bytes are there: this returns them without reading.
    let buffered = match rd.fill_buf().await {
        Ok(b) => b,
        Err(e) => return Err(FrameReadError::Closed(format!("read: {e}"))),
    };
    let whole = buffered.len() >= 4
        && u32::from_le_bytes(buffered[..4].try_into().expect("4 bytes")) as usize + 4
            <= buffered.len();
    let read = read_frame(rd, max_frame_bytes);
    if whole {
        return read.await;
    }
    match glommio::timer::timeout(frame_timeout, async { Ok(read.await) }).await {
        Ok(r) => r,
        Err(_) => Err(FrameReadError::Reply(
            0,
            code::MALFORMED_FRAME,
            format!(
                "frame not complete after {} ms (frame_timeout_ms)",
                cfg.frame_timeout_ms
            ),
        )),
    }
}

/// Whether the token a client presented is the server's, in time that does not depend on
/// where they differ (a byte-by-byte `!=` stops at the first difference, which lets a
/// client find the token a byte at a time by timing).
fn token_matches(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

/// Reads one request frame (header, body) and decodes it.
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    rd: &mut R,
    max_frame_bytes: u32,
) -> Result<(FrameHeader, Request), FrameReadError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    if let Err(e) = rd.read_exact(&mut header).await {
        return Err(FrameReadError::Closed(format!("read: {e}")));
    }
    let header = FrameHeader::parse(&header)
        .map_err(|e| FrameReadError::Reply(0, e.code(), e.to_string()))?;
    if u64::from(header.length) + 4 > u64::from(max_frame_bytes) {
        return Err(FrameReadError::Reply(
            header.request_id,
            code::FRAME_TOO_LARGE,
            format!(
                "frame of {} bytes exceeds max_frame_bytes = {max_frame_bytes}",
                u64::from(header.length) + 4
            ),
        ));
    }
    let mut body = vec![0u8; header.body_len()];
    if let Err(e) = rd.read_exact(&mut body).await {
        return Err(FrameReadError::Closed(format!("read body: {e}")));
    }
    let request = decode_request(header.opcode, &body)
        .map_err(|e| FrameReadError::Reply(header.request_id, e.code(), e.to_string()))?;
    Ok((header, request))
}

fn unavailable(what: &str) -> ApiError {
    ApiError::new(code::PARTITION_UNAVAILABLE, what.to_string())
}

fn error_response(e: ApiError) -> Response {
    Response::Error {
        code: e.code,
        message: e.message,
        current_version: e.current_version,
    }
}

/// Offers `events` (of several streams, in LSN order) to `sink` a run of one stream at a
/// time; false once the sink refuses (the subscriber went away or is too slow).
fn offer_runs(sink: &SubSink, events: &[RecordedEvent]) -> bool {
    events
        .chunk_by(|a, b| a.stream == b.stream)
        .all(|run| sink.offer(&run[0].stream, run))
}

/// Events per catch-up read.
const CATCH_UP_CHUNK: usize = 512;

/// At least the bytes `events` take as pushes (a frame per run of one stream, each event
/// with its stream's name).
fn pushed_bytes(events: &[RecordedEvent]) -> usize {
    events
        .iter()
        .map(|e| {
            let ev = &e.event;
            // Frame header and event count, fixed fields, length prefixes.
            20 + 72 + e.stream.len() + ev.event_type.len() + ev.data.len() + ev.metadata.len()
        })
        .sum()
}

impl Shard {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        partitions: HashMap<u32, Rc<Partition>>,
        kv: HashMap<u32, Engine<KvModel>>,
        served: Option<(String, Rc<dyn super::serve::ModelService>)>,
        senders: Vec<Option<ConnectedSender<ShardMsg>>>,
    ) -> Rc<Shard> {
        Rc::new(Shard {
            id,
            shared,
            partitions,
            kv,
            model_sinks: RefCell::new(HashMap::new()),
            served,
            senders,
            next_token: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            conns: RefCell::new(HashMap::new()),
            sinks: RefCell::new(HashMap::new()),
            accept_failures: crate::log_limit::LogLimit::default(),
            messages_sent: metrics::counter!(crate::metrics::CROSS_SHARD_MESSAGES),
        })
    }

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

    /// Every model engine of this shard with its partition: each owned partition's
    /// key-value engine, and the served model (partition 0) if it runs here.
    pub fn models(&self) -> Vec<(u32, Rc<dyn super::serve::ModelEngine>)> {
        let mut models: Vec<(u32, Rc<dyn super::serve::ModelEngine>)> = self
            .kv
            .iter()
            .map(|(&id, e)| (id, Rc::new(e.clone()) as Rc<dyn super::serve::ModelEngine>))
            .collect();
        if let Some((_, service)) = &self.served {
            models.push((0, service.engine()));
        }
        models
    }

    /// HELLO's address per partition: its owning shard's own port when `shard_ports` is on
    /// (and every shard listens), else the client port. A wildcard host (0.0.0.0, ::) is
    /// replaced by `local_ip`, the address the client connected to.
    fn partition_addresses(&self, local_ip: Option<std::net::IpAddr>) -> Vec<String> {
        (0..self.shared.partitions)
            .map(|p| match self.shared.shard_addrs.get() {
                Some(addrs) => advertised(addrs[self.owner_of(p)], local_ip),
                None => advertised(self.shared.client_addr, local_ip),
            })
            .collect()
    }

    fn owner_of(&self, partition: u32) -> usize {
        partition as usize % self.shared.shards
    }

    /// Runs `op` on `partition`, here or on its owning shard.
    pub async fn call(self: &Rc<Self>, partition: u32, op: PartOp) -> OpResult {
        if partition >= self.shared.partitions {
            return OpResult::Err(ApiError::new(
                code::INVALID_ARGUMENT,
                format!("partition {partition} does not exist"),
            ));
        }
        let owner = self.owner_of(partition);
        if owner == self.id {
            return self.execute(partition, op).await;
        }
        self.shared
            .cross_shard_calls
            .fetch_add(1, Ordering::Relaxed);
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (filler, result) = slot();
        self.waiting.borrow_mut().insert(token, filler);
        let Some(sender) = self.senders[owner].as_ref() else {
            self.waiting.borrow_mut().remove(&token);
            return OpResult::Err(unavailable("no channel to the owning shard"));
        };
        let msg = ShardMsg::Call {
            from: self.id,
            token,
            partition,
            op,
        };
        self.messages_sent.increment(1);
        if sender.send(msg).await.is_err() {
            self.waiting.borrow_mut().remove(&token);
            return OpResult::Err(unavailable("the owning shard is gone"));
        }
        result
            .await
            .unwrap_or_else(|| OpResult::Err(unavailable("the owning shard dropped the call")))
    }

    async fn execute(self: &Rc<Self>, partition: u32, op: PartOp) -> OpResult {
        let Some(p) = self.partitions.get(&partition).cloned() else {
            return OpResult::Err(unavailable("partition not on this shard"));
        };
        match op {
            op @ (PartOp::KvExecute(_) | PartOp::KvGet { .. } | PartOp::KvList { .. }) => {
                self.kv_op(partition, op).await
            }
            PartOp::Model { blob, is_query } => {
                let Some((_, service)) = self.served.clone() else {
                    return OpResult::Err(unavailable("the served model is not on this shard"));
                };
                let result = if is_query {
                    service.query(blob)
                } else {
                    service.execute(blob).await
                };
                match result {
                    Ok(bytes) => OpResult::Blob(bytes),
                    Err(e) => OpResult::Err(e),
                }
            }
            PartOp::Append {
                stream,
                expected_version,
                events,
            } => match p.append(&stream, expected_version, events).await {
                Ok(a) => OpResult::Appended(a),
                Err(e) => OpResult::Err(e.into()),
            },
            PartOp::Read {
                stream,
                from,
                max,
                direction,
            } => match p.read(&stream, from, max, direction).await {
                Ok((events, end)) => OpResult::Events(events, end),
                Err(e) => OpResult::Err(e.into()),
            },
            PartOp::ReadRange { from, max } => {
                match p.read_lsn_range(from, max, p.max_read_bytes()).await {
                    Ok(events) => OpResult::Events(events, false),
                    Err(e) => OpResult::Err(e.into()),
                }
            }
            PartOp::Info { stream } => match p.stream_info(&stream) {
                Ok(i) => OpResult::Info(i),
                Err(e) => OpResult::Err(e.into()),
            },
            PartOp::Stats => OpResult::Stats(p.stats()),
            PartOp::Aggregate {
                stream,
                type_prefix,
                from_ns,
                to_ns,
                bucket_ns,
            } => match p.aggregate(&stream, &type_prefix, from_ns, to_ns, bucket_ns) {
                Ok(b) => OpResult::Buckets(b),
                Err(e) => OpResult::Err(e.into()),
            },
            PartOp::Subscribe {
                origin,
                conn,
                sub,
                target,
                stream,
                from,
                type_prefix,
            } => {
                let sink = Rc::new(SubSink {
                    shard: Rc::downgrade(self),
                    origin,
                    conn,
                    sub,
                    stream: (target == SubscribeTarget::Stream).then(|| stream.clone()),
                    type_prefix,
                });
                if target == SubscribeTarget::Model {
                    let service: Option<Rc<dyn super::serve::ModelEngine>> = if stream == "kv" {
                        self.kv
                            .get(&partition)
                            .map(|e| Rc::new(e.clone()) as Rc<dyn super::serve::ModelEngine>)
                    } else {
                        self.served
                            .as_ref()
                            .filter(|(name, _)| *name == stream)
                            .map(|(_, s)| s.engine())
                    };
                    let Some(service) = service else {
                        return OpResult::Err(unavailable("the model is not on this shard"));
                    };
                    return self
                        .subscribe_model(partition, service, sink, from, stream)
                        .await;
                }
                match self.catch_up(&p, &sink, target, &stream, from).await {
                    Ok(true) => {
                        let sink: Rc<dyn PublishSink> = sink;
                        p.add_sink(sink.clone());
                        self.sinks
                            .borrow_mut()
                            .insert((origin, conn, sub, partition), sink);
                        OpResult::Done
                    }
                    Ok(false) => OpResult::Done,
                    Err(e) => OpResult::Err(e),
                }
            }
            PartOp::Unsubscribe { origin, conn, sub } => {
                if let Some(sink) = self
                    .sinks
                    .borrow_mut()
                    .remove(&(origin, conn, sub, partition))
                {
                    p.remove_sink(&sink);
                }
                if let Some((id, service)) = self
                    .model_sinks
                    .borrow_mut()
                    .remove(&(origin, conn, sub, partition))
                {
                    service.remove_sink(id);
                }
                OpResult::Done
            }
        }
    }

    /// A subscription to the key-value model's domain events of one partition: the events
    /// of commands from LSN `from` on re-derived from the journal, then live. The live sink
    /// is added in the same synchronous step as the final check that nothing was applied
    /// since the catch-up, so no event falls between them.
    async fn subscribe_model(
        &self,
        partition: u32,
        engine: Rc<dyn super::serve::ModelEngine>,
        sink: Rc<SubSink>,
        from: u64,
        model: String,
    ) -> OpResult {
        // A domain event's "stream" is its model.
        let name = model.clone();
        let to_recorded = Rc::new(move |e: &crate::engine::DomainEvent| RecordedEvent {
            stream: name.clone(),
            stream_version: e.lsn,
            lsn: e.lsn,
            partition,
            event: Event {
                id: [0; 16],
                event_type: e.event_type.clone(),
                timestamp_ns: e.timestamp_ns,
                value: f64::NAN,
                data: e.data.clone(),
                metadata: Vec::new(),
            },
        });
        // `u64::MAX`: live only. A `from` beyond what is applied: nothing to catch up; the
        // live sink skips events below it.
        let start = if from == u64::MAX {
            engine.applied_lsn()
        } else {
            from
        };
        let mut next = start;
        loop {
            let upto = engine.applied_lsn();
            if next < upto {
                let events = match engine.events_between(next, upto).await {
                    Ok(e) => e,
                    Err(e) => return OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, e)),
                };
                let recorded: Vec<RecordedEvent> = events.iter().map(|e| to_recorded(e)).collect();
                if !recorded.is_empty() && !sink.offer(&model, &recorded) {
                    return OpResult::Done; // the subscriber went away
                }
                next = upto;
            }
            // No await between this check and the registration: no event falls between.
            if engine.applied_lsn() <= next {
                let live = sink.clone();
                let to_recorded = to_recorded.clone();
                let model = model.clone();
                let id = engine.add_sink(Rc::new(move |e: &crate::engine::DomainEvent| {
                    e.lsn < start || live.offer(&model, &[to_recorded(e)])
                }));
                let key = (sink.origin, sink.conn, sink.sub, partition);
                self.model_sinks.borrow_mut().insert(key, (id, engine));
                return OpResult::Done;
            }
        }
    }

    /// An operation on the partition's key-value engine.
    async fn kv_op(&self, partition: u32, op: PartOp) -> OpResult {
        use crate::engine::kv::{entry_json, list, KvOutcome};
        let Some(engine) = self.kv.get(&partition) else {
            return OpResult::Err(unavailable("key-value partition not on this shard"));
        };
        let engine_err = super::serve::engine_error;
        match op {
            PartOp::KvExecute(cmd) => match engine.execute(cmd).await {
                Ok(KvOutcome::Version { version, lsn }) => {
                    OpResult::Json(serde_json::json!({"version": version, "lsn": lsn}))
                }
                Ok(KvOutcome::Deleted { deleted, lsn }) => {
                    OpResult::Json(serde_json::json!({"deleted": deleted, "lsn": lsn}))
                }
                Ok(KvOutcome::Conflict { current }) => OpResult::Err(ApiError {
                    code: code::WRONG_EXPECTED_VERSION,
                    message: format!("the key is at version {current}"),
                    current_version: Some(current as i64),
                }),
                Err(e) => OpResult::Err(engine_err(e)),
            },
            PartOp::KvGet { key, as_of: None } => {
                match engine.read(|m| m.entries.get(&key).map(|e| entry_json(&key, e))) {
                    Ok(v) => OpResult::Json(v.unwrap_or(serde_json::Value::Null)),
                    Err(e) => OpResult::Err(engine_err(e)),
                }
            }
            PartOp::KvGet {
                key,
                as_of: Some(lsn),
            } => match engine.state_at(lsn).await {
                Ok(m) => OpResult::Json(
                    m.entries
                        .get(&key)
                        .map_or(serde_json::Value::Null, |e| entry_json(&key, e)),
                ),
                Err(e) => OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, e.to_string())),
            },
            PartOp::KvList { prefix, limit } => match engine.read(|m| list(m, &prefix, limit)) {
                Ok(v) => OpResult::Json(serde_json::Value::Array(v)),
                Err(e) => OpResult::Err(engine_err(e)),
            },
            _ => unreachable!("kv_op is only called with key-value operations"),
        }
    }

    /// EXECUTE / QUERY of the built-in `kv` model: decode the JSON blob, route by key.
    async fn model_request(self: &Rc<Self>, model: &str, blob: &[u8], is_query: bool) -> Response {
        use crate::engine::kv::{KvCommand, KvQuery, LIST_LIMIT_MAX};
        if self.shared.served_model.as_deref() == Some(model) {
            let op = PartOp::Model {
                blob: blob.to_vec(),
                is_query,
            };
            return match self.call(0, op).await {
                OpResult::Blob(result) if is_query => Response::Queried { result },
                OpResult::Blob(result) => Response::Executed { result },
                OpResult::Err(e) => error_response(e),
                other => unexpected(other),
            };
        }
        if model != "kv" {
            return Response::error(
                code::INVALID_ARGUMENT,
                format!("no model named {model:?} is served (this server serves \"kv\")"),
            );
        }
        let partitions = self.shared.partitions;
        let bad = |e: serde_json::Error| {
            Response::error(code::INVALID_ARGUMENT, format!("bad kv request: {e}"))
        };
        let result = if is_query {
            let q: KvQuery = match serde_json::from_slice(blob) {
                Ok(q) => q,
                Err(e) => return bad(e),
            };
            match q {
                KvQuery::Get { key, as_of } => {
                    let p = partition_of(&key, partitions);
                    self.call(p, PartOp::KvGet { key, as_of }).await
                }
                KvQuery::List { prefix, limit } => {
                    let limit = limit.min(LIST_LIMIT_MAX);
                    let mut all = Vec::new();
                    for p in 0..partitions {
                        let op = PartOp::KvList {
                            prefix: prefix.clone(),
                            limit,
                        };
                        match self.call(p, op).await {
                            OpResult::Json(serde_json::Value::Array(v)) => all.extend(v),
                            OpResult::Err(e) => return error_response(e),
                            other => return unexpected(other),
                        }
                    }
                    all.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
                    all.truncate(limit);
                    OpResult::Json(serde_json::Value::Array(all))
                }
            }
        } else {
            let c: KvCommand = match serde_json::from_slice(blob) {
                Ok(c) => c,
                Err(e) => return bad(e),
            };
            let p = partition_of(c.key(), partitions);
            self.call(p, PartOp::KvExecute(c)).await
        };
        match result {
            OpResult::Json(v) => {
                let result = serde_json::to_vec(&v).expect("JSON values encode");
                if is_query {
                    Response::Queried { result }
                } else {
                    Response::Executed { result }
                }
            }
            OpResult::Err(e) => error_response(e),
            other => unexpected(other),
        }
    }

    /// Pushes history from `from` until caught up. Returns false if the subscriber went away.
    /// The caller registers the live sink in the same synchronous step as the final check,
    /// so no event falls between catch-up and live.
    async fn catch_up(
        self: &Rc<Self>,
        p: &Rc<Partition>,
        sink: &SubSink,
        target: SubscribeTarget,
        stream: &str,
        from: u64,
    ) -> Result<bool, ApiError> {
        match target {
            SubscribeTarget::Stream => {
                let mut version = from;
                loop {
                    let lsns = p.stream_lsns_from(stream, version);
                    if lsns.is_empty() {
                        return Ok(true);
                    }
                    let chunk = &lsns[..lsns.len().min(CATCH_UP_CHUNK)];
                    let events = p.fetch_lsns(chunk, p.max_read_bytes()).await?;
                    version += events.len() as u64;
                    if !sink.offer(stream, &events) {
                        return Ok(false);
                    }
                }
            }
            SubscribeTarget::Partition | SubscribeTarget::All | SubscribeTarget::Model => {
                let mut lsn = from;
                loop {
                    if lsn >= p.published_lsn() {
                        return Ok(true);
                    }
                    let events = match self.ring_chunk(p.id, lsn) {
                        Some(events) => events,
                        None => {
                            p.read_lsn_range(lsn, CATCH_UP_CHUNK, p.max_read_bytes())
                                .await?
                        }
                    };
                    let Some(last) = events.last() else {
                        return Ok(true);
                    };
                    lsn = last.lsn + 1;
                    if !offer_runs(sink, &events) {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// The catch-up of partition `p` for a subscription on this shard, from LSN `from`
    /// (`u64::MAX`: live only, nothing to catch up) as far as its ring reaches: returns the
    /// LSN reached, or `None` if the subscriber went away. Each chunk waits for room in the
    /// subscriber's outbound buffer `out` first, so history of any length arrives at the
    /// pace the subscriber reads it.
    async fn catch_up_partition(
        self: &Rc<Self>,
        p: u32,
        out: &ConnOut,
        sink: &SubSink,
        from: u64,
    ) -> Result<Option<u64>, ApiError> {
        let mut pos = from;
        if pos == u64::MAX {
            return Ok(Some(pos));
        }
        loop {
            let events = self.partition_chunk(p, pos).await?;
            let Some(last) = events.last() else {
                return Ok(Some(pos));
            };
            pos = last.lsn + 1;
            out.wait_for_room_for(pushed_bytes(&events)).await;
            if !offer_runs(sink, &events) {
                return Ok(None);
            }
        }
    }

    /// One chunk of partition `p`'s events from LSN `pos` on, from its ring through its view:
    /// empty once `pos` is past the ring's newest event; `None` when the ring no longer holds
    /// `pos` (or is empty, or the partition has no view yet), so the journal must be read.
    fn ring_chunk(&self, p: u32, pos: u64) -> Option<Vec<RecordedEvent>> {
        let view = self.shared.views[p as usize].get()?;
        let budget = self.shared.config.max_read_bytes as usize;
        let events = view.read_from(pos, CATCH_UP_CHUNK, budget);
        if !events.is_empty() || view.lsn_range().is_some_and(|(oldest, _)| pos >= oldest) {
            Some(events)
        } else {
            None
        }
    }

    /// One chunk of partition `p`'s events from LSN `pos` on: from its ring through its view,
    /// on this shard; from its journal through its owner only when the ring no longer holds
    /// `pos` (or is empty). Empty once `pos` is past the ring's newest event.
    async fn partition_chunk(
        self: &Rc<Self>,
        p: u32,
        pos: u64,
    ) -> Result<Vec<RecordedEvent>, ApiError> {
        if let Some(events) = self.ring_chunk(p, pos) {
            return Ok(events);
        }
        let op = PartOp::ReadRange {
            from: pos,
            max: CATCH_UP_CHUNK,
        };
        match self.call(p, op).await {
            OpResult::Events(events, _) => Ok(events),
            OpResult::Err(e) => Err(e),
            other => Err(ApiError::new(
                code::PARTITION_UNAVAILABLE,
                format!("internal: unexpected partition result {other:?}"),
            )),
        }
    }

    /// Delivers pushed events to a subscription on shard `origin`.
    fn deliver_push(&self, origin: usize, conn: u64, sub: u64, events: Vec<RecordedEvent>) -> bool {
        if origin == self.id {
            return self.local_push(conn, sub, &events);
        }
        match self.senders[origin].as_ref() {
            Some(sender) => {
                self.messages_sent.increment(1);
                sender
                    .try_send(ShardMsg::Push { conn, sub, events })
                    .is_ok()
            }
            None => false,
        }
    }

    fn local_push(&self, conn: u64, sub: u64, events: &[RecordedEvent]) -> bool {
        let Some(out) = self.conns.borrow().get(&conn).cloned() else {
            return false;
        };
        if out.push(sub, events) {
            return true;
        }
        if out.subs.borrow_mut().remove(&sub).is_some() {
            out.send(
                sub,
                &Response::error(
                    code::OVERLOADED,
                    "subscription dropped: the subscriber reads too slowly; resubscribe from \
                     the last position received",
                ),
            );
        }
        false
    }

    /// Handles messages from shard `from` until the channel closes.
    pub async fn receive_loop(self: Rc<Self>, receiver: ConnectedReceiver<ShardMsg>) {
        while let Some(msg) = receiver.recv().await {
            match msg {
                ShardMsg::Call {
                    from,
                    token,
                    partition,
                    op,
                } => {
                    let shard = self.clone();
                    glommio::spawn_local(async move {
                        let result = shard.execute(partition, op).await;
                        if let Some(sender) = shard.senders[from].as_ref() {
                            shard.messages_sent.increment(1);
                            let _ = sender.send(ShardMsg::Reply { token, result }).await;
                        }
                    })
                    .detach();
                }
                ShardMsg::Reply { token, result } => {
                    if let Some(filler) = self.waiting.borrow_mut().remove(&token) {
                        filler.fill(result);
                    }
                }
                ShardMsg::Push { conn, sub, events } => {
                    // A dropped subscription is cleaned up at its partitions by the
                    // connection (unsubscribe on close) or stays inert: pushes to unknown
                    // subscriptions are discarded.
                    self.local_push(conn, sub, &events);
                }
            }
        }
    }

    /// Accepts connections until the listener fails.
    pub async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let shard = self.clone();
                    glommio::spawn_local(async move { shard.serve(stream).await }).detach();
                }
                Err(e) => {
                    if self.shared.stop.load(Ordering::Acquire) {
                        return;
                    }
                    metrics::counter!(crate::metrics::ACCEPT_FAILURES).increment(1);
                    if let Some(repeats) = self.accept_failures.occurred(std::time::Instant::now())
                    {
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
        }
    }

    async fn serve(self: Rc<Self>, stream: TcpStream) {
        let cfg = &self.shared.config;
        let count = self.shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(crate::metrics::CONNECTIONS).set(count as f64);
        let peer = stream.peer_addr().ok();
        // The address this client reached us at: HELLO advertises shard ports on it when
        // the listener is bound to a wildcard address.
        let local_ip = stream.local_addr().ok().map(|a| a.ip());
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = futures_lite::io::split(stream);
        // Pipelined requests arrive many to a segment: one recv fills the buffer with
        // several frames instead of two reads per frame.
        let mut rd = futures_lite::io::BufReader::with_capacity(64 * 1024, rd);
        if count > cfg.max_connections as usize {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            let mut frame = Vec::new();
            encode_response(
                &mut frame,
                0,
                0,
                &Response::error(
                    code::OVERLOADED,
                    format!(
                        "too many connections (max_connections = {})",
                        cfg.max_connections
                    ),
                ),
            );
            let _ = wr.write_all(&frame).await;
            let _ = wr.close().await;
            return;
        }
        let conn_id = self.next_conn.get();
        self.next_conn.set(conn_id + 1);
        let out = Rc::new(ConnOut {
            buf: RefCell::new(Vec::with_capacity(4096)),
            waker: RefCell::new(None),
            room_waker: RefCell::new(None),
            catch_up_wakers: RefCell::new(Vec::new()),
            closed: Cell::new(false),
            limit: cfg.connection_buffer_bytes as usize,
            subs: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
            version: Cell::new(PROTOCOL_VERSION),
            stop_waker: RefCell::new(None),
        });
        self.conns.borrow_mut().insert(conn_id, out.clone());
        let writer = {
            let out = out.clone();
            glommio::spawn_local(async move {
                let mut pending = Vec::new();
                loop {
                    std::future::poll_fn(|cx| {
                        if !out.buf.borrow().is_empty() || out.closed.get() {
                            std::task::Poll::Ready(())
                        } else {
                            *out.waker.borrow_mut() = Some(cx.waker().clone());
                            std::task::Poll::Pending
                        }
                    })
                    .await;
                    std::mem::swap(&mut pending, &mut *out.buf.borrow_mut());
                    out.wake_reader();
                    if pending.is_empty() {
                        break; // closed and drained
                    }
                    if wr.write_all(&pending).await.is_err() || wr.flush().await.is_err() {
                        out.closed.set(true);
                        out.wake_reader();
                        break;
                    }
                    pending.clear();
                }
                let _ = wr.close().await;
            })
        };
        let permits = Rc::new(glommio::sync::Semaphore::new(u64::from(
            cfg.max_in_flight_per_connection,
        )));
        let mut hello_done = false;
        let frame_timeout = Duration::from_millis(u64::from(cfg.frame_timeout_ms));
        let heavy_slots =
            (u64::from(cfg.connection_buffer_bytes) / u64::from(cfg.max_read_bytes)).max(1);
        let heavy = Rc::new(glommio::sync::Semaphore::new(heavy_slots));
        let hello_deadline =
            std::time::Instant::now() + Duration::from_millis(u64::from(cfg.hello_timeout_ms));
        let reason = loop {
            // A client that does not read its replies is not read either: the outbound
            // buffer stays near `connection_buffer_bytes` instead of growing without bound.
            out.wait_for_room().await;
            // Between frames a connection may idle as long as it likes (until a server stop).
            if out.stopping.get() {
                break "the server is stopping".to_string();
            }
            let result = if hello_done {
                next_frame(&mut rd, cfg.max_frame_bytes, frame_timeout, cfg, &out).await
            } else {
                // Until HELLO is accepted: a frame no larger than the largest HELLO, and the
                // whole of it by `hello_timeout_ms` after the accept.
                let left = hello_deadline.saturating_duration_since(std::time::Instant::now());
                let max = cfg.max_frame_bytes.min(HELLO_FRAME_BYTES_MAX);
                let next = next_frame(&mut rd, max, frame_timeout, cfg, &out);
                match glommio::timer::timeout(left, async { Ok(next.await) }).await {
                    Ok(r) => r,
                    Err(_) => Err(FrameReadError::Reply(
                        0,
                        code::NOT_AUTHENTICATED,
                        format!(
                            "no HELLO within {} ms of connecting (hello_timeout_ms); the first \
                             request on a connection must be HELLO",
                            cfg.hello_timeout_ms
                        ),
                    )),
                }
            };
            let (header, request) = match result {
                Ok(got) => got,
                Err(FrameReadError::Closed(reason)) => break reason,
                Err(FrameReadError::Reply(request_id, code, msg)) => {
                    out.send(request_id, &Response::error(code, msg.clone()));
                    break msg;
                }
            };
            if !hello_done {
                match request {
                    Request::Hello {
                        protocol_version,
                        auth_token,
                        ..
                    } => {
                        if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&protocol_version) {
                            out.send(
                                header.request_id,
                                &Response::error(
                                    code::UNSUPPORTED_VERSION,
                                    format!(
                                        "protocol version {protocol_version} is not supported; \
                                         this server speaks {PROTOCOL_VERSION_MIN} to \
                                         {PROTOCOL_VERSION}"
                                    ),
                                ),
                            );
                            break "unsupported protocol version".into();
                        }
                        out.version.set(protocol_version);
                        if !cfg.auth_token.is_empty()
                            && !token_matches(&auth_token, &cfg.auth_token)
                        {
                            out.send(
                                header.request_id,
                                &Response::error(code::NOT_AUTHENTICATED, "wrong auth token"),
                            );
                            break "wrong auth token".into();
                        }
                        hello_done = true;
                        out.send(
                            header.request_id,
                            &Response::Hello {
                                protocol_version,
                                server_version: env!("CARGO_PKG_VERSION").into(),
                                partition_addresses: self.partition_addresses(local_ip),
                            },
                        );
                        continue;
                    }
                    _ => {
                        out.send(
                            header.request_id,
                            &Response::error(
                                code::NOT_AUTHENTICATED,
                                "the first request on a connection must be HELLO",
                            ),
                        );
                        break "request before HELLO".into();
                    }
                }
            }
            let Ok(permit) = permits.acquire_static_permit(1).await else {
                break "permits closed".into();
            };
            // Requests with large replies also take room from `heavy`, so the replies being
            // built at once add at most about `connection_buffer_bytes` (READ) or one
            // AGGREGATE reply to what waits in the outbound buffer.
            let weight = match request {
                Request::Read { .. } => 1,
                Request::Aggregate { .. } => heavy_slots,
                _ => 0,
            };
            let heavy_permit = if weight > 0 {
                match heavy.acquire_static_permit(weight).await {
                    Ok(p) => Some(p),
                    Err(_) => break "permits closed".into(),
                }
            } else {
                None
            };
            let shard = self.clone();
            let out2 = out.clone();
            glommio::spawn_local(async move {
                shard
                    .handle(&out2, conn_id, header.request_id, request)
                    .await;
                drop(heavy_permit);
                drop(permit);
            })
            .detach();
        };
        tracing::debug!(?peer, %reason, "connection closing");
        if self.shared.stop.load(Ordering::Acquire) {
            // A server stop: the requests this connection read get their replies before the
            // writer sends what is queued and closes.
            let _ = permits
                .acquire_permit(u64::from(cfg.max_in_flight_per_connection))
                .await;
        }
        out.closed.set(true);
        if let Some(w) = out.waker.borrow_mut().take() {
            w.wake();
        }
        writer.await;
        if out.stopping.get() {
            // The replies are sent and the write side shut. Read what the client still sends
            // until it closes (two seconds at most): closing a socket with unread input resets
            // the connection, which can destroy replies the client has not read yet.
            let drain = async {
                let mut sink = [0u8; 4096];
                while let Ok(n) = rd.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                Ok(())
            };
            let _ = glommio::timer::timeout(Duration::from_secs(2), drain).await;
        }
        // Drop the connection's subscriptions at their partitions.
        let subs: Vec<(u64, Vec<u32>)> = out.subs.borrow_mut().drain().collect();
        for (sub, parts) in subs {
            for p in parts {
                let _ = self
                    .call(
                        p,
                        PartOp::Unsubscribe {
                            origin: self.id,
                            conn: conn_id,
                            sub,
                        },
                    )
                    .await;
            }
        }
        self.conns.borrow_mut().remove(&conn_id);
        let left = self.shared.connections.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(crate::metrics::CONNECTIONS).set(left as f64);
    }

    async fn handle(self: &Rc<Self>, out: &Rc<ConnOut>, conn: u64, request_id: u64, req: Request) {
        let partitions = self.shared.partitions;
        let resp = match req {
            // The server is stopping: nothing new is started.
            _ if self.shared.stop.load(Ordering::Acquire) => Response::error(
                code::SHUTTING_DOWN,
                "the server is shutting down; retry once it is back",
            ),
            Request::Ping => Response::Pong,
            Request::Hello { .. } => {
                Response::error(code::INVALID_ARGUMENT, "HELLO was already sent")
            }
            Request::Append {
                stream,
                expected_version,
                events,
            } => {
                let p = partition_of(&stream, partitions);
                let op = PartOp::Append {
                    stream,
                    expected_version,
                    events,
                };
                match self.call(p, op).await {
                    OpResult::Appended(a) => Response::Appended {
                        first_version: a.first_version,
                        last_version: a.last_version,
                        partition: a.partition,
                        lsn: a.lsn,
                    },
                    OpResult::Err(e) => error_response(e),
                    other => unexpected(other),
                }
            }
            Request::Read {
                stream,
                from_version,
                max_count,
                direction,
            } => {
                let p = partition_of(&stream, partitions);
                let op = PartOp::Read {
                    stream,
                    from: from_version,
                    max: max_count,
                    direction,
                };
                match self.call(p, op).await {
                    OpResult::Events(events, end_of_stream) => Response::Events {
                        events,
                        end_of_stream,
                    },
                    OpResult::Err(e) => error_response(e),
                    other => unexpected(other),
                }
            }
            Request::StreamInfo { stream } => {
                let p = partition_of(&stream, partitions);
                match self.call(p, PartOp::Info { stream }).await {
                    OpResult::Info(i) => Response::StreamInfo {
                        next_version: i.next_version,
                        first_lsn: i.first_lsn,
                        last_lsn: i.last_lsn,
                    },
                    OpResult::Err(e) => error_response(e),
                    other => unexpected(other),
                }
            }
            Request::Subscribe {
                target,
                name,
                from,
                type_prefix,
                positions,
            } => {
                let sub = SubscribeRequest {
                    target,
                    name,
                    from,
                    type_prefix,
                    positions,
                };
                self.subscribe(out, conn, request_id, sub).await;
                return;
            }
            Request::Unsubscribe { subscription_id } => {
                let parts = out.subs.borrow_mut().remove(&subscription_id);
                match parts {
                    None => Response::error(
                        code::INVALID_ARGUMENT,
                        format!("no subscription with request id {subscription_id}"),
                    ),
                    Some(parts) => {
                        for p in parts {
                            let op = PartOp::Unsubscribe {
                                origin: self.id,
                                conn,
                                sub: subscription_id,
                            };
                            let _ = self.call(p, op).await;
                        }
                        Response::Subscribed
                    }
                }
            }
            Request::Stats => self.stats().await,
            Request::Aggregate {
                stream,
                type_prefix,
                from_ns,
                to_ns,
                bucket_ns,
            } => {
                self.aggregate(stream, type_prefix, from_ns, to_ns, bucket_ns)
                    .await
            }
            Request::Execute { model, command } => {
                self.model_request(&model, &command, false).await
            }
            Request::Query { model, query } => self.model_request(&model, &query, true).await,
        };
        if let Response::Error { code, .. } = &resp {
            metrics::counter!(crate::metrics::ERRORS_TOTAL, "code" => code.to_string())
                .increment(1);
        }
        out.send(request_id, &resp);
    }

    /// Aggregates over one stream's partition, or every partition for stream "".
    async fn aggregate(
        self: &Rc<Self>,
        stream: String,
        type_prefix: String,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    ) -> Response {
        let parts: Vec<u32> = if stream.is_empty() {
            (0..self.shared.partitions).collect()
        } else {
            vec![partition_of(&stream, self.shared.partitions)]
        };
        let mut merged: Option<Vec<crate::aggregate::Bucket>> = None;
        for p in parts {
            // Through the partition's view, on this shard; through its owner only while the
            // owner is still starting (no view yet).
            let result = match self.shared.views[p as usize].get() {
                Some(view) => {
                    match view.aggregate(&stream, &type_prefix, from_ns, to_ns, bucket_ns) {
                        Ok(b) => OpResult::Buckets(b),
                        Err(e) => OpResult::Err(e.into()),
                    }
                }
                None => {
                    let op = PartOp::Aggregate {
                        stream: stream.clone(),
                        type_prefix: type_prefix.clone(),
                        from_ns,
                        to_ns,
                        bucket_ns,
                    };
                    self.call(p, op).await
                }
            };
            match result {
                OpResult::Buckets(b) => match merged.as_mut() {
                    None => merged = Some(b),
                    Some(m) => {
                        for (x, y) in m.iter_mut().zip(&b) {
                            x.merge(y);
                        }
                    }
                },
                OpResult::Err(e) => return error_response(e),
                other => return unexpected(other),
            }
        }
        Response::Aggregated {
            buckets: merged
                .unwrap_or_default()
                .into_iter()
                .map(|b| protocol::Bucket {
                    start_ns: b.start_ns,
                    count: b.count,
                    sum: b.sum,
                    min: b.min,
                    max: b.max,
                })
                .collect(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn subscribe(
        self: &Rc<Self>,
        out: &Rc<ConnOut>,
        conn: u64,
        request_id: u64,
        sub: SubscribeRequest,
    ) {
        let SubscribeRequest {
            target,
            name,
            from,
            type_prefix,
            positions,
        } = sub;
        let cfg = &self.shared.config;
        if out.subs.borrow().len() >= cfg.max_subscriptions_per_connection as usize {
            out.send(
                request_id,
                &Response::error(
                    code::OVERLOADED,
                    format!(
                        "too many subscriptions on this connection (max {})",
                        cfg.max_subscriptions_per_connection
                    ),
                ),
            );
            return;
        }
        let parts: Vec<u32> = match target {
            SubscribeTarget::Stream => vec![partition_of(&name, self.shared.partitions)],
            SubscribeTarget::Partition => match name.parse::<u32>() {
                Ok(p) if p < self.shared.partitions => vec![p],
                _ => {
                    out.send(
                        request_id,
                        &Response::error(
                            code::INVALID_ARGUMENT,
                            format!("{name:?} is not a partition number"),
                        ),
                    );
                    return;
                }
            },
            SubscribeTarget::All => (0..self.shared.partitions).collect(),
            SubscribeTarget::Model if name == "kv" => (0..self.shared.partitions).collect(),
            // A user's model runs on partition 0's shard.
            SubscribeTarget::Model
                if self.shared.served_model.as_deref() == Some(name.as_str()) =>
            {
                vec![0]
            }
            SubscribeTarget::Model => {
                out.send(
                    request_id,
                    &Response::error(
                        code::INVALID_ARGUMENT,
                        format!("no model named {name:?} is served"),
                    ),
                );
                return;
            }
        };
        if !positions.is_empty() && positions.len() != parts.len() {
            out.send(
                request_id,
                &Response::error(
                    code::INVALID_ARGUMENT,
                    format!(
                        "the checkpoint holds {} positions but the subscription spans {} \
                         partitions (one position per partition, in partition order)",
                        positions.len(),
                        parts.len()
                    ),
                ),
            );
            return;
        }
        if out.subs.borrow().contains_key(&request_id) {
            out.send(
                request_id,
                &Response::error(
                    code::INVALID_ARGUMENT,
                    "request id already used by a subscription",
                ),
            );
            return;
        }
        out.subs.borrow_mut().insert(request_id, parts.clone());
        out.send(request_id, &Response::Subscribed);
        for (i, p) in parts.into_iter().enumerate() {
            let mut from = positions.get(i).copied().unwrap_or(from);
            if matches!(target, SubscribeTarget::Partition | SubscribeTarget::All) {
                // The catch-up runs here, through the partition's view (and its owner only for
                // what the ring no longer holds); the owner then registers the live sink from
                // where it ended.
                let sink = SubSink {
                    shard: Rc::downgrade(self),
                    origin: self.id,
                    conn,
                    sub: request_id,
                    stream: None,
                    type_prefix: type_prefix.clone(),
                };
                match self.catch_up_partition(p, out, &sink, from).await {
                    Ok(Some(reached)) => from = reached,
                    Ok(None) => return, // the subscriber went away
                    Err(e) => {
                        if out.subs.borrow_mut().remove(&request_id).is_some() {
                            out.send(request_id, &error_response(e));
                        }
                        return;
                    }
                }
            }
            let op = PartOp::Subscribe {
                origin: self.id,
                conn,
                sub: request_id,
                target,
                stream: name.clone(),
                from,
                type_prefix: type_prefix.clone(),
            };
            if let OpResult::Err(e) = self.call(p, op).await {
                if out.subs.borrow_mut().remove(&request_id).is_some() {
                    out.send(request_id, &error_response(e));
                }
                return;
            }
        }
    }

    async fn stats(self: &Rc<Self>) -> Response {
        // Read before this request's own calls to other shards.
        let cross_shard_calls = self.shared.cross_shard_calls.load(Ordering::Relaxed);
        let mut parts = Vec::new();
        for p in 0..self.shared.partitions {
            match self.call(p, PartOp::Stats).await {
                OpResult::Stats(s) => parts.push(s),
                OpResult::Err(e) => return error_response(e),
                other => return unexpected(other),
            }
        }
        let json = serde_json::json!({
            "server_version": env!("CARGO_PKG_VERSION"),
            "shards": self.shared.shards,
            "partitions": parts,
            "connections": self.shared.connections.load(Ordering::Acquire),
            "cross_shard_calls": cross_shard_calls,
        });
        Response::Stats {
            json: json.to_string(),
        }
    }
}

/// `addr` as a client can reach it: a wildcard host (0.0.0.0, ::) becomes `local_ip`, the
/// address the client connected to.
fn advertised(mut addr: SocketAddr, local_ip: Option<std::net::IpAddr>) -> String {
    if let Some(ip) = local_ip.filter(|_| addr.ip().is_unspecified()) {
        addr.set_ip(ip);
    }
    addr.to_string()
}

fn unexpected(r: OpResult) -> Response {
    Response::error(
        code::PARTITION_UNAVAILABLE,
        format!("internal: unexpected partition result {r:?}"),
    )
}

#[cfg(test)]
mod token_tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_when_equal_in_length_and_every_byte() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cres", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3crett", "s3cret"));
        assert!(!token_matches("", "s3cret"));
        assert!(token_matches("", ""));
    }
}

#[cfg(test)]
mod advertised_tests {
    use super::advertised;

    #[test]
    fn wildcard_hosts_become_the_address_the_client_reached() {
        let local = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            advertised("0.0.0.0:7071".parse().unwrap(), local),
            "10.1.2.3:7071"
        );
        assert_eq!(
            advertised("[::]:7071".parse().unwrap(), local),
            "10.1.2.3:7071"
        );
        assert_eq!(
            advertised("127.0.0.1:7071".parse().unwrap(), local),
            "127.0.0.1:7071"
        );
        assert_eq!(
            advertised("0.0.0.0:7071".parse().unwrap(), None),
            "0.0.0.0:7071"
        );
    }
}
