//! The evringd server: one shard (glommio executor) per CPU, each owning some partitions,
//! all accepting on the shared client port.
//!
//! [`start`] brings the server up and returns once every partition is recovered and every
//! shard listens: shard 0 binds first (resolving port 0), the others bind the same address
//! with SO_REUSEPORT. [`Running::stop`] stops accepting, lets in-flight frames finish, closes
//! every journal and joins the shard threads.
//!
//! Start-up runs in two steps: [`Plan::check`] does everything that can refuse a start
//! cheaply (io_uring, O_DIRECT, the data directory's lock, ports, limits, settings) before the
//! MANIFEST is written at first start; then one thread per shard recovers its partitions
//! ([`recovery`]), listens, and serves until the stop.
//!
//! - [`checks`]: start-up checks and listening sockets.
//! - [`recovery`]: a shard's life: recover, listen, serve, stop.
//! - [`route`]: the shard's shared state, partition calls and cross-shard messages.
//! - [`conn`]: client connections, the loop every wire protocol runs on; [`outbound`]: a
//!   connection's queued replies and its writer task.
//! - [`native`]: the native protocol and each request's handling.
//! - [`subscriptions`]: catch-up (through views, then the owner's journal) then live.
//! - [`model_requests`], [`served_model`]: EXECUTE and QUERY; serving a user's model.
//! - [`snapshots`]: snapshot scheduling and retention.
//! - [`api_error`]: every lower layer's error as a wire code.

pub use api_error::ApiError;

mod api_error;
mod checks;
mod conn;
mod model_requests;
mod native;
mod native_groups;
mod outbound;
mod placed;
mod recovery;
mod resp_commands;
mod resp_conn;
mod resp_copy;
mod resp_ev;
mod resp_groups;
mod resp_info;
mod resp_keys;
mod resp_lists;
mod resp_multi;
mod resp_read;
mod resp_stats;
mod resp_streams;
mod resp_values;
mod resp_writes;
mod route;
pub mod served_model;
mod slot;
mod snapshots;
mod subscriptions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};

use crate::config::Config;
use crate::error::StartError;
use crate::journal::uring::Submit;
use crate::journal::JournalConfig;
use crate::manifest::Manifest;
use crate::shard::{executor_builder, io_memory_per_executor};
use crate::stream::PartitionLimits;
pub use checks::DataDirLock;
pub use resp_conn::{ARG_LISTS_KEPT, ARG_LIST_BYTES_KEPT};
pub use resp_keys::{SCAN_NAMES_MIN, SCAN_NAMES_PER_KEY};

/// What a failed network ring says before its cause (which names the kernel feature).
pub(super) const NET_RING_HINT: &str = "the network ring could not start";
use checks::{probe_direct_io, probe_io_uring, probe_port, raise_open_file_limit};
use route::{ShardMsg, Shared};

/// Capacity of each cross-shard channel, in messages.
const SHARD_CHANNEL_CAPACITY: usize = 4096;

/// A running server.
pub struct Running {
    pub client_addr: SocketAddr,
    /// The RESP port, when `resp_listen` is set.
    pub resp_addr: Option<SocketAddr>,
    /// Each shard's own client port (`shard_ports`), by shard; empty when off.
    pub shard_addrs: Vec<SocketAddr>,
    /// The Prometheus endpoint, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub partitions: u32,
    pub shards: usize,
    shared: Arc<Shared>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Holds the data directory's advisory lock until the server is dropped.
    _lock: DataDirLock,
}

impl Running {
    /// Stops accepting, drains in-flight frames, closes the journals, joins the shards.
    pub fn stop(self) -> Result<(), StartError> {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join()
                .map_err(|e| StartError::ShardPanicked(e.to_string()))?;
        }
        Ok(())
    }
}

/// One shard's ends of the cross-shard channels.
#[derive(Default)]
struct ShardEndpoints {
    /// To each other shard, by shard (`None` for itself).
    senders: Vec<Option<SharedSender<ShardMsg>>>,
    /// From each other shard.
    receivers: Vec<SharedReceiver<ShardMsg>>,
}

/// Starts the server and returns once it serves.
pub fn start(config: Config) -> Result<Running, StartError> {
    start_serving(config, None)
}

/// [`start`], also serving a user's model (see [`served_model`]).
pub fn start_serving(
    config: Config,
    model: Option<Arc<dyn served_model::ModelFactory>>,
) -> Result<Running, StartError> {
    let plan = Plan::check(config)?;
    tracing::info!(
        data_dir = %plan.config.data_dir.display(),
        store_id = %crate::journal::hex(&plan.manifest.store_id),
        partitions = plan.manifest.partitions,
        shards = plan.shards,
        "starting evringd"
    );
    launch(plan, model)
}

/// What start-up checked and settled before any shard starts.
struct Plan {
    config: Config,
    lock: DataDirLock,
    manifest: Manifest,
    shards: usize,
    cpus: usize,
    listen: SocketAddr,
    /// The RESP port (`resp_listen`), if on.
    resp_listen: Option<SocketAddr>,
    /// `shard_ports`: none, 0 (a free port each) or the base port.
    shard_ports: Option<u16>,
    journal: JournalConfig,
    limits: PartitionLimits,
    metrics_addr: Option<SocketAddr>,
}

impl Plan {
    /// Everything that can refuse a start cheaply, in that order, and then the MANIFEST: it
    /// fixes the partition count for good, so a first start writes it only once nothing else
    /// stands in the way.
    fn check(mut config: Config) -> Result<Plan, StartError> {
        if let Some(rule) = option_env!("EVRING_BUILT_WITH_MUTANT") {
            return Err(StartError::Mutant(rule));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards_wanted = match config.shards {
            // One shard per CPU but one: the spare CPU does the kernel's work for evringd.
            0 => cpus.saturating_sub(1).max(1),
            n => n as usize,
        };
        probe_io_uring()?;
        crate::net::NetRing::probe().map_err(|source| StartError::IoUring {
            hint: NET_RING_HINT,
            source,
        })?;
        let lock = DataDirLock::acquire(&config.data_dir)?;
        probe_direct_io(&config.data_dir)?;
        let existing = Manifest::load(&config.data_dir)?;
        // One partition per shard unless configured otherwise.
        let wanted = match config.partitions {
            0 => shards_wanted as u32,
            n => n,
        };
        let partitions = existing.as_ref().map_or(wanted.max(1), |m| m.partitions);
        if config.partitions != 0 && config.partitions != partitions {
            tracing::warn!(
                configured = config.partitions,
                manifest = partitions,
                "the partition count is fixed at first start; using the manifest's"
            );
        }
        let shards = shards_wanted.min(partitions as usize).max(1);
        io_memory_per_executor(shards)?;
        config.max_connections = raise_open_file_limit(config.max_connections, partitions, shards)?;
        let listen = listen_address(&config)?;
        // The shards' listeners share the port through SO_REUSEPORT, which would also let a
        // second evringd (same user) join it and take half the connections. A plain bind
        // first fails if anything already listens there.
        if listen.port() != 0 {
            probe_port(listen, "")?;
        }
        let resp_listen = resp_address(&config)?;
        if let Some(resp) = resp_listen.filter(|a| a.port() != 0) {
            probe_port(resp, " (the RESP port, resp_listen)")?;
        }
        let shard_ports = config.shard_ports()?;
        check_shard_ports(shard_ports, listen, shards)?;
        let limits = partition_limits(&config)?;
        let mut journal = journal_config(&config)?;
        let metrics_addr = serve_metrics(&config)?;
        let manifest = match existing {
            Some(m) => m,
            None => Manifest::load_or_init(&config.data_dir, partitions)?,
        };
        journal.store_id = manifest.store_id;
        Ok(Plan {
            config,
            lock,
            manifest,
            shards,
            cpus,
            listen,
            resp_listen,
            shard_ports,
            journal,
            limits,
            metrics_addr,
        })
    }

    /// What shard `shard_id` starts with: the partitions it owns, the settings, its ends of
    /// the cross-shard channels `endpoints`, and the addresses to listen on (the client
    /// port as shard 0 resolved it, once it did).
    fn shard_start(
        &self,
        shard_id: usize,
        endpoints: ShardEndpoints,
        model: &Option<Arc<dyn served_model::ModelFactory>>,
        shared_slot: &Arc<std::sync::OnceLock<Arc<Shared>>>,
        stop_early: &Arc<AtomicBool>,
    ) -> recovery::ShardStart {
        let shard_addr = self.shard_ports.map(|base| {
            let port = if base == 0 { 0 } else { base + shard_id as u16 };
            SocketAddr::new(self.listen.ip(), port)
        });
        recovery::ShardStart {
            model: model.clone(),
            shard_id,
            owned: self.owned(shard_id),
            partitions: self.manifest.partitions,
            data_dir: self.config.data_dir.clone(),
            journal: self.journal.clone(),
            limits: self.limits,
            submit: self.journal_submit(shard_id),
            endpoints,
            bind_addr: shared_slot.get().map_or(self.listen, |s| s.client_addr),
            resp_addr: match shared_slot.get() {
                Some(s) => s.resp_addr,
                None => self.resp_listen,
            },
            shard_addr,
            shared: shared_slot.clone(),
            stop_early: stop_early.clone(),
        }
    }

    /// Starts `start`'s shard on its own executor thread; it reports on `ready` once it
    /// listens, or why it could not start.
    fn spawn_shard(
        &self,
        start: recovery::ShardStart,
        ready: mpsc::Sender<Ready>,
    ) -> Result<glommio::ExecutorJoinHandle<()>, StartError> {
        let shard_id = start.shard_id;
        let builder = executor_builder(
            &format!("evring-shard-{shard_id}"),
            self.config.pin_cpus.then_some(shard_id % self.cpus),
            self.shards,
            Duration::from_micros(u64::from(self.config.spin_before_park_us)),
        )?;
        builder
            .spawn(move || async move {
                if let Err(e) = start.run(&ready).await {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| StartError::Thread {
                shard: shard_id,
                source: e.to_string().into(),
            })
    }

    /// Who issues shard `shard_id`'s journal writes (`journal_submit`, docs/OPERATIONS.md):
    /// io_uring's workers, on the CPUs no shard is pinned to — or, when a shard runs on
    /// every CPU, on all but this shard's own; anywhere when shards are not pinned. With no
    /// other CPU at all, the shard itself.
    fn journal_submit(&self, shard_id: usize) -> Submit {
        if self
            .config
            .journal_submit_inline()
            .expect("checked by Plan::check")
        {
            return Submit::Inline;
        }
        if !self.config.pin_cpus {
            return Submit::Workers { cpus: Vec::new() };
        }
        let pinned: Vec<usize> = (0..self.shards).map(|s| s % self.cpus).collect();
        let mut cpus: Vec<usize> = (0..self.cpus).filter(|c| !pinned.contains(c)).collect();
        if cpus.is_empty() {
            cpus = (0..self.cpus)
                .filter(|&c| c != shard_id % self.cpus)
                .collect();
        }
        if cpus.is_empty() {
            tracing::info!(
                "journal writes issued inline: no CPU besides the shard's for io_uring's workers"
            );
            return Submit::Inline;
        }
        Submit::Workers { cpus }
    }

    /// The partitions shard `shard` owns: partition p runs on shard p mod shards.
    fn owned(&self, shard: usize) -> Vec<u32> {
        (0..self.manifest.partitions)
            .filter(|p| *p as usize % self.shards == shard)
            .collect()
    }
}

/// The RESP port's address (`resp_listen`), if on.
fn resp_address(config: &Config) -> Result<Option<SocketAddr>, StartError> {
    if config.resp_listen.is_empty() {
        return Ok(None);
    }
    config
        .resp_listen
        .parse()
        .map(Some)
        .map_err(|source| StartError::ListenAddress {
            value: config.resp_listen.clone(),
            source,
        })
}

/// The client port's address (`listen`).
fn listen_address(config: &Config) -> Result<SocketAddr, StartError> {
    config
        .listen
        .parse()
        .map_err(|source| StartError::ListenAddress {
            value: config.listen.clone(),
            source,
        })
}

/// Each partition's limits, from the settings.
pub(crate) fn partition_limits(config: &Config) -> Result<PartitionLimits, StartError> {
    Ok(PartitionLimits {
        idempotency_window: config.idempotency_window as usize,
        max_read_count: config.max_read_count as usize,
        max_read_bytes: config.max_read_bytes as usize,
        max_group_entries: config.max_group_entries,
        ring: crate::ring::RingConfig {
            capacity_events: config.ring_capacity_events as usize,
            capacity_bytes: config.ring_capacity_bytes as usize,
            max_retries: 8,
        },
        write_mode: config.write_mode()?,
    })
}

/// Each partition's journal settings, checked; the store id is the MANIFEST's, set once it
/// is known.
fn journal_config(config: &Config) -> Result<JournalConfig, StartError> {
    let mut journal = JournalConfig::new([0; 16], 0);
    journal.segment_bytes = config.segment_bytes;
    journal.frame_bytes_max = config.journal_frame_bytes_max as usize;
    journal.in_flight_max = config.in_flight_frames as usize;
    journal.pipeline_min_bytes = config.pipeline_min_bytes as usize;
    journal.validate().map_err(|source| StartError::Journal {
        partition: 0,
        source,
    })?;
    Ok(journal)
}

/// Serves the Prometheus endpoint when `metrics_listen` is set: its address.
fn serve_metrics(config: &Config) -> Result<Option<SocketAddr>, StartError> {
    if config.metrics_listen.is_empty() {
        return Ok(None);
    }
    let handle = crate::metrics::install();
    let addr = crate::metrics::serve(&config.metrics_listen, handle).map_err(|source| {
        StartError::Metrics {
            addr: config.metrics_listen.clone(),
            source,
        }
    })?;
    Ok(Some(addr))
}

/// Shard ports (`shard_ports` = a base port): each within range, none the client port, none
/// in use.
fn check_shard_ports(
    shard_ports: Option<u16>,
    listen: SocketAddr,
    shards: usize,
) -> Result<(), StartError> {
    let Some(base) = shard_ports.filter(|b| *b > 0) else {
        return Ok(());
    };
    for shard in 0..shards {
        let port = u32::from(base) + shard as u32;
        let problem = |problem| StartError::ShardPort {
            base,
            shard,
            port,
            problem,
        };
        let Ok(port) = u16::try_from(port) else {
            return Err(problem("is beyond 65535"));
        };
        if port == listen.port() {
            return Err(problem("is the client port"));
        }
        probe_port(
            SocketAddr::new(listen.ip(), port),
            &format!(" (shard {shard}'s port)"),
        )?;
    }
    Ok(())
}

/// One channel per ordered pair of shards: shard i's senders (to each other shard) and
/// receivers (from each other shard).
fn shard_channels(shards: usize) -> Vec<ShardEndpoints> {
    let mut endpoints: Vec<ShardEndpoints> = (0..shards)
        .map(|_| ShardEndpoints {
            senders: (0..shards).map(|_| None).collect(),
            receivers: Vec::new(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(SHARD_CHANNEL_CAPACITY);
                endpoints[from].senders[to] = Some(tx);
                endpoints[to].receivers.push(rx);
            }
        }
    }
    endpoints
}

/// Where a shard listens, once it recovered its partitions: the client port, its own port
/// (`shard_ports`) and the RESP port, as bound.
pub(super) struct Listening {
    pub(super) client: SocketAddr,
    pub(super) own: Option<SocketAddr>,
    pub(super) resp: Option<SocketAddr>,
}

/// What a shard reports once it recovered its partitions and listens.
type Ready = Result<Listening, StartError>;

/// Starts the shards one after another, each once the previous one recovered and listens (so
/// shard 0's resolved port is the one every shard binds), and returns the running server.
fn launch(
    plan: Plan,
    model: Option<Arc<dyn served_model::ModelFactory>>,
) -> Result<Running, StartError> {
    let shared_slot: Arc<std::sync::OnceLock<Arc<Shared>>> = Arc::new(std::sync::OnceLock::new());
    let stop_early = Arc::new(AtomicBool::new(false));
    let mut shard_addrs = Vec::new();
    let mut threads = Vec::new();
    for (shard_id, ep) in shard_channels(plan.shards).into_iter().enumerate() {
        let start = plan.shard_start(shard_id, ep, &model, &shared_slot, &stop_early);
        // A channel per shard, whose only sender the shard holds: a shard that panics while
        // it starts drops it, and the start fails instead of waiting forever.
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        threads.push(plan.spawn_shard(start, ready_tx)?);
        match ready_rx.recv() {
            Ok(Ok(listening)) => {
                shard_addrs.extend(listening.own);
                if shared_slot.get().is_none() {
                    let _ = shared_slot.set(Arc::new(Shared::new(
                        &plan,
                        &listening,
                        model.as_ref().map(|m| m.name().to_string()),
                    )));
                }
            }
            Ok(Err(e)) => {
                stop_early.store(true, Ordering::Release);
                if let Some(s) = shared_slot.get() {
                    s.stop.store(true, Ordering::Release);
                }
                return Err(StartError::Shard {
                    shard: shard_id,
                    source: Box::new(e),
                });
            }
            Err(_) => return Err(StartError::ShardExited(shard_id)),
        }
    }
    let shared = shared_slot
        .get()
        .cloned()
        .expect("shard 0 started and set the shared state");
    if !shard_addrs.is_empty() {
        let _ = shared.shard_addrs.set(shard_addrs.clone());
    }
    Ok(Running {
        client_addr: shared.client_addr,
        resp_addr: shared.resp_addr,
        shard_addrs,
        metrics_addr: plan.metrics_addr,
        partitions: plan.manifest.partitions,
        shards: plan.shards,
        shared,
        threads,
        _lock: plan.lock,
    })
}
