//! The evringd server: one shard (glommio executor) per CPU, each owning some partitions,
//! all accepting on the shared client port.
//!
//! [`start`] brings the server up and returns once every partition is recovered and every
//! shard listens: shard 0 binds first (resolving port 0), the others bind the same address
//! with SO_REUSEPORT. [`Running::stop`] stops accepting, lets in-flight frames finish, closes
//! every journal and joins the shard threads.
//!
//! - [`partition`]: one partition's streams on its journal.
//! - [`shard`]: routing, cross-shard calls, connections, subscriptions.

pub use api_error::ApiError;

mod api_error;
mod conn;
mod models;
mod native;
mod route;
pub mod serve;
mod slot;
mod subscriptions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::net::TcpListener;

use crate::config::Config;
use crate::engine::kv::{KvCommand, KvModel};
use crate::journal::{GlommioStorage, Journal, JournalConfig};
use crate::manifest::Manifest;
use crate::shard::{executor_builder, io_memory_per_executor};
use crate::stream::{read_partition_snapshot, Partition, PartitionLimits, Rebuild};
use route::{Shard, ShardMsg, Shared};

/// Capacity of each cross-shard channel, in messages.
const SHARD_CHANNEL_CAPACITY: usize = 4096;

/// A running server.
pub struct Running {
    pub client_addr: SocketAddr,
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

/// Writes and syncs one aligned block with O_DIRECT in the data directory, so a filesystem
/// that refuses direct I/O is reported at start-up in one line instead of as a journal error.
/// `EVRINGD_INJECT_ODIRECT_FAILURE=1` makes the probe fail (for tests: the filesystems at
/// hand all accept O_DIRECT).
fn probe_direct_io(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(".direct-io-probe");
    let result = (|| -> std::io::Result<()> {
        if std::env::var_os("EVRINGD_INJECT_ODIRECT_FAILURE").is_some() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("valid layout");
        // SAFETY: the layout has a non-zero size; the block is freed below.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(std::io::Error::other("out of memory"));
        }
        // SAFETY: `ptr` points to 4096 zeroed bytes owned here until the dealloc below.
        let block = unsafe { std::slice::from_raw_parts(ptr, 4096) };
        let written = file.write_all(block).and_then(|()| file.sync_data());
        // SAFETY: allocated above with this layout, not used after this point.
        unsafe { std::alloc::dealloc(ptr, layout) };
        written
    })();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| {
        anyhow!(
            "the filesystem of data directory {} does not support direct I/O (O_DIRECT): {e}; \
             put the data directory on a filesystem that does (ext4, xfs)",
            data_dir.display()
        )
    })
}

/// Sets up (and closes) one small io_uring, so a kernel where io_uring is disabled
/// (`kernel.io_uring_disabled` sysctl, a seccomp filter, an old kernel) is reported at start-up
/// in one line instead of as an executor panic.
fn probe_io_uring() -> anyhow::Result<()> {
    // struct io_uring_params is 120 bytes on every architecture; zeroed means "defaults".
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes exactly one struct io_uring_params (120 bytes),
    // which `params` provides; the returned descriptor is closed right below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::ENOSYS) => "this kernel has no io_uring (Linux 5.8 or newer is needed)",
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "it is disabled: check `sysctl kernel.io_uring_disabled` (must be 0, or 1 with \
                 evringd's group in kernel.io_uring_group) and any seccomp/SystemCallFilter= \
                 that denies io_uring_setup"
            }
            Some(libc::ENOMEM) => "not enough locked memory: raise RLIMIT_MEMLOCK (ulimit -l)",
            _ => "check the kernel's io_uring support",
        };
        bail!("io_uring is unavailable ({e}): {hint}");
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned, owned here and closed once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// File descriptors evringd keeps besides client connections: per partition its journals'
/// segment files and directories and a snapshot being written; per shard its io_uring
/// instances, event descriptors and listeners; the metrics endpoint's connections; the data
/// directory's lock, standard streams and the like.
fn reserved_files(partitions: u32, shards: usize) -> u64 {
    64 + 16 * u64::from(partitions) + 16 * shards as u64 + 17
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to what `max_connections` client
/// connections and [`reserved_files`] need, up to the hard limit, and returns the number of
/// connections the server will accept: `max_connections`, or fewer (with a warning) when the
/// hard limit is lower — so the connections beyond get error 30 instead of an accept failing
/// with EMFILE. Shells start processes with a soft limit of 1024, which `max_connections =
/// 1024` alone exceeds.
fn raise_open_file_limit(
    max_connections: u32,
    partitions: u32,
    shards: usize,
) -> anyhow::Result<u32> {
    let reserved = reserved_files(partitions, shards);
    let need = u64::from(max_connections) + reserved;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit, which `lim` provides.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur >= need {
        return Ok(max_connections);
    }
    let raised = libc::rlimit {
        rlim_cur: need.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one struct rlimit; raising the soft limit up to the hard limit
    // needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        bail!(
            "cannot raise the open-file limit to {}: {}",
            raised.rlim_cur,
            std::io::Error::last_os_error()
        );
    }
    if raised.rlim_cur >= need {
        tracing::info!(
            from = lim.rlim_cur,
            to = raised.rlim_cur,
            "raised the open-file limit for max_connections = {max_connections}"
        );
        return Ok(max_connections);
    }
    let fit = raised.rlim_cur.saturating_sub(reserved);
    if fit == 0 {
        bail!(
            "the open-file limit (RLIMIT_NOFILE, hard limit {}) leaves no room for client \
             connections: evringd keeps about {reserved} files open for {partitions} partitions; \
             raise it (LimitNOFILE= in the systemd unit, ulimit -n)",
            lim.rlim_max
        );
    }
    let fit = fit.min(u64::from(max_connections)) as u32;
    tracing::warn!(
        hard_limit = lim.rlim_max,
        needed = need,
        "the open-file limit (RLIMIT_NOFILE) is below what max_connections = {max_connections} \
         needs; serving at most {fit} connections (the rest get error 30). Raise the limit \
         (LimitNOFILE= in the systemd unit, ulimit -Hn) or lower max_connections"
    );
    Ok(fit)
}

/// How long start-up waits for a port held by a listener in LISTEN state (see [`probe_port`]).
const PORT_BUSY_WAIT: Duration = Duration::from_secs(5);

/// Fails if another socket listens on `addr`: a plain bind (SO_REUSEADDR, no SO_REUSEPORT)
/// that is dropped at once. A port still held after [`PORT_BUSY_WAIT`] is refused.
///
/// Why wait at all: an evringd that was just killed or stopped can leave its listener in
/// LISTEN state for a moment after the process is gone, because the kernel tears the
/// process's io_uring instances (which hold the listener for their pending accepts) down
/// asynchronously. A restart at once (systemd's `Restart=`) would be refused without the wait.
fn probe_port(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if started.elapsed() >= PORT_BUSY_WAIT {
                    bail!(
                        "cannot listen on {addr}{what}: the address is in use (another evringd or \
                         another program listens there; waited {} s for it to go)",
                        PORT_BUSY_WAIT.as_secs()
                    );
                }
                if !logged {
                    tracing::info!(%addr, "the port is in use; waiting up to {} s for it (a stopped evringd's listener lingers briefly)", PORT_BUSY_WAIT.as_secs());
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => bail!("cannot listen on {addr}{what}: {e}"),
        }
    }
}

/// A listening socket on `addr` for this shard's executor, with SO_REUSEPORT (every shard
/// listens on the client port) and SO_REUSEADDR.
///
/// SO_REUSEADDR is what lets a restarted evringd bind its port at once: the sockets of
/// connections a stopped or killed evringd accepted linger in FIN-WAIT-2 or TIME-WAIT for up
/// to a minute, they inherit the listener's options, and the kernel lets a new bind past them
/// only when they carry SO_REUSEADDR (glommio's own `TcpListener::bind` sets SO_REUSEPORT
/// alone). Another process still *listening* on the port is refused all the same; the plain
/// probe bind in [`start_serving`] reports it first.
fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that `into_raw_fd` gave up;
    // the glommio listener takes sole ownership of it (and closes it when dropped).
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// An exclusive advisory lock (`flock`) on `DATA_DIR/LOCK`, held for the life of the server:
/// two evringd processes writing one journal would overwrite each other's frames.
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock or says who (which file) holds it.
    pub fn acquire(data_dir: &std::path::Path) -> anyhow::Result<DataDirLock> {
        use std::os::unix::io::AsRawFd;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let path = data_dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is passed to the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(anyhow!(
                    "data directory {} is in use by another evringd (it holds the lock on {})",
                    data_dir.display(),
                    path.display()
                ));
            }
            return Err(anyhow!("cannot lock {}: {e}", path.display()));
        }
        Ok(DataDirLock { _file: file })
    }
}

impl Running {
    /// Stops accepting, drains in-flight frames, closes the journals, joins the shards.
    pub fn stop(self) -> anyhow::Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().map_err(|e| anyhow!("shard thread failed: {e}"))?;
        }
        Ok(())
    }
}

struct ShardEndpoints {
    senders: Vec<Option<SharedSender<ShardMsg>>>,
    receivers: Vec<SharedReceiver<ShardMsg>>,
}

/// Starts the server and returns once it serves.
pub fn start(config: Config) -> anyhow::Result<Running> {
    start_serving(config, None)
}

/// [`start`], also serving a user's model (see [`serve`]).
pub fn start_serving(
    mut config: Config,
    model: Option<Arc<dyn serve::ModelFactory>>,
) -> anyhow::Result<Running> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let auto = if cpus > 1 { cpus - 1 } else { 1 };
    let auto_shards = if config.shards == 0 {
        auto
    } else {
        config.shards as usize
    };
    // One partition per shard unless configured otherwise.
    let wanted = if config.partitions == 0 {
        auto_shards as u32
    } else {
        config.partitions
    };
    if let Some(rule) = option_env!("EVRING_BUILT_WITH_MUTANT") {
        bail!(
            "this evringd was built with the durability rule {rule:?} broken on purpose \
             (EVRING_DURABILITY_MUTANT, for the negative controls): rebuild without it"
        );
    }
    probe_io_uring()?;
    let lock = DataDirLock::acquire(&config.data_dir)?;
    probe_direct_io(&config.data_dir)?;
    // The MANIFEST fixes the partition count for good, so it is written (at first start) only
    // once everything that can refuse a start cheaply has been checked.
    let existing = Manifest::load(&config.data_dir)?;
    let partitions = existing.as_ref().map_or(wanted.max(1), |m| m.partitions);
    if config.partitions != 0 && config.partitions != partitions {
        tracing::warn!(
            configured = config.partitions,
            manifest = partitions,
            "the partition count is fixed at first start; using the manifest's"
        );
    }
    let shards = auto_shards.min(partitions as usize).max(1);
    io_memory_per_executor(shards)?;
    config.max_connections = raise_open_file_limit(config.max_connections, partitions, shards)?;
    let listen: SocketAddr = config
        .listen
        .parse()
        .with_context(|| format!("listen address {:?} is not host:port", config.listen))?;
    // The shards' listeners share the port through SO_REUSEPORT, which would also let a second
    // evringd (same user) join it and take half the connections. A plain bind first fails if
    // anything already listens there.
    if listen.port() != 0 {
        probe_port(listen, "")?;
    }
    let shard_ports = config.shard_ports()?;
    if let Some(base) = shard_ports.filter(|b| *b > 0) {
        for shard in 0..shards {
            let port = u32::from(base) + shard as u32;
            let Ok(port) = u16::try_from(port) else {
                bail!("shard_ports = {base}: shard {shard}'s port {port} is beyond 65535");
            };
            if port == listen.port() {
                bail!("shard_ports = {base}: shard {shard}'s port {port} is the client port");
            }
            probe_port(
                SocketAddr::new(listen.ip(), port),
                &format!(" (shard {shard}'s port)"),
            )?;
        }
    }
    let write_mode = config.write_mode()?;
    let mut journal_cfg = JournalConfig::new([0; 16], 0);
    journal_cfg.segment_bytes = config.segment_bytes;
    journal_cfg.frame_bytes_max = config.frame_bytes_max as usize;
    journal_cfg.in_flight_max = config.in_flight_frames as usize;
    journal_cfg.pipeline_min_bytes = config.pipeline_min_bytes as usize;
    journal_cfg.validate()?;
    let metrics_addr = if config.metrics_listen.is_empty() {
        None
    } else {
        let handle = crate::metrics::install();
        let addr = crate::metrics::serve(&config.metrics_listen, handle)
            .with_context(|| format!("cannot serve metrics on {:?}", config.metrics_listen))?;
        Some(addr)
    };
    let manifest = match existing {
        Some(m) => m,
        None => Manifest::load_or_init(&config.data_dir, partitions)?,
    };
    journal_cfg.store_id = manifest.store_id;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        store_id = %crate::journal::hex(&manifest.store_id),
        partitions = manifest.partitions,
        shards,
        "starting evringd"
    );

    // One channel per ordered pair of shards.
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

    let shared_slot: Arc<std::sync::OnceLock<Arc<Shared>>> = Arc::new(std::sync::OnceLock::new());
    let stop_early = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<(SocketAddr, Option<SocketAddr>)>>();
    let mut shard_addrs = Vec::new();
    let mut threads = Vec::new();
    let limits = PartitionLimits {
        idempotency_window: config.idempotency_window as usize,
        max_read_count: config.max_read_count as usize,
        max_read_bytes: config.max_read_bytes as usize,
        ring: crate::ring::RingConfig {
            capacity_events: config.ring_capacity_events as usize,
            capacity_bytes: config.ring_capacity_bytes as usize,
            max_retries: 8,
        },
        write_mode,
    };
    let mut client_addr = None;
    for (shard_id, ep) in endpoints.into_iter().enumerate() {
        let owned: Vec<u32> = (0..manifest.partitions)
            .filter(|p| *p as usize % shards == shard_id)
            .collect();
        let builder = executor_builder(
            &format!("evring-shard-{shard_id}"),
            config.pin_cpus.then_some(shard_id % cpus),
            shards,
            Duration::from_micros(u64::from(config.spin_before_park_us)),
        )?;
        let data_dir = config.data_dir.clone();
        let journal_cfg = journal_cfg.clone();
        let ready_tx = ready_tx.clone();
        let shard_shared_slot = shared_slot.clone();
        let shard_model = model.clone();
        let shard_stop_early = stop_early.clone();
        let bind_addr = client_addr.unwrap_or(listen);
        let shard_addr = shard_ports.map(|base| {
            let port = if base == 0 { 0 } else { base + shard_id as u16 };
            SocketAddr::new(listen.ip(), port)
        });
        let thread = builder
            .spawn(move || async move {
                let result = run_shard(
                    shard_model,
                    shard_id,
                    owned,
                    data_dir,
                    journal_cfg,
                    limits,
                    ep,
                    bind_addr,
                    shard_addr,
                    &ready_tx,
                    shard_shared_slot,
                    shard_stop_early,
                )
                .await;
                if let Err(e) = result {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| anyhow!("cannot start shard {shard_id}: {e}"))?;
        threads.push(thread);
        // Wait for this shard's recovery and bind before starting the next, so shard 0's
        // resolved port is the one everyone binds.
        match ready_rx.recv() {
            Ok(Ok((addr, shard_addr))) => {
                shard_addrs.extend(shard_addr);
                if client_addr.is_none() {
                    client_addr = Some(addr);
                    let _ = shared_slot.set(Arc::new(Shared {
                        served_model: model.as_ref().map(|m| m.name().to_string()),
                        config: config.clone(),
                        partitions: manifest.partitions,
                        shards,
                        client_addr: addr,
                        shard_addrs: std::sync::OnceLock::new(),
                        cross_shard_calls: std::sync::atomic::AtomicU64::new(0),
                        connections: AtomicUsize::new(0),
                        stop: AtomicBool::new(false),
                        views: (0..manifest.partitions)
                            .map(|_| std::sync::OnceLock::new())
                            .collect(),
                    }));
                }
            }
            Ok(Err(e)) => {
                stop_early.store(true, Ordering::Release);
                if let Some(s) = shared_slot.get() {
                    s.stop.store(true, Ordering::Release);
                }
                return Err(e.context(format!("shard {shard_id} failed to start")));
            }
            Err(_) => bail!("shard {shard_id} exited during start-up"),
        }
    }
    let shared = shared_slot.get().cloned().context("no shard started")?;
    if !shard_addrs.is_empty() {
        let _ = shared.shard_addrs.set(shard_addrs.clone());
    }

    // Tell every shard the server is complete.
    let client_addr = shared.client_addr;
    Ok(Running {
        client_addr,
        shard_addrs,
        metrics_addr,
        partitions: manifest.partitions,
        shards,
        shared,
        threads,
        _lock: lock,
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    model: Option<Arc<dyn serve::ModelFactory>>,
    shard_id: usize,
    owned: Vec<u32>,
    data_dir: std::path::PathBuf,
    journal_cfg: JournalConfig,
    limits: PartitionLimits,
    ep: ShardEndpoints,
    bind_addr: SocketAddr,
    shard_addr: Option<SocketAddr>,
    ready_tx: &mpsc::Sender<anyhow::Result<(SocketAddr, Option<SocketAddr>)>>,
    shared_slot: Arc<std::sync::OnceLock<Arc<Shared>>>,
    stop_early: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut partitions = HashMap::new();
    let mut kv = HashMap::new();
    for p in owned {
        let dir = Manifest::partition_dir(&data_dir, p);
        let storage = GlommioStorage::open(&dir)
            .with_context(|| format!("cannot open {}", dir.display()))?
            .with_write_mode(limits.write_mode);
        let mut cfg = journal_cfg.clone();
        cfg.partition = p;
        let started = Instant::now();
        let snapshot = load_snapshot(&dir, journal_cfg.store_id, p, &limits);
        let snapshot_path = snapshot.as_ref().map(|s| s.2.clone());
        let (mut rebuild, resume) = match snapshot {
            Some((rebuild, resume, _)) => (rebuild, Some(resume)),
            None => (Rebuild::new(limits.idempotency_window, limits.ring), None),
        };
        let (journal, report) = Journal::open_resuming(storage, cfg, resume, |info, frame| {
            rebuild.frame(info, frame)
        })
        .await
        .with_context(|| format!("partition {p}"))?;
        if snapshot_path.is_none() && report.first_segment > 0 {
            // Retention removed the journal's beginning; only a snapshot covers it. Replaying
            // what is left would renumber stream versions: refuse rather than serve that.
            bail!(
                "partition {p}: the journal starts at segment {} (retention removed the \
                 segments before it) and no usable snapshot covers them; restore the \
                 partition's snapshot files (see the log for why each was not usable)",
                report.first_segment
            );
        }
        if let Some(path) = &snapshot_path {
            // The journal must hold everything from the snapshot's LSN on, with no gap.
            let from = rebuild.from_lsn;
            if report.next_lsn < from || rebuild.first_seen.is_some_and(|f| f > from) {
                bail!(
                    "partition {p}: snapshot {} covers LSNs below {from} but the journal does \
                     not continue from there (journal ends at {}, first record scanned {:?}); \
                     acknowledged data may be missing. Run `evring-inspect verify`; moving the \
                     snapshot aside makes evringd recover from the journal alone",
                    path.display(),
                    report.next_lsn,
                    rebuild.first_seen
                );
            }
        }
        tracing::info!(
            partition = p,
            shard = shard_id,
            segments = report.segments,
            frames = report.frames,
            events = rebuild.events,
            snapshot = snapshot_path.as_ref().map(|p| p.display().to_string()),
            snapshot_lsn = rebuild.from_lsn,
            next_lsn = report.next_lsn,
            bytes_scanned = report.bytes_scanned,
            torn_tail_zeroed = report.torn_tail_zeroed.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition recovered"
        );
        partitions.insert(p, Rc::new(Partition::new(p, journal, rebuild, limits)));
        // The partition's key-value engine: its own journal in p<N>/kv/.
        let kv_cfg = journal_cfg.clone();
        let engine =
            crate::engine::Engine::<KvModel>::builder(&format!("kv-p{p}"), kv_cfg.store_id)
                // JSON: the commands are JSON on the wire already, and their serde enums are
                // internally tagged, which the binary codec cannot decode.
                .codec(crate::engine::Codec::Json)
                .journal_config(|j| {
                    *j = kv_cfg;
                    j.partition = p;
                    j.segment_bytes = j.segment_bytes.min(64 << 20);
                })
                .command::<KvCommand>()
                .open(&dir.join("kv"))
                .await
                .map_err(|e| anyhow!("partition {p}: key-value store: {e}"))?;
        kv.insert(p, engine);
    }
    let listener =
        listen_on(bind_addr).map_err(|e| anyhow!("cannot listen on {bind_addr}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| anyhow!("listener address: {e}"))?;
    let shard_listener = match shard_addr {
        Some(a) => Some(
            listen_on(a)
                .map_err(|e| anyhow!("cannot listen on {a} (shard {shard_id}'s port): {e}"))?,
        ),
        None => None,
    };
    let shard_addr = match &shard_listener {
        Some(l) => Some(
            l.local_addr()
                .map_err(|e| anyhow!("shard listener address: {e}"))?,
        ),
        None => None,
    };
    ready_tx
        .send(Ok((addr, shard_addr)))
        .map_err(|_| anyhow!("start-up was abandoned"))?;
    // Wait for the shared state (set by the starter after shard 0 is up).
    let shared = loop {
        if let Some(s) = shared_slot.get() {
            break s.clone();
        }
        if stop_early.load(Ordering::Acquire) {
            return Ok(());
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    };
    // Connecting an endpoint waits for its peer, so receivers connect in their own tasks
    // while this one connects the senders (sequential connects would deadlock shards).
    let shard_rx: Rc<std::cell::RefCell<Option<Rc<Shard>>>> = Rc::default();
    for rx in ep.receivers {
        let cell = shard_rx.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            let shard = loop {
                if let Some(s) = cell.borrow().clone() {
                    break s;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            };
            shard.receive_loop(rx).await;
        })
        .detach();
    }
    let mut senders = Vec::new();
    for s in ep.senders {
        senders.push(match s {
            Some(s) => Some(s.connect().await),
            None => None,
        });
    }
    // A user's model runs on the shard that owns partition 0.
    let served = match model.filter(|_| shard_id == 0) {
        Some(f) => {
            let dir = data_dir.join(format!("model-{}", f.name()));
            let mut cfg = journal_cfg.clone();
            cfg.segment_bytes = cfg.segment_bytes.min(64 << 20);
            let service = f
                .open(dir, cfg)
                .await
                .map_err(|e| anyhow!("model {}: {e}", f.name()))?;
            Some((f.name().to_string(), service))
        }
        None => None,
    };
    if shared.config.views {
        for (&p, part) in &partitions {
            let _ = shared.views[p as usize].set(part.view());
        }
    }
    let shard = Shard::new(shard_id, shared.clone(), partitions, kv, served, senders);
    *shard_rx.borrow_mut() = Some(shard.clone());
    glommio::spawn_local(shard.clone().accept_loop(listener)).detach();
    if let Some(l) = shard_listener {
        glommio::spawn_local(shard.clone().accept_loop(l)).detach();
    }
    let policy = SnapshotPolicy::from_config(&shared.config);
    let jobs = Rc::new(glommio::sync::Semaphore::new(u64::from(
        shared.config.snapshot_max_jobs.max(1),
    )));
    let mut snapshot_tasks = Vec::new();
    if policy.enabled() {
        for (&id, part) in &shard.partitions {
            let dir = Manifest::partition_dir(&data_dir, id);
            let newest = crate::snapshot::list(&dir)
                .ok()
                .and_then(|l| l.first().map(|x| x.0))
                .unwrap_or(0);
            let (part, store) = (part.clone(), journal_cfg.store_id);
            let position = {
                let part = part.clone();
                move || part.published_lsn()
            };
            let take = async move || {
                let lsn = take_snapshot(&part, &dir, store, policy.keep)
                    .await
                    .map_err(|e| e.to_string())?;
                if policy.retention_bytes > 0 || policy.retention_age.is_some() {
                    apply_retention(&part, &dir, policy).await;
                }
                Ok(lsn)
            };
            let task = snapshot_loop(
                "stream",
                id,
                newest,
                0x9E37_79B9_7F4A_7C15,
                policy,
                shared.clone(),
                jobs.clone(),
                position,
                take,
            );
            snapshot_tasks.push(glommio::spawn_local(task));
        }
        for (id, service) in shard.models() {
            let position = {
                let service = service.clone();
                move || service.applied_lsn()
            };
            let start = service.applied_lsn();
            let take = async move || {
                service
                    .snapshot(policy.keep)
                    .await
                    .map_err(|e| e.to_string())
            };
            let task = snapshot_loop(
                "model",
                id,
                start,
                0xD1B5_4A32_D192_ED03,
                policy,
                shared.clone(),
                jobs.clone(),
                position,
                take,
            );
            snapshot_tasks.push(glommio::spawn_local(task));
        }
    }
    while !shared.stop.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(shard = shard_id, "stopping: draining in-flight frames");
    for t in snapshot_tasks {
        t.await;
    }
    for p in shard.partitions.values() {
        p.journal().close().await;
    }
    for (id, service) in shard.models() {
        service.close().await;
        if shared.config.snapshot_on_shutdown && service.applied_lsn() > 0 {
            if let Err(e) = service.snapshot(policy.keep).await {
                tracing::warn!(partition = id, error = %e, "final model snapshot failed");
            }
        }
    }
    if shared.config.snapshot_on_shutdown {
        for (&id, part) in &shard.partitions {
            if part.published_lsn() == 0 {
                continue;
            }
            let dir = Manifest::partition_dir(&data_dir, id);
            if let Err(e) = take_snapshot(part, &dir, journal_cfg.store_id, policy.keep).await {
                tracing::warn!(partition = id, error = %e, "final snapshot failed");
            }
        }
    }
    shard.shut_down_connections().await;
    Ok(())
}

/// When partitions are snapshotted (config keys `snapshot_*`) and how much journal they
/// keep (`retention_*`).
#[derive(Clone, Copy, Debug)]
struct SnapshotPolicy {
    every_events: u64,
    every: Option<Duration>,
    keep: usize,
    retention_bytes: u64,
    retention_age: Option<Duration>,
}

impl SnapshotPolicy {
    fn from_config(c: &Config) -> Self {
        SnapshotPolicy {
            every_events: c.snapshot_every_events,
            every: (c.snapshot_every_secs > 0)
                .then(|| Duration::from_secs(u64::from(c.snapshot_every_secs))),
            keep: c.snapshot_keep.max(1) as usize,
            retention_bytes: c.retention_max_bytes,
            retention_age: (c.retention_max_age_secs > 0)
                .then(|| Duration::from_secs(c.retention_max_age_secs)),
        }
    }
    fn enabled(&self) -> bool {
        self.every_events > 0 || self.every.is_some()
    }
}

/// The newest usable snapshot of partition `p`, turned into a rebuild start; snapshots that
/// cannot be used are logged with the reason and the next older one is tried.
fn load_snapshot(
    dir: &std::path::Path,
    store: crate::journal::StoreId,
    p: u32,
    limits: &PartitionLimits,
) -> Option<(Rebuild, crate::journal::Resume, std::path::PathBuf)> {
    let list = match crate::snapshot::list(dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(partition = p, error = %e, "cannot list snapshots; replaying the whole journal");
            return None;
        }
    };
    for (lsn, path) in list {
        let attempt = (|| -> Result<(Rebuild, crate::journal::Resume), String> {
            let image = read_partition_snapshot(&path, lsn, store, p)?;
            let resume = image.resume.clone();
            let rebuild = Rebuild::from_image(image, limits.idempotency_window, limits.ring)?;
            Ok((rebuild, resume))
        })();
        match attempt {
            Ok((rebuild, resume)) => return Some((rebuild, resume, path)),
            Err(reason) => tracing::warn!(
                partition = p,
                snapshot = %path.display(),
                %reason,
                "snapshot not usable; trying an older one (or the whole journal)"
            ),
        }
    }
    None
}

/// When the next snapshot of one partition or model is due, and the retry state after a
/// failure (exponential backoff with jitter).
struct Schedule {
    policy: SnapshotPolicy,
    last_lsn: u64,
    last_time: Instant,
    failures: u32,
    retry_at: Option<Instant>,
    seed: u64,
}

impl Schedule {
    fn new(policy: SnapshotPolicy, last_lsn: u64, seed: u64) -> Schedule {
        Schedule {
            policy,
            last_lsn,
            last_time: Instant::now(),
            failures: 0,
            retry_at: None,
            seed,
        }
    }

    /// Whether a snapshot is due now that the state is at `position` (published or applied
    /// LSN).
    fn due(&self, position: u64) -> bool {
        if position <= self.last_lsn || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        (self.policy.every_events > 0 && position - self.last_lsn >= self.policy.every_events)
            || self
                .policy
                .every
                .is_some_and(|every| self.last_time.elapsed() >= every)
            || self.retry_at.is_some()
    }

    fn succeeded(&mut self, lsn: u64) {
        self.last_lsn = lsn;
        self.last_time = Instant::now();
        self.failures = 0;
        self.retry_at = None;
    }

    /// Records a failure; returns how long until the retry.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        let wait = snapshot_backoff(self.failures, &mut self.seed);
        self.retry_at = Some(Instant::now() + wait);
        wait
    }
}

/// Runs `take` whenever the policy says a snapshot is due, given the state's position
/// (published or applied LSN) and the last snapshot's (`start` at first), until the server
/// stops. Failures are logged, counted and retried with exponential backoff and jitter; the
/// appends and commands the state serves never wait for them. One loop per partition's
/// streams and per model, at most `snapshot_max_jobs` of them taking a snapshot at once.
#[allow(clippy::too_many_arguments)]
async fn snapshot_loop(
    what: &'static str,
    partition: u32,
    start: u64,
    seed: u64,
    policy: SnapshotPolicy,
    shared: Arc<Shared>,
    jobs: Rc<glommio::sync::Semaphore>,
    position: impl Fn() -> u64,
    take: impl AsyncFn() -> Result<u64, String>,
) {
    let mut schedule = Schedule::new(policy, start, u64::from(partition) ^ seed);
    while !shared.stop.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        if !schedule.due(position()) {
            continue;
        }
        let Ok(_permit) = jobs.acquire_static_permit(1).await else {
            return;
        };
        match take().await {
            Ok(lsn) => schedule.succeeded(lsn),
            Err(e) => {
                metrics::counter!(crate::metrics::SNAPSHOT_FAILURES, "partition" => partition.to_string())
                    .increment(1);
                let wait = schedule.failed();
                tracing::warn!(partition, error = %e, failures = schedule.failures, retry_in_ms = wait.as_millis() as u64, "{what} snapshot failed; writes are not affected");
            }
        }
    }
}

/// The wait before retrying a failed snapshot: 1 s, 2 s, 4 s … up to 5 min, times a jitter
/// in [0.5, 1.5) drawn from `seed` (so partitions that failed together retry apart).
fn snapshot_backoff(failures: u32, seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let jitter = 0.5 + (*seed >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs(1 << failures.min(8))
        .min(Duration::from_secs(300))
        .mul_f64(jitter)
}

/// Deletes journal segments the retention policy no longer wants, but only those wholly
/// below the resume segment of the oldest snapshot kept (so every kept snapshot can still
/// be recovered from).
async fn apply_retention(part: &Partition, dir: &std::path::Path, policy: SnapshotPolicy) {
    let mut bound = u64::MAX;
    for (_, path) in crate::snapshot::list(dir).unwrap_or_default() {
        match crate::snapshot::read_meta(&path) {
            Ok(m) => bound = bound.min(m.resume_segment),
            // A kept snapshot we cannot read: delete nothing.
            Err(_) => return,
        }
    }
    if bound == u64::MAX {
        return;
    }
    let result = part
        .journal()
        .remove_segments_below(bound, |_, total, age| {
            (policy.retention_bytes > 0 && total > policy.retention_bytes)
                || policy.retention_age.is_some_and(|max| age > max)
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(partition = part.id, error = %e, "retention could not remove a segment");
    }
}

/// Copies the partition's state (on the shard), then encodes, writes and prunes on glommio's
/// blocking pool. Returns the snapshot's LSN.
async fn take_snapshot(
    part: &Partition,
    dir: &std::path::Path,
    store: crate::journal::StoreId,
    keep: usize,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let image = part.image_yielding().await;
    let copied = started.elapsed();
    let lsn = image.lsn;
    let meta = crate::snapshot::SnapshotMeta {
        kind: crate::snapshot::KIND_PARTITION,
        codec: crate::snapshot::CODEC_BINARY,
        partition: part.id,
        store_id: store,
        lsn,
        resume_segment: image.resume.first_segment,
    };
    let dir = dir.to_path_buf();
    let inject = std::env::var_os("EVRINGD_INJECT_SNAPSHOT_FAILURE").is_some();
    let (path, bytes) = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<(std::path::PathBuf, usize)> {
            crate::shard::off_shard_cpus();
            if inject {
                return Err(std::io::Error::other("injected snapshot failure"));
            }
            let body = image.encode();
            let path = crate::snapshot::write(&dir, &meta, &body)?;
            crate::snapshot::prune(&dir, keep)?;
            Ok((path, body.len()))
        })
        .await
        .context("writing the snapshot")?;
    let label = part.id.to_string();
    metrics::counter!(crate::metrics::SNAPSHOTS, "partition" => label.clone()).increment(1);
    metrics::histogram!(crate::metrics::SNAPSHOT_SECONDS, "partition" => label.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::gauge!(crate::metrics::SNAPSHOT_LSN, "partition" => label).set(lsn as f64);
    tracing::info!(
        partition = part.id,
        lsn,
        bytes,
        copy_ms = copied.as_secs_f64() * 1000.0,
        total_ms = started.elapsed().as_secs_f64() * 1000.0,
        path = %path.display(),
        "snapshot written"
    );
    Ok(lsn)
}

#[cfg(test)]
mod backoff_tests {
    #[test]
    fn snapshot_retries_back_off_exponentially_with_jitter_up_to_five_minutes() {
        let mut seed = 42;
        let waits: Vec<f64> = (1..=12)
            .map(|f| super::snapshot_backoff(f, &mut seed).as_secs_f64())
            .collect();
        for (i, w) in waits.iter().enumerate().take(8) {
            let base = f64::from(1u32 << (i + 1));
            assert!(
                *w >= 0.5 * base && *w < 1.5 * base,
                "failure {}: {w}",
                i + 1
            );
        }
        assert!(waits.iter().all(|w| *w < 1.5 * 300.0));
        let mut other = 7;
        assert_ne!(
            super::snapshot_backoff(3, &mut other),
            super::snapshot_backoff(3, &mut 42)
        );
    }
}
