//! One shard: a glommio executor that owns some partitions, and the calls that reach them.
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
//!
//! What does not cross: reads of a partition's ring (AGGREGATE, the ring part of a
//! subscription's catch-up) go through the partition's stable view on the shard that received
//! the request ([`Shared::views`]).
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use super::conn::ConnOut;
use super::slot::{slot, Filler};
use super::subscriptions::SubSink;
use super::ApiError;
use crate::config::Config;
use crate::engine::kv::KvModel;
use crate::engine::Engine;
use crate::protocol::{code, Direction, Event, RecordedEvent, Response, SubscribeTarget};
use crate::protocol::{AppendResult, StreamId, StreamInfo};
use crate::stream::{IdSpec, StreamError};
use crate::stream::{Partition, PartitionStats, PublishSink};

/// An operation on one partition.
#[derive(Debug)]
pub enum PartOp {
    /// An append (native APPEND, and XADD without trimming outside MULTI): its first event's
    /// stream ID as `id` asks.
    Append {
        stream: String,
        expected_version: i64,
        events: Vec<Event>,
        id: IdSpec,
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
    /// One partition's groups of an aggregation, read on the owner (when views are off).
    Aggregate(Box<crate::aggregate::groups::Plan>),
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
    /// DELETE_STREAM or TRIM: the change, once durable (a stream with no events: error 11).
    Change {
        stream: String,
        request: crate::stream::ChangeRequest,
    },
    /// A RESP stream command's part on the stream's partition.
    Resp(super::resp_streams::RespOp),
    /// A RESP keyspace command's part on one partition (KEYS, SCAN, EXISTS, DBSIZE, …).
    RespKeys(super::resp_keys::KeysOp),
    /// EV.READ on the stream's partition (answered as `RespOutcome::Entries`).
    EvRead(super::resp_ev::EvRead),
}

#[derive(Debug)]
pub enum OpResult {
    Json(serde_json::Value),
    Blob(Vec<u8>),
    /// An append's result and its first event's stream ID ([`Partition::append_with_id`]),
    /// or the stream layer's refusal, for each protocol to put in its own words.
    Appended(Result<(AppendResult, Option<StreamId>), StreamError>),
    Events(Vec<RecordedEvent>, bool),
    Info(StreamInfo),
    Groups(crate::protocol::Groups),
    Resp(super::resp_streams::RespOutcome),
    RespKeys(super::resp_keys::KeysOutcome),
    Stats(PartitionStats),
    /// Live events a DELETE_STREAM or TRIM deleted.
    Deleted(u64),
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
    /// The RESP port, as shard 0 resolved it (`resp_listen`; `None` when off).
    pub resp_addr: Option<SocketAddr>,
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
    /// What the RESP port's INFO and CONFIG read and set over the whole server.
    pub resp: super::resp_info::RespShared,
}

impl Shared {
    /// The state every shard shares, once shard 0 listens on `client_addr`.
    pub(super) fn new(
        plan: &super::Plan,
        listening: &super::Listening,
        served_model: Option<String>,
    ) -> Shared {
        Shared {
            config: plan.config.clone(),
            partitions: plan.manifest.partitions,
            shards: plan.shards,
            client_addr: listening.client,
            resp_addr: listening.resp,
            shard_addrs: std::sync::OnceLock::new(),
            cross_shard_calls: std::sync::atomic::AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            served_model,
            views: (0..plan.manifest.partitions)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            resp: super::resp_info::RespShared::new(plan.shards),
        }
    }
}

/// (origin shard, connection, subscription, partition).
pub(super) type SinkKey = (usize, u64, u64, u32);

/// A live model subscription: its sink id at the engine, and the engine.
pub(super) type ModelSink = (u64, Rc<dyn super::served_model::ModelEngine>);

/// One shard's context.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub partitions: HashMap<u32, Rc<Partition>>,
    pub(super) senders: Vec<Option<ConnectedSender<ShardMsg>>>,
    pub(super) next_token: Cell<u64>,
    pub(super) waiting: RefCell<HashMap<u64, Filler<OpResult>>>,
    pub(super) next_conn: Cell<u64>,
    pub(super) conns: RefCell<HashMap<u64, Rc<ConnOut>>>,
    /// Sinks registered at local partitions for subscriptions: (origin, conn, sub, partition).
    pub(super) sinks: RefCell<HashMap<SinkKey, Rc<dyn PublishSink>>>,
    /// The key-value engine of each local partition.
    pub kv: HashMap<u32, Engine<KvModel>>,
    /// Live sinks of model subscriptions at the local engines: key → (sink id, engine).
    pub(super) model_sinks: RefCell<HashMap<SinkKey, ModelSink>>,
    /// The user's model, on the shard that owns partition 0.
    pub served: Option<(String, Rc<dyn super::served_model::ModelService>)>,
    /// The log of failed accepts (out of file descriptors repeats them at every accept).
    pub(super) accept_failures: crate::log_limit::LogLimit,
    /// Messages this shard sent to others (calls, replies, pushes).
    pub(super) messages_sent: metrics::Counter,
    /// The shard's network ring: its client sockets are accepted, read and written there.
    pub(super) net: Rc<crate::net::NetRing>,
    /// Appends placed as they were read, waiting for their frames ([`super::placed`]).
    pub(super) placed: super::placed::PlacedQueues,
}

pub(super) fn unavailable(what: &str) -> ApiError {
    ApiError::new(code::PARTITION_UNAVAILABLE, what.to_string())
}

pub(super) fn error_response(e: ApiError) -> Response {
    Response::Error {
        code: e.code,
        message: e.message,
        current_version: e.current_version,
    }
}

pub(super) fn unexpected(r: OpResult) -> Response {
    Response::error(
        code::PARTITION_UNAVAILABLE,
        format!("internal: unexpected partition result {r:?}"),
    )
}

impl Shard {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        partitions: HashMap<u32, Rc<Partition>>,
        kv: HashMap<u32, Engine<KvModel>>,
        served: Option<(String, Rc<dyn super::served_model::ModelService>)>,
        senders: Vec<Option<ConnectedSender<ShardMsg>>>,
        net: Rc<crate::net::NetRing>,
    ) -> Rc<Shard> {
        Rc::new(Shard {
            net,
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
            placed: Default::default(),
        })
    }

    /// Every model engine of this shard with its partition: each owned partition's
    /// key-value engine, and the served model (partition 0) if it runs here.
    pub fn models(&self) -> Vec<(u32, Rc<dyn super::served_model::ModelEngine>)> {
        let mut models: Vec<(u32, Rc<dyn super::served_model::ModelEngine>)> = self
            .kv
            .iter()
            .map(|(&id, e)| {
                (
                    id,
                    Rc::new(e.clone()) as Rc<dyn super::served_model::ModelEngine>,
                )
            })
            .collect();
        if let Some((_, service)) = &self.served {
            models.push((0, service.engine()));
        }
        models
    }

    pub(super) fn owner_of(&self, partition: u32) -> usize {
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
            return self.run_op(partition, op).await;
        }
        // Boxed: the local call's future stays small (see `run_op`).
        Box::pin(self.call_remote(owner, partition, op)).await
    }

    /// Sends `op` to `partition`'s owning shard `owner` and waits for its reply.
    async fn call_remote(self: &Rc<Self>, owner: usize, partition: u32, op: PartOp) -> OpResult {
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

    /// Runs `op` on `partition`, which this shard owns. One arm per operation: the dispatch
    /// table reads best in one place, and each arm that does more than a call and a match of
    /// its result has its own function below. The rare operations' futures are boxed: an
    /// async fn's future is as large as its largest arm's, and every request's task is
    /// allocated and moved at that size (APPEND's stays inline).
    pub(super) async fn run_op(self: &Rc<Self>, partition: u32, op: PartOp) -> OpResult {
        let Some(p) = self.partitions.get(&partition).cloned() else {
            return OpResult::Err(unavailable("partition not on this shard"));
        };
        match op {
            op @ (PartOp::KvExecute(_) | PartOp::KvGet { .. } | PartOp::KvList { .. }) => {
                Box::pin(self.kv_op(partition, op)).await
            }
            PartOp::Model { blob, is_query } => {
                Box::pin(self.run_served_model(blob, is_query)).await
            }
            PartOp::Resp(op) => Box::pin(super::resp_streams::run_op(&p, op)).await,
            PartOp::Change { stream, request } => {
                Box::pin(super::native::change_op(&p, stream, request)).await
            }
            PartOp::RespKeys(op) => super::resp_keys::run_op(&p, op),
            PartOp::EvRead(op) => Box::pin(super::resp_ev::run_read(&p, op)).await,
            PartOp::Append {
                stream,
                expected_version,
                events,
                id,
            } => OpResult::Appended(p.append_with_id(stream, expected_version, events, id).await),
            PartOp::Read {
                stream,
                from,
                max,
                direction,
            } => match Box::pin(p.read(&stream, from, max, direction)).await {
                Ok((events, end)) => OpResult::Events(events, end),
                Err(e) => OpResult::Err(e.into()),
            },
            PartOp::ReadRange { from, max } => {
                match Box::pin(p.read_lsn_range(from, max, p.max_read_bytes())).await {
                    Ok(events) => OpResult::Events(events, false),
                    Err(e) => OpResult::Err(e.into()),
                }
            }
            PartOp::Info { stream } => match p.stream_info(&stream) {
                Ok(i) => OpResult::Info(i),
                Err(e) => OpResult::Err(e.into()),
            },
            PartOp::Stats => OpResult::Stats(p.stats()),
            PartOp::Aggregate(plan) => match p.aggregate(&plan) {
                Ok(g) => OpResult::Groups(g),
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
                Box::pin(self.add_subscriber(partition, &p, sink, target, stream, from)).await
            }
            PartOp::Unsubscribe { origin, conn, sub } => {
                self.remove_subscriber(&p, (origin, conn, sub, partition));
                OpResult::Done
            }
        }
    }

    /// An EXECUTE (or, `is_query`, a QUERY) of the served model, which runs on this shard.
    async fn run_served_model(&self, blob: Vec<u8>, is_query: bool) -> OpResult {
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

    /// Adds subscriber `sink` at partition `p` (`partition`), from `from`: a model's
    /// subscription at the model's engine; any other catches up from the journal, then its
    /// sink joins the partition's live sinks.
    async fn add_subscriber(
        self: &Rc<Self>,
        partition: u32,
        p: &Rc<Partition>,
        sink: Rc<SubSink>,
        target: SubscribeTarget,
        stream: String,
        from: u64,
    ) -> OpResult {
        if target == SubscribeTarget::Model {
            let Some(service) = self.model_engine(partition, &stream) else {
                return OpResult::Err(unavailable("the model is not on this shard"));
            };
            return self
                .subscribe_model(partition, service, sink, from, stream)
                .await;
        }
        let key = (sink.origin, sink.conn, sink.sub, partition);
        match self.catch_up(p, &sink, target, &stream, from).await {
            Ok(true) => {
                let sink: Rc<dyn PublishSink> = sink;
                p.add_sink(sink.clone());
                self.sinks.borrow_mut().insert(key, sink);
                OpResult::Done
            }
            Ok(false) => OpResult::Done,
            Err(e) => OpResult::Err(e),
        }
    }

    /// The engine of model `name` at `partition` on this shard: the key-value model ("kv")
    /// or the served model.
    fn model_engine(
        &self,
        partition: u32,
        name: &str,
    ) -> Option<Rc<dyn super::served_model::ModelEngine>> {
        if name == "kv" {
            self.kv
                .get(&partition)
                .map(|e| Rc::new(e.clone()) as Rc<dyn super::served_model::ModelEngine>)
        } else {
            self.served
                .as_ref()
                .filter(|(served, _)| *served == name)
                .map(|(_, s)| s.engine())
        }
    }

    /// Removes a subscriber's sinks at partition `p`: its live sink, or its sink at a
    /// model's engine.
    fn remove_subscriber(&self, p: &Partition, key: SinkKey) {
        if let Some(sink) = self.sinks.borrow_mut().remove(&key) {
            p.remove_sink(&sink);
        }
        if let Some((id, service)) = self.model_sinks.borrow_mut().remove(&key) {
            service.remove_sink(id);
        }
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
                        let result = shard.run_op(partition, op).await;
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
}
