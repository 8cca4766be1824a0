//! Event-sourced models (the Memstate model): define a model, its commands and queries in
//! code; the engine journals every command durably, applies commands one at a time, rebuilds
//! the model at start-up from the newest snapshot plus the journal after it, and
//! materializes the model as of any past LSN.
//!
//! ## The path of a command
//!
//! `execute(cmd)` encodes the command with the store's codec and appends it to the engine's
//! journal as one command record (type = the command's `NAME`, timestamp = now). Once the
//! record is durable, the command is queued under its LSN; commands are applied strictly in
//! LSN order, one at a time, each with a [`Context`] holding the journaled timestamp and a
//! random generator seeded by the LSN — so replay, which decodes the same records and runs the
//! same code, reproduces the same model. The caller gets the command's typed result.
//!
//! ## Invariants
//!
//! - **Durable before applied.** A command is applied, and its result returned, only after its
//!   record is durable; queries never see a command that could be lost at a crash.
//! - **Check, then mutate.** A command that returns an error must not have changed the model:
//!   validate first, mutate after. (Failed commands are journaled too; replay fails them the
//!   same way, without effect.)
//! - **A panic stops the engine.** A command that panics may have left the model half
//!   changed, so the engine stops: every later `execute` and `query` returns
//!   [`EngineError::Stopped`] naming the command and LSN. A restart replays the journal and
//!   stops at the same command, saying so ([`EngineError::ReplayAtOpen`], the
//!   [`ReplayError`] as its `source()`), until the model code is fixed.
//! - **Snapshots are checked like a partition's.** The newest usable model snapshot is
//!   loaded, else the next older one ([`crate::snapshot::load_newest_usable`]): its kind,
//!   codec, store id and partition (the journal's) must be the engine's and its header's LSN
//!   its file name's, and the model must decode.
//! - **One codec per store.** The codec (JSON or binary) is written to `CODEC` in the engine's
//!   directory at creation; opening with the other codec is refused.
//! - **Domain events** raised by a command ([`Context::raise`]) are delivered to subscribers
//!   after the command is applied, in LSN order; they are not journaled separately (replay
//!   re-derives them and does not deliver them again).

pub mod kv;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Waker;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::journal::device::Storage;
use crate::journal::format::{RecordIter, RecordRef, RECORD_KIND_COMMAND};
use crate::journal::{DiskStorage, Journal, JournalConfig, StoreId};

/// A model: the state commands change and queries read.
pub trait Model: Default + Serialize + DeserializeOwned + 'static {}

/// A journaled, deterministic change of the model.
pub trait Command<M: Model>: Serialize + DeserializeOwned + 'static {
    /// The name journaled with the command; replay finds the command type by it. Never
    /// rename a command that is in a journal.
    const NAME: &'static str;
    type Output: 'static;
    /// Validates, then mutates. An `Err` must leave the model unchanged.
    fn execute(&self, model: &mut M, ctx: &mut Context) -> Result<Self::Output, DomainError>;
}

/// A read-only question to the model.
pub trait Query<M: Model> {
    type Output;
    fn run(&self, model: &M) -> Self::Output;
}

/// A command's refusal: the model is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

impl DomainError {
    pub fn new(msg: impl Into<String>) -> Self {
        DomainError(msg.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("command refused: {0}")]
    Domain(DomainError),
    /// A command panicked: the engine serves nothing more until restart.
    #[error("engine stopped: {0}")]
    Stopped(String),
    /// Recovery could not replay a journaled command: the engine does not open.
    #[error("engine stopped: replay of {}: {source}", dir.display())]
    ReplayAtOpen {
        dir: PathBuf,
        #[source]
        source: ReplayError,
    },
    /// Time travel or a subscription's catch-up could not replay a journaled command.
    #[error("engine stopped: {0}")]
    Replay(#[source] ReplayError),
    #[error(transparent)]
    Journal(#[from] crate::error::JournalError),
    /// The engine's files (directory, `CODEC`, snapshots): what could not be done, and why.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A command or the model that the store's codec cannot encode.
    #[error("{what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: CodecError,
    },
    #[error("{0}")]
    Store(String),
}

/// Why a value could not be encoded or decoded with a store's [`Codec`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Binary(#[from] postcard::Error),
}

/// Why a journaled command could not be applied again (recovery, time travel, tools).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("cannot decode command {name}: {source}")]
    Decode {
        name: &'static str,
        #[source]
        source: CodecError,
    },
    #[error("command {name:?} at LSN {lsn} is not registered with the engine")]
    Unregistered { name: String, lsn: u64 },
    #[error("command {name} at LSN {lsn} panicked: {message}")]
    Panicked {
        name: String,
        lsn: u64,
        message: String,
    },
}

/// Why a model snapshot cannot be used (the engine then tries the next older one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelSnapshotError {
    /// The file itself: unreadable, damaged, another owner's, or named for another LSN.
    #[error(transparent)]
    Unusable(#[from] crate::snapshot::Unusable),
    #[error("undecodable model image: {0}")]
    Image(#[source] postcard::Error),
    #[error("the model does not decode: {0}")]
    Model(#[source] CodecError),
}

/// How commands and model snapshots are encoded in a store. `Binary` is postcard: compact,
/// but it cannot decode serde's internally tagged or untagged enums (`#[serde(tag = …)]`,
/// `#[serde(untagged)]`) — an engine whose commands use them must use `Json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Json,
    Binary,
}

impl Codec {
    /// The name written to a store's `CODEC` file.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Binary => "binary",
        }
    }
    /// The codec a `CODEC` file names (surrounding white space ignored); `None` for any
    /// other text.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name.trim() {
            "json" => Some(Codec::Json),
            "binary" => Some(Codec::Binary),
            _ => None,
        }
    }
    /// Fails for values the codec cannot represent (e.g. JSON maps with non-string keys).
    fn encode<T: Serialize>(self, v: &T) -> Result<Vec<u8>, CodecError> {
        Ok(match self {
            Codec::Json => serde_json::to_vec(v)?,
            Codec::Binary => postcard::to_allocvec(v)?,
        })
    }
    /// Decodes a command or a model as the store does.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        Ok(match self {
            Codec::Json => serde_json::from_slice(bytes)?,
            Codec::Binary => postcard::from_bytes(bytes)?,
        })
    }
    /// The codec byte of its snapshots' headers.
    fn snapshot_codec(self) -> u8 {
        match self {
            Codec::Json => crate::snapshot::CODEC_JSON,
            Codec::Binary => crate::snapshot::CODEC_BINARY,
        }
    }
}

/// A domain event raised by a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainEvent {
    /// The LSN of the command that raised it.
    pub lsn: u64,
    /// The command's journaled time.
    pub timestamp_ns: u64,
    pub stream: String,
    pub event_type: String,
    pub data: Vec<u8>,
}

/// What a command may use besides the model: the journaled time and a deterministic random
/// generator (both identical at replay), and a way to raise domain events.
pub struct Context {
    lsn: u64,
    timestamp_ns: u64,
    rng: u64,
    events: Vec<DomainEvent>,
}

impl Context {
    fn new(lsn: u64, timestamp_ns: u64) -> Context {
        Context {
            lsn,
            timestamp_ns,
            rng: (lsn ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1,
            events: Vec::new(),
        }
    }
    /// The command's LSN.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }
    /// When the command was executed (journaled; the same at replay), ns since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.timestamp_ns
    }
    /// A pseudo-random number, the same sequence at replay.
    pub fn random_u64(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
    /// Raises a domain event, delivered to subscribers once the command is applied.
    pub fn raise(&mut self, stream: &str, event_type: &str, data: impl Into<Vec<u8>>) {
        self.events.push(DomainEvent {
            lsn: self.lsn,
            timestamp_ns: self.timestamp_ns,
            stream: stream.into(),
            event_type: event_type.into(),
            data: data.into(),
        });
    }
}

type Replay<M> = fn(Codec, &[u8], &mut M, &mut Context) -> Result<(), ReplayError>;

fn replay_one<M: Model, C: Command<M>>(
    codec: Codec,
    bytes: &[u8],
    model: &mut M,
    ctx: &mut Context,
) -> Result<(), ReplayError> {
    let cmd: C = codec.decode(bytes).map_err(|source| ReplayError::Decode {
        name: C::NAME,
        source,
    })?;
    let _ = cmd.execute(model, ctx);
    Ok(())
}

/// Applies one journaled command of type `C` to `model` outside an engine (offline tools),
/// exactly as replay does: same context (LSN, journaled time, seeded random).
pub fn replay_command<M: Model, C: Command<M>>(
    codec: Codec,
    data: &[u8],
    lsn: u64,
    timestamp_ns: u64,
    model: &mut M,
) -> Result<(), ReplayError> {
    replay_one::<M, C>(codec, data, model, &mut Context::new(lsn, timestamp_ns))
}

/// How to open an engine.
pub struct EngineBuilder<M: Model> {
    name: String,
    codec: Codec,
    commands: HashMap<&'static str, Replay<M>>,
    journal: JournalConfig,
}

impl<M: Model> EngineBuilder<M> {
    /// The journal's settings (segment size, frame cap, frames in flight).
    pub fn journal_config(mut self, f: impl FnOnce(&mut JournalConfig)) -> Self {
        f(&mut self.journal);
        self
    }
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }
    /// Registers a command type so replay can decode it.
    pub fn command<C: Command<M>>(mut self) -> Self {
        self.commands.insert(C::NAME, replay_one::<M, C>);
        self
    }

    /// Opens (recovering) the engine whose journal and snapshots live in `dir`, on glommio
    /// files. Must run inside a glommio executor.
    pub async fn open(self, dir: &Path) -> Result<Engine<M>, EngineError> {
        let storage = DiskStorage::open(dir.join("journal")).map_err(|source| EngineError::Io {
            what: format!("cannot open {}", dir.display()),
            source,
        })?;
        self.open_on(storage, dir).await
    }

    /// Opens on any journal storage; `dir` holds `CODEC` and the snapshots.
    pub async fn open_on<S: Storage + 'static>(
        self,
        storage: S,
        dir: &Path,
    ) -> Result<Engine<M, S>, EngineError> {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
        check_codec(dir, self.codec)?;
        let codec = self.codec;
        // Start from the newest usable snapshot, if any.
        let mut model = M::default();
        let mut from_lsn = 0;
        let mut resume = None;
        if let Some((m, lsn, r)) = load_model_snapshot::<M>(dir, codec, &self.journal, u64::MAX) {
            model = m;
            from_lsn = lsn;
            resume = Some(r);
        }
        let mut replay_error: Option<ReplayError> = None;
        let mut replayed = 0u64;
        let commands = &self.commands;
        let (journal, report) =
            Journal::open_resuming(storage, self.journal.clone(), resume, |info, frame| {
                if replay_error.is_some() {
                    return;
                }
                let body = &frame[crate::constants::FRAME_HEADER_BYTES
                    ..crate::constants::FRAME_HEADER_BYTES + info.meta.body_len as usize];
                for r in RecordIter::new(body).flatten() {
                    if r.lsn < from_lsn || r.record.kind != RECORD_KIND_COMMAND {
                        continue;
                    }
                    if let Err(e) = apply_recorded(commands, codec, &mut model, r.lsn, &r.record) {
                        replay_error = Some(e);
                        return;
                    }
                    replayed += 1;
                }
            })
            .await?;
        if let Some(source) = replay_error {
            return Err(EngineError::ReplayAtOpen {
                dir: dir.to_path_buf(),
                source,
            });
        }
        if report.next_lsn < from_lsn {
            return Err(EngineError::Store(format!(
                "the snapshot in {} covers LSNs below {from_lsn} but the journal ends at {}",
                dir.display(),
                report.next_lsn
            )));
        }
        tracing::info!(engine = %self.name, from_lsn, replayed, next_lsn = report.next_lsn, "engine recovered");
        Ok(Engine {
            inner: Rc::new(Inner {
                name: self.name,
                dir: dir.to_path_buf(),
                codec,
                commands: self.commands,
                journal_cfg: self.journal,
                journal,
                model: RefCell::new(model),
                applied: Cell::new(report.next_lsn),
                pending: RefCell::new(BTreeMap::new()),
                waiters: RefCell::new(Vec::new()),
                stopped: RefCell::new(None),
                subscribers: RefCell::new(Vec::new()),
                sinks: RefCell::new(Vec::new()),
                next_sink: Cell::new(0),
            }),
        })
    }
}

/// Applies one journaled command record to `model` (replay and time travel).
fn apply_recorded<M: Model>(
    commands: &HashMap<&'static str, Replay<M>>,
    codec: Codec,
    model: &mut M,
    lsn: u64,
    r: &RecordRef<'_>,
) -> Result<(), ReplayError> {
    let mut ctx = Context::new(lsn, r.timestamp_ns);
    apply_recorded_ctx(commands, codec, model, lsn, r, &mut ctx)
}

/// [`apply_recorded`] with the caller's context (to collect the domain events it raises).
fn apply_recorded_ctx<M: Model>(
    commands: &HashMap<&'static str, Replay<M>>,
    codec: Codec,
    model: &mut M,
    lsn: u64,
    r: &RecordRef<'_>,
    ctx: &mut Context,
) -> Result<(), ReplayError> {
    let name = String::from_utf8_lossy(r.event_type);
    let replay = commands
        .get(name.as_ref())
        .ok_or_else(|| ReplayError::Unregistered {
            name: name.to_string(),
            lsn,
        })?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        replay(codec, r.data, model, ctx)
    })) {
        Ok(result) => result,
        Err(p) => Err(ReplayError::Panicked {
            name: name.to_string(),
            lsn,
            message: panic_text(&p),
        }),
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn check_codec(dir: &Path, codec: Codec) -> Result<(), EngineError> {
    let path = dir.join("CODEC");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text.trim();
            if found != codec.name() {
                return Err(EngineError::Store(format!(
                    "the store in {} was created with the {found} codec; this engine is \
                     configured for {} (a store keeps its codec for life)",
                    dir.display(),
                    codec.name()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::durable::replace(&path, format!("{}\n", codec.name()).as_bytes()).map_err(
                |source| EngineError::Io {
                    what: format!("cannot write {}", path.display()),
                    source,
                },
            )
        }
        Err(source) => Err(EngineError::Io {
            what: format!("cannot read {}", path.display()),
            source,
        }),
    }
}

/// The body of a model snapshot: the model (store codec) and the journal resume point.
#[derive(Serialize, serde::Deserialize)]
struct ModelImage {
    model: Vec<u8>,
    resume: crate::journal::Resume,
}

/// A model snapshot file's contents, checked by [`read_model_snapshot`].
pub struct ModelSnapshot {
    /// The model, encoded with the store's codec.
    pub model: Vec<u8>,
    /// Where a recovery from this snapshot resumes the journal scan.
    pub resume: crate::journal::Resume,
}

/// Whose snapshots an engine loads: model snapshots of `store` in the store's codec, written
/// by the engine whose journal is `partition`'s.
pub fn model_snapshot_owner(
    store: StoreId,
    partition: u32,
    codec: Codec,
) -> crate::snapshot::Owner {
    crate::snapshot::Owner {
        kind: crate::snapshot::KIND_MODEL,
        codec: codec.snapshot_codec(),
        store_id: store,
        partition,
    }
}

/// Reads the model snapshot file `path` (named for `lsn`) and checks it as an engine does
/// before using it: the file as every snapshot is checked ([`crate::snapshot::read_checked`]:
/// header, both checksums, kind, codec, store id, partition, the LSN of the file name and the
/// header), then that the body decodes ([`model_snapshot_of`]). The model bytes are left to
/// the caller, who knows the model's type ([`Codec::decode`]).
pub fn read_model_snapshot(
    path: &Path,
    lsn: u64,
    owner: &crate::snapshot::Owner,
) -> Result<ModelSnapshot, ModelSnapshotError> {
    model_snapshot_of(&crate::snapshot::read_checked(path, lsn, owner)?)
}

/// The model image in a checked snapshot file's body.
pub fn model_snapshot_of(
    loaded: &crate::snapshot::Loaded,
) -> Result<ModelSnapshot, ModelSnapshotError> {
    let image: ModelImage =
        postcard::from_bytes(&loaded.body).map_err(ModelSnapshotError::Image)?;
    Ok(ModelSnapshot {
        model: image.model,
        resume: image.resume,
    })
}

/// The newest usable model snapshot at or below `max_lsn` (else the next older one: the
/// shared loader, [`crate::snapshot::load_newest_usable`]), decoded into the model.
fn load_model_snapshot<M: Model>(
    dir: &Path,
    codec: Codec,
    cfg: &JournalConfig,
    max_lsn: u64,
) -> Option<(M, u64, crate::journal::Resume)> {
    let owner = model_snapshot_owner(cfg.store_id, cfg.partition, codec);
    let loaded = crate::snapshot::load_newest_usable(
        dir,
        &owner,
        max_lsn,
        |loaded| -> Result<_, ModelSnapshotError> {
            let snap = model_snapshot_of(&loaded)?;
            let model: M = codec
                .decode(&snap.model)
                .map_err(ModelSnapshotError::Model)?;
            Ok((model, snap.resume))
        },
        |path, reason| tracing::warn!(snapshot = %path.display(), %reason, "model snapshot not usable; trying an older one"),
    );
    match loaded {
        Ok(found) => found.map(|((model, resume), lsn, _)| (model, lsn, resume)),
        Err(e) => {
            tracing::warn!(snapshots = %dir.display(), error = %e, "cannot list model snapshots; replaying the whole journal");
            None
        }
    }
}

struct Inner<M: Model, S: Storage + 'static> {
    name: String,
    dir: PathBuf,
    codec: Codec,
    commands: HashMap<&'static str, Replay<M>>,
    journal_cfg: JournalConfig,
    journal: Journal<S>,
    model: RefCell<M>,
    /// LSN of the next command to apply.
    applied: Cell<u64>,
    /// Durable commands waiting for their turn, by LSN.
    pending: RefCell<BTreeMap<u64, PendingApply<M>>>,
    waiters: RefCell<Vec<Waker>>,
    stopped: RefCell<Option<String>>,
    subscribers: RefCell<Vec<std::sync::mpsc::Sender<DomainEvent>>>,
    /// In-executor sinks of domain events (the server's model subscriptions), by id.
    sinks: RefCell<Vec<(u64, EventSink)>>,
    next_sink: Cell<u64>,
}

/// Receives each domain event once its command is applied; false removes it.
pub type EventSink = Rc<dyn Fn(&DomainEvent) -> bool>;

/// Where a command's result waits for its caller.
type ResultSlot<T> = Rc<RefCell<Option<Result<T, DomainError>>>>;

type PendingApply<M> = (u64, Box<dyn FnOnce(&mut M, &mut Context)>);

/// An engine running model `M` on one executor (not `Send`: it belongs to its core).
pub struct Engine<M: Model, S: Storage + 'static = DiskStorage> {
    inner: Rc<Inner<M, S>>,
}

impl<M: Model, S: Storage + 'static> Clone for Engine<M, S> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Model> Engine<M> {
    /// An engine named `name` (it names the store in logs and errors); `store_id` identifies
    /// its journal.
    pub fn builder(name: &str, store_id: StoreId) -> EngineBuilder<M> {
        EngineBuilder {
            name: name.into(),
            codec: Codec::Binary,
            commands: HashMap::new(),
            journal: JournalConfig::new(store_id, 0),
        }
    }
}

impl<M: Model, S: Storage + 'static> Engine<M, S> {
    /// Journals `cmd`, waits until it is durable, applies it in LSN order and returns its
    /// result.
    pub async fn execute<C: Command<M>>(&self, cmd: C) -> Result<C::Output, EngineError> {
        let inner = &self.inner;
        if let Some(why) = inner.stopped.borrow().clone() {
            return Err(EngineError::Stopped(why));
        }
        if !inner.commands.contains_key(C::NAME) {
            return Err(EngineError::Store(format!(
                "command {} is not registered with engine {} (EngineBuilder::command)",
                C::NAME,
                inner.name
            )));
        }
        let bytes = inner.codec.encode(&cmd).map_err(|e| EngineError::Encode {
            what: format!("command {} cannot be encoded", C::NAME),
            source: e,
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut record = RecordRef::event(inner.name.as_bytes(), C::NAME.as_bytes(), &bytes);
        record.kind = RECORD_KIND_COMMAND;
        record.timestamp_ns = now;
        let appended = inner.journal.append(&[record]).await?;
        let lsn = appended.first_lsn;
        let slot: ResultSlot<C::Output> = Rc::default();
        let out = slot.clone();
        inner.pending.borrow_mut().insert(
            lsn,
            (
                now,
                Box::new(move |model: &mut M, ctx: &mut Context| {
                    *out.borrow_mut() = Some(cmd.execute(model, ctx));
                }),
            ),
        );
        self.drain();
        std::future::poll_fn(|cx| {
            if let Some(r) = slot.borrow_mut().take() {
                return std::task::Poll::Ready(r.map_err(EngineError::Domain));
            }
            if let Some(why) = inner.stopped.borrow().clone() {
                return std::task::Poll::Ready(Err(EngineError::Stopped(why)));
            }
            inner.waiters.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    /// Applies every durable command whose turn has come.
    fn drain(&self) {
        let inner = &self.inner;
        loop {
            if inner.stopped.borrow().is_some() {
                break;
            }
            let next = inner.applied.get();
            let Some((ts, apply)) = inner.pending.borrow_mut().remove(&next) else {
                break;
            };
            let mut ctx = Context::new(next, ts);
            let outcome = {
                let mut model = inner.model.borrow_mut();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    apply(&mut model, &mut ctx)
                }))
            };
            inner.applied.set(next + 1);
            match outcome {
                Ok(()) => {
                    if !ctx.events.is_empty() {
                        let mut subs = inner.subscribers.borrow_mut();
                        for e in &ctx.events {
                            subs.retain(|s| s.send(e.clone()).is_ok());
                        }
                        drop(subs);
                        let sinks: Vec<(u64, EventSink)> = inner.sinks.borrow().clone();
                        let mut dead = Vec::new();
                        for (id, sink) in &sinks {
                            if !ctx.events.iter().all(|e| sink(e)) {
                                dead.push(*id);
                            }
                        }
                        if !dead.is_empty() {
                            inner
                                .sinks
                                .borrow_mut()
                                .retain(|(id, _)| !dead.contains(id));
                        }
                    }
                }
                Err(p) => {
                    let why = format!(
                        "a command at LSN {next} panicked ({}); the model may be half changed, \
                         so engine {} serves nothing until it is restarted with fixed code",
                        panic_text(&p),
                        inner.name
                    );
                    tracing::error!(engine = %inner.name, lsn = next, "{why}");
                    *inner.stopped.borrow_mut() = Some(why);
                }
            }
        }
        for w in inner.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Reads the current model (every applied command, nothing that is not durable).
    pub fn query<Q: Query<M>>(&self, q: &Q) -> Result<Q::Output, EngineError> {
        if let Some(why) = self.inner.stopped.borrow().clone() {
            return Err(EngineError::Stopped(why));
        }
        // A query cannot change the model, so a panicking one fails alone.
        let model = self.inner.model.borrow();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.run(&model)))
            .map_err(|p| EngineError::Store(format!("the query panicked: {}", panic_text(&p))))
    }

    /// Reads the current model through a closure.
    pub fn read<T>(&self, f: impl FnOnce(&M) -> T) -> Result<T, EngineError> {
        if let Some(why) = self.inner.stopped.borrow().clone() {
            return Err(EngineError::Stopped(why));
        }
        Ok(f(&self.inner.model.borrow()))
    }

    /// The LSN the next command will get (every command below it is applied).
    pub fn applied_lsn(&self) -> u64 {
        self.inner.applied.get()
    }

    /// Adds a sink for domain events raised from now on (in LSN order, on this executor);
    /// returns its id for [`Engine::remove_sink`].
    pub fn add_sink(&self, sink: EventSink) -> u64 {
        let id = self.inner.next_sink.get();
        self.inner.next_sink.set(id + 1);
        self.inner.sinks.borrow_mut().push((id, sink));
        id
    }

    pub fn remove_sink(&self, id: u64) {
        self.inner.sinks.borrow_mut().retain(|(i, _)| *i != id);
    }

    /// The domain events the commands with LSNs in `from..to` raised, re-derived from the
    /// journal (the model as of `from`, then those commands applied again): what a
    /// subscriber from `from` missed.
    pub async fn events_between(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<DomainEvent>, EngineError> {
        let mut model = self.state_at(from).await?;
        let mut out = Vec::new();
        self.replay(&mut model, from, to, Some(&mut out)).await?;
        Ok(out)
    }

    /// Domain events raised from now on, in LSN order.
    pub fn subscribe(&self) -> std::sync::mpsc::Receiver<DomainEvent> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.inner.subscribers.borrow_mut().push(tx);
        rx
    }

    /// Writes a snapshot of the model at the applied LSN (encoded with the store's codec) and
    /// keeps the newest `keep`. A restart loads it and replays only the journal after it.
    pub async fn snapshot(&self, keep: usize) -> Result<u64, EngineError> {
        let inner = &self.inner;
        let lsn = inner.applied.get();
        let model = inner
            .codec
            .encode(&*inner.model.borrow())
            .map_err(|source| EngineError::Encode {
                what: "the model cannot be encoded".into(),
                source,
            })?;
        let image = ModelImage {
            model,
            resume: inner.journal.resume_point(lsn),
        };
        let body = postcard::to_allocvec(&image).expect("an image encodes");
        let meta = crate::snapshot::SnapshotMeta {
            kind: crate::snapshot::KIND_MODEL,
            codec: inner.codec.snapshot_codec(),
            partition: inner.journal_cfg.partition,
            store_id: inner.journal_cfg.store_id,
            lsn,
            resume_segment: image.resume.first_segment,
        };
        let dir = inner.dir.clone();
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                crate::shard::off_shard_cpus();
                crate::snapshot::write(&dir, &meta, &body)?;
                crate::snapshot::prune(&dir, keep)?;
                Ok(())
            })
            .await
            .map_err(|source| EngineError::Io {
                what: "snapshot".into(),
                source,
            })?;
        Ok(lsn)
    }

    /// Time travel: the model as it was with every command below `lsn` applied (and none
    /// from `lsn` on), built from the newest snapshot at or below `lsn` plus the journal.
    pub async fn state_at(&self, lsn: u64) -> Result<M, EngineError> {
        let inner = &self.inner;
        if lsn > inner.applied.get() {
            return Err(EngineError::Store(format!(
                "LSN {lsn} is in the future (the engine has applied up to {})",
                inner.applied.get()
            )));
        }
        let mut model = M::default();
        let mut from = inner.journal.oldest_lsn();
        if let Some((m, at, _)) =
            load_model_snapshot::<M>(&inner.dir, inner.codec, &inner.journal_cfg, lsn)
        {
            model = m;
            from = at;
        } else if from > 0 {
            return Err(EngineError::Store(format!(
                "history before LSN {from} is no longer in the journal and no snapshot covers LSN {lsn}"
            )));
        }
        self.replay(&mut model, from, lsn, None).await?;
        Ok(model)
    }

    /// Applies the journaled commands with LSNs in `from..to` to `model` again (time travel,
    /// subscription catch-up), collecting the domain events they raise into `events`.
    async fn replay(
        &self,
        model: &mut M,
        from: u64,
        to: u64,
        mut events: Option<&mut Vec<DomainEvent>>,
    ) -> Result<(), EngineError> {
        let inner = &self.inner;
        let mut next = from;
        while next < to {
            let records = inner.journal.read(next, 4096).await?;
            if records.is_empty() {
                break;
            }
            for r in records.iter().take_while(|r| r.lsn < to) {
                if r.kind == RECORD_KIND_COMMAND {
                    let mut ctx = Context::new(r.lsn, r.timestamp_ns);
                    apply_recorded_ctx(
                        &inner.commands,
                        inner.codec,
                        model,
                        r.lsn,
                        &r.as_ref(),
                        &mut ctx,
                    )
                    .map_err(EngineError::Replay)?;
                    if let Some(out) = events.as_deref_mut() {
                        out.extend(ctx.events);
                    }
                }
                next = r.lsn + 1;
            }
            if records.last().is_some_and(|r| r.lsn >= to) {
                break;
            }
        }
        Ok(())
    }

    /// Lets in-flight commands finish and closes the journal.
    pub async fn close(&self) {
        self.inner.journal.close().await;
    }
}
