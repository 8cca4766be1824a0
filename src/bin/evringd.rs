//! evringd: the evring server. Flags and config handling only; the server is
//! `evring::server`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use evring::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "evringd",
    version,
    about = "evring server: a durable, thread-per-core event store",
    long_about = "evring server: a durable, thread-per-core event store.\n\n\
        Settings come from embedded defaults, then the TOML file given with --config, then \
        EVRING_<KEY> environment variables, then these flags (--set KEY=VALUE for any key). \
        --print-config shows the merged result.\n\n\
        Environment: EVRING_<KEY> sets configuration key <key> (EVRING_LISTEN, \
        EVRING_DATA_DIR, EVRING_AUTH_TOKEN, …). evringd ignores EVRING_ADDR and EVRING_TOKEN, \
        which the evring CLI reads, so a shell can export them for the CLI and still start \
        evringd; EVRING_LOG sets the log filter (info by default, e.g. EVRING_LOG=evring=debug). \
        Any other EVRING_* name is refused as a misspelt setting.",
    after_help = "Examples:\n  \
        evringd --data-dir /var/lib/evring --listen 0.0.0.0:7070\n  \
        evringd --config /etc/evring/evring.toml --set snapshot_every_secs=60\n  \
        EVRING_PARTITIONS=8 evringd --print-config"
)]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the merged configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Data directory (key: data_dir).
    #[arg(long)]
    data_dir: Option<String>,
    /// Client listener host:port; port 0 picks a free port (key: listen).
    #[arg(long)]
    listen: Option<String>,
    /// Partition count at first start; 0 = one per shard (key: partitions).
    #[arg(long)]
    partitions: Option<u32>,
    /// Once ready, write the bound addresses here: client=, metrics=, shard<i>= lines (key:
    /// addresses_file).
    #[arg(long)]
    addresses_file: Option<String>,
    /// Any setting, as KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() {
    if evring::cli::print_man_if_asked::<Args>() {
        return;
    }
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
    // to this thread's signal mask, which the shard threads spawned afterwards inherit, so
    // SIGINT/SIGTERM are delivered only through `sigwait` below.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut overrides: Vec<(String, String)> = Vec::new();
    if let Some(v) = args.data_dir {
        overrides.push(("data_dir".into(), format!("{v:?}")));
    }
    if let Some(v) = args.listen {
        overrides.push(("listen".into(), v));
    }
    if let Some(v) = args.partitions {
        overrides.push(("partitions".into(), v.to_string()));
    }
    if let Some(v) = args.addresses_file {
        overrides.push(("addresses_file".into(), format!("{v:?}")));
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv:?} is not KEY=VALUE"))?;
        overrides.push((k.trim().to_string(), v.trim().to_string()));
    }
    let config = Config::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let signals = block_signals();
    let addresses_file = config.addresses_file.clone();
    let server = evring::server::start(config)?;
    tracing::info!(
        client = %server.client_addr,
        resp = ?server.resp_addr,
        partitions = server.partitions,
        shards = server.shards,
        shard_ports = ?server.shard_addrs,
        "evringd ready"
    );
    if !addresses_file.is_empty() {
        let mut text = format!("client={}\n", server.client_addr);
        if let Some(m) = server.metrics_addr {
            text.push_str(&format!("metrics={m}\n"));
        }
        if let Some(r) = server.resp_addr {
            text.push_str(&format!("resp={r}\n"));
        }
        for (i, a) in server.shard_addrs.iter().enumerate() {
            text.push_str(&format!("shard{i}={a}\n"));
        }
        evring::durable::replace(std::path::Path::new(&addresses_file), text.as_bytes())
            .with_context(|| format!("cannot write addresses file {addresses_file}"))?;
    }
    let status = format!(
        "READY=1\nSTATUS=serving on {} ({} partitions, {} shards)\nMAINPID={}",
        server.client_addr,
        server.partitions,
        server.shards,
        std::process::id()
    );
    if let Err(e) = evring::notify::notify(&status) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
    let mut sig: libc::c_int = 0;
    // SAFETY: `signals` is an initialized sigset_t and `sig` a valid out-pointer.
    unsafe { libc::sigwait(&signals, &mut sig) };
    tracing::info!(
        signal = sig,
        "stopping: no new connections, draining in-flight frames"
    );
    if let Err(e) = evring::notify::notify("STOPPING=1\nSTATUS=draining in-flight frames") {
        tracing::warn!(error = %e, "cannot notify systemd of the stop");
    }
    server.stop()?;
    tracing::info!("stopped cleanly");
    Ok(())
}
