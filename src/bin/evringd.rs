//! evringd: opens (recovering) every partition's journal on its own pinned shard and holds
//! the data directory until SIGINT or SIGTERM, then drains and exits 0.
//!
//! The network server is not built yet; this binary is the start-up and shutdown path it
//! will grow from: memlock check, manifest, one glommio executor per shard, recovery with
//! progress in the log, a clean close of every journal on a signal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use evring::constants::{FRAME_BYTES_MAX_DEFAULT, IN_FLIGHT_FRAMES_DEFAULT, SEGMENT_BYTES_DEFAULT};
use evring::journal::{GlommioStorage, Journal, JournalConfig};
use evring::manifest::Manifest;
use evring::shard::{executor_builder, io_memory_per_executor};

#[derive(Parser, Debug)]
#[command(
    name = "evringd",
    version,
    about = "evring server: durable event store"
)]
struct Args {
    /// Data directory (created if missing).
    #[arg(long, env = "EVRING_DATA_DIR", default_value = "./evring-data")]
    data_dir: PathBuf,
    /// Partition count at first start (default: the number of CPUs); kept in the manifest.
    #[arg(long, env = "EVRING_PARTITIONS")]
    partitions: Option<u32>,
    /// Size of each journal segment file in bytes.
    #[arg(long, env = "EVRING_SEGMENT_BYTES", default_value_t = SEGMENT_BYTES_DEFAULT)]
    segment_bytes: u64,
    /// Largest group-commit frame in bytes (a multiple of 4096).
    #[arg(long, env = "EVRING_FRAME_BYTES_MAX", default_value_t = FRAME_BYTES_MAX_DEFAULT)]
    frame_bytes_max: usize,
    /// Frames written at once per journal.
    #[arg(long, env = "EVRING_IN_FLIGHT_MAX", default_value_t = IN_FLIGHT_FRAMES_DEFAULT)]
    in_flight_max: usize,
    /// Do not pin shards to CPUs.
    #[arg(long)]
    no_pin: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVRING_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("evringd: {e:#}");
        std::process::exit(1);
    }
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; these calls only write to it and
    // to this thread's signal mask (inherited by the shard threads spawned afterwards).
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

fn run(args: Args) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let manifest = Manifest::load_or_init(&args.data_dir, args.partitions.unwrap_or(cpus as u32))?;
    let shards = (manifest.partitions as usize).min(cpus).max(1);
    io_memory_per_executor(shards)?;
    let mut probe = JournalConfig::new(manifest.store_id, 0);
    probe.segment_bytes = args.segment_bytes;
    probe.frame_bytes_max = args.frame_bytes_max;
    probe.in_flight_max = args.in_flight_max;
    probe.validate()?;
    tracing::info!(
        data_dir = %args.data_dir.display(),
        store_id = %evring::journal::hex(&manifest.store_id),
        partitions = manifest.partitions,
        shards,
        "starting evringd"
    );
    let signals = block_signals();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let mut threads = Vec::new();
    for shard in 0..shards {
        let partitions: Vec<u32> = (0..manifest.partitions)
            .filter(|p| *p as usize % shards == shard)
            .collect();
        let builder = executor_builder(
            &format!("evring-shard-{shard}"),
            (!args.no_pin).then_some(shard),
            shards,
        )?;
        let stop = stop.clone();
        let ready_tx = ready_tx.clone();
        let data_dir = args.data_dir.clone();
        let base = probe.clone();
        let handle = builder
            .spawn(move || async move {
                let mut journals = Vec::new();
                for p in partitions {
                    let opened = async {
                        let dir = Manifest::partition_dir(&data_dir, p);
                        let storage = GlommioStorage::open(&dir)
                            .with_context(|| format!("cannot open {}", dir.display()))?;
                        let mut cfg = base.clone();
                        cfg.partition = p;
                        let (journal, report) = Journal::open(storage, cfg, |_, _| {}).await?;
                        tracing::info!(
                            partition = p,
                            segments = report.segments,
                            frames = report.frames,
                            records = report.records,
                            next_lsn = report.next_lsn,
                            torn_tail_zeroed = report.torn_tail_zeroed.is_some(),
                            elapsed_ms = report.elapsed.as_millis() as u64,
                            "partition recovered"
                        );
                        anyhow::Ok(journal)
                    }
                    .await;
                    match opened {
                        Ok(j) => journals.push(j),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.context(format!("partition {p}"))));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                while !stop.load(Ordering::Acquire) {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                for j in &journals {
                    j.close().await;
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start shard {shard}: {e}"))?;
        threads.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop.store(true, Ordering::Release);
                return Err(e);
            }
            Err(_) => bail!("a shard thread exited during start-up"),
        }
    }
    tracing::info!("evringd ready: every partition recovered (network server not built yet; SIGINT/SIGTERM to stop)");
    let mut sig: libc::c_int = 0;
    // SAFETY: `signals` is an initialized sigset_t and `sig` a valid out-pointer.
    unsafe { libc::sigwait(&signals, &mut sig) };
    tracing::info!(signal = sig, "stopping: draining in-flight frames");
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join()
            .map_err(|e| anyhow::anyhow!("shard thread failed: {e:?}"))?;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}
