//! Serving your own model: build a stateful service binary around an event-sourced model in
//! a few lines.
//!
//! ```ignore
//! impl ServedModel for Counter {
//!     const NAME: &'static str = "counter";
//!     type Cmd = CounterCommand; // a serde enum implementing Command<Counter>
//!     type Q = CounterQuery;     // a serde enum implementing Query<Counter>
//! }
//! fn main() -> Result<(), evring::error::StartError> {
//!     evring::server::served_model::serve_model::<Counter>(evring::config::Config::default())
//! }
//! ```
//!
//! The server is evringd (streams, the key-value model, everything) plus one engine running
//! `M` on the shard that owns partition 0, with its journal and snapshots in
//! `DATA_DIR/model-<NAME>/`. EXECUTE with the model's name carries a JSON `M::Cmd` and
//! answers the command's output as JSON once it is durable and applied; QUERY carries a JSON
//! `M::Q`. Commands of one model run one at a time, in LSN order. SUBSCRIBE target 3 with the
//! model's name delivers the domain events its commands raise (catch-up from an LSN, re-derived
//! from the journal, then live).

use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ApiError;
use crate::engine::{Command, DomainEvent, Engine, EngineError, EventSink, Model, Query};
use crate::journal::{JournalConfig, StoreId};
use crate::protocol::code;

/// A model evringd can serve: its wire name, its command type and its query type (both
/// decoded from JSON; their outputs encoded as JSON).
pub trait ServedModel: Model {
    const NAME: &'static str;
    type Cmd: Command<Self>;
    type Q: Query<Self> + DeserializeOwned;
}

pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What a shard does with any engine it runs besides commands and queries: snapshots,
/// shutdown, and domain-event subscriptions. Every `Engine<M>` is one.
pub trait ModelEngine {
    fn applied_lsn(&self) -> u64;
    fn snapshot(&self, keep: usize) -> LocalFuture<'_, Result<u64, EngineError>>;
    fn close(&self) -> LocalFuture<'_, ()>;
    /// Domain events of the commands in `from..to`, re-derived (subscription catch-up).
    fn events_between(
        &self,
        from: u64,
        to: u64,
    ) -> LocalFuture<'_, Result<Vec<DomainEvent>, EngineError>>;
    fn add_sink(&self, sink: EventSink) -> u64;
    fn remove_sink(&self, id: u64);
}

impl<M: Model> ModelEngine for Engine<M> {
    fn applied_lsn(&self) -> u64 {
        Engine::applied_lsn(self)
    }
    fn snapshot(&self, keep: usize) -> LocalFuture<'_, Result<u64, EngineError>> {
        Box::pin(Engine::snapshot(self, keep))
    }
    fn close(&self) -> LocalFuture<'_, ()> {
        Box::pin(Engine::close(self))
    }
    fn events_between(
        &self,
        from: u64,
        to: u64,
    ) -> LocalFuture<'_, Result<Vec<DomainEvent>, EngineError>> {
        Box::pin(Engine::events_between(self, from, to))
    }
    fn add_sink(&self, sink: EventSink) -> u64 {
        Engine::add_sink(self, sink)
    }
    fn remove_sink(&self, id: u64) {
        Engine::remove_sink(self, id)
    }
}

/// A user's model as the shard serves it: JSON bytes in, JSON bytes out.
pub trait ModelService {
    fn execute(&self, blob: Vec<u8>) -> LocalFuture<'_, Result<Vec<u8>, ApiError>>;
    fn query(&self, blob: Vec<u8>) -> Result<Vec<u8>, ApiError>;
    /// The engine behind it (snapshots, shutdown, subscriptions).
    fn engine(&self) -> Rc<dyn ModelEngine>;
}

/// Opens the served model on its shard.
pub trait ModelFactory: Send + Sync {
    fn name(&self) -> &str;
    fn open(
        &self,
        dir: PathBuf,
        journal: JournalConfig,
    ) -> LocalFuture<'static, Result<Rc<dyn ModelService>, EngineError>>;
}

struct Factory<M>(PhantomData<fn() -> M>);

/// How an engine failure reaches the wire.
pub(crate) fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Domain(d) => ApiError::new(code::INVALID_ARGUMENT, d.0),
        EngineError::Journal(j) => ApiError::from(j),
        EngineError::Store(m) => ApiError::new(code::INVALID_ARGUMENT, m),
        e @ (EngineError::Io { .. } | EngineError::Encode { .. }) => {
            ApiError::new(code::INVALID_ARGUMENT, e.to_string())
        }
        EngineError::Stopped(m) => ApiError::new(code::PARTITION_UNAVAILABLE, m),
        // The same message as a stop: the reason alone, without the "engine stopped" prefix.
        EngineError::Replay(r) => ApiError::new(code::PARTITION_UNAVAILABLE, r.to_string()),
        e @ EngineError::ReplayAtOpen { .. } => {
            ApiError::new(code::PARTITION_UNAVAILABLE, e.to_string())
        }
    }
}

struct Served<M: ServedModel>(Engine<M>);

/// A command's or query's output as JSON; a type JSON cannot hold is an error, not a panic.
fn json_output<T: Serialize>(out: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(out).map_err(|e| {
        ApiError::new(
            code::INVALID_ARGUMENT,
            format!("the output cannot be encoded as JSON: {e}"),
        )
    })
}

impl<M> ModelService for Served<M>
where
    M: ServedModel,
    <M::Cmd as Command<M>>::Output: Serialize,
    <M::Q as Query<M>>::Output: Serialize,
{
    fn execute(&self, blob: Vec<u8>) -> LocalFuture<'_, Result<Vec<u8>, ApiError>> {
        Box::pin(async move {
            let cmd: M::Cmd = serde_json::from_slice(&blob).map_err(|e| {
                ApiError::new(
                    code::INVALID_ARGUMENT,
                    format!("bad {} command: {e}", M::NAME),
                )
            })?;
            let out = self.0.execute(cmd).await.map_err(engine_error)?;
            json_output(&out)
        })
    }
    fn query(&self, blob: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        let q: M::Q = serde_json::from_slice(&blob).map_err(|e| {
            ApiError::new(
                code::INVALID_ARGUMENT,
                format!("bad {} query: {e}", M::NAME),
            )
        })?;
        let out = self.0.query(&q).map_err(engine_error)?;
        json_output(&out)
    }
    fn engine(&self) -> Rc<dyn ModelEngine> {
        Rc::new(self.0.clone())
    }
}

impl<M> ModelFactory for Factory<M>
where
    M: ServedModel,
    <M::Cmd as Command<M>>::Output: Serialize,
    <M::Q as Query<M>>::Output: Serialize,
{
    fn name(&self) -> &str {
        M::NAME
    }
    fn open(
        &self,
        dir: PathBuf,
        journal: JournalConfig,
    ) -> LocalFuture<'static, Result<Rc<dyn ModelService>, EngineError>> {
        Box::pin(async move {
            let store: StoreId = journal.store_id;
            let engine = Engine::<M>::builder(M::NAME, store)
                .journal_config(|j| *j = journal)
                .command::<M::Cmd>()
                .open(&dir)
                .await?;
            Ok(Rc::new(Served(engine)) as Rc<dyn ModelService>)
        })
    }
}

/// The factory for model `M`, for [`super::start_serving`].
pub fn factory<M>() -> std::sync::Arc<dyn ModelFactory>
where
    M: ServedModel,
    <M::Cmd as Command<M>>::Output: Serialize,
    <M::Q as Query<M>>::Output: Serialize,
{
    std::sync::Arc::new(Factory::<M>(PhantomData))
}

/// Runs evringd serving `M` until SIGINT or SIGTERM (a clean stop), like the `evringd` binary
/// does for the built-in models.
pub fn serve_model<M>(config: crate::config::Config) -> Result<(), crate::error::StartError>
where
    M: ServedModel,
    <M::Cmd as Command<M>>::Output: Serialize,
    <M::Q as Query<M>>::Output: Serialize,
{
    // SAFETY: sigset_t is plain data initialized by sigemptyset before use; the mask change
    // applies to this thread and is inherited by the shard threads started after it, so the
    // signals are only delivered through sigwait below.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let running = super::start_serving(config, Some(factory::<M>()))?;
    tracing::info!(client = %running.client_addr, model = M::NAME, "serving");
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialized sigset_t and `sig` a valid out-pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
    running.stop()
}
