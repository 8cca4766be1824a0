//! `evring-bench network`: the real `evringd` over TCP.
//!
//! `C` connections, each driven by one thread that keeps `P` APPEND requests in flight on its
//! connection (pipelining: a new request leaves as soon as one is answered). Each request
//! carries `E` events of `B` data bytes to one of `N` streams chosen uniformly or by a Zipf
//! law (s = 0.99). Latency is request sent → reply received, which for APPEND means the
//! events' frame is durable. A warm-up period is not counted.
//!
//! Without `--addr`, the benchmark starts `evringd` itself (the binary next to this one) on
//! an ephemeral loopback port with a fresh data directory under `--dir`, and stops it after.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;

use evring::client::{Client, ReplyFuture};
use evring::protocol::{expected, Event, Request, Response};

use crate::driver::{Picker, Rng};
use crate::report;

#[derive(clap::Args)]
pub struct NetworkArgs {
    #[command(flatten)]
    common: crate::Common,
    /// An already running server; without it evringd is started here.
    #[arg(long)]
    addr: Option<String>,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, short = 'p', default_value_t = 1)]
    pipeline: usize,
    /// Events per APPEND.
    #[arg(long, default_value_t = 1)]
    events: usize,
    /// Data bytes per event.
    #[arg(long, default_value = "100", value_parser = report::parse_bytes)]
    payload: u64,
    /// Number of streams.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Stream popularity: uniform or zipf.
    #[arg(long, default_value = "uniform")]
    distribution: String,
    /// Not counted at the start of each run.
    #[arg(long, default_value = "1s", value_parser = report::parse_duration)]
    warmup: Duration,
    /// Extra `--set key=value` for the evringd started here (repeatable).
    #[arg(long = "server-set")]
    server_set: Vec<String>,
    /// Load driver: `poll` (non-blocking sockets and poll(2) in `--threads` threads, speaking
    /// the protocol directly) or `client` (the Rust client, one thread per connection).
    #[arg(long, default_value = "poll")]
    driver: String,
    /// Threads of the poll driver (connections are split among them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Send PING instead of APPEND (poll driver): the ceiling of the server's network path
    /// on this machine, with no journal write behind the reply.
    #[arg(long)]
    ping: bool,
}

/// What each request carries: an APPEND of `events` events of `payload` bytes to one of
/// the streams the picker chooses.
struct Load {
    events: usize,
    payload: usize,
}

impl Load {
    fn new(events: usize, payload: usize) -> Load {
        Load { events, payload }
    }

    fn request(&self, picker: &Picker, rng: &mut Rng, conn: u32, seq: u64) -> Request {
        Request::Append {
            stream: crate::codecs::stream_name(picker.pick(rng)),
            expected_version: expected::ANY,
            events: (0..self.events)
                .map(|j| Event {
                    id: [0; 16],
                    event_type: "bench".into(),
                    timestamp_ns: 0,
                    value: 1.0,
                    data: crate::codecs::payload(conn, seq, j, self.payload),
                    metadata: Vec::new(),
                })
                .collect(),
        }
    }
}

/// evringd started for the run; stopped on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    data: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address evringd wrote for `key` in its addresses file once ready: `client`,
    /// `metrics`, or `shard<i>` (with `shard_ports` set).
    pub fn address(&self, key: &str) -> anyhow::Result<String> {
        let file = self.data.with_extension("addr");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {key}= in {}", file.display()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

pub fn start_server(dir: &Path, sets: &[String]) -> anyhow::Result<Server> {
    let data = dir.join("network-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(dir)?;
    let (child, addr) = spawn_evringd(&data, sets)?;
    Ok(Server { child, addr, data })
}

/// Starts the evringd next to this binary on `data` (kept as it is) and an ephemeral
/// loopback port; returns once it serves.
pub fn spawn_evringd(data: &Path, sets: &[String]) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?;
    let evringd = exe.with_file_name("evringd");
    if !evringd.exists() {
        bail!(
            "{} not found: build it with `cargo build --release` or pass --addr",
            evringd.display()
        );
    }
    let addr_file = data.with_extension("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut cmd = Command::new(&evringd);
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--addresses-file"])
        .arg(&addr_file)
        .args(["--set", "metrics_listen=\"\"", "--set", "resp_listen=\"\""])
        .env("EVRING_LOG", "warn")
        .stdout(Stdio::null());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let mut child = cmd.spawn().context("start evringd")?;
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("client=")) {
                return Ok((child, addr.to_string()));
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("evringd exited during start-up: {status}");
        }
        if t0.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            bail!("evringd did not become ready in 600 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub struct NetResult {
    pub requests: u64,
    pub events: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl NetResult {
    pub fn row(&self, name: &str) -> report::Row {
        let secs = self.elapsed.as_secs_f64();
        report::Row::new(name)
            .cell("requests/s", format!("{:.0}", self.requests as f64 / secs))
            .cell("events/s", format!("{:.0}", self.events as f64 / secs))
            .cell("errors", self.errors.to_string())
            .latency(&self.latency)
    }
}

struct Params {
    pipeline: usize,
    events: usize,
    payload: usize,
    warmup: Duration,
    duration: Duration,
}

/// Polls every in-flight reply once; returns the indices that completed.
fn wait_any(
    inflight: &mut [(ReplyFuture, Instant)],
) -> Vec<(usize, Result<Response, evring::client::ClientError>)> {
    futures_lite::future::block_on(std::future::poll_fn(|cx| {
        let mut done = Vec::new();
        for (i, (fut, _)) in inflight.iter_mut().enumerate() {
            if let Poll::Ready(r) = Pin::new(fut).poll(cx) {
                done.push((i, r));
            }
        }
        if done.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(done)
        }
    }))
}

fn connection(
    addr: &str,
    id: usize,
    p: &Params,
    picker: &Picker,
    start: Instant,
) -> anyhow::Result<NetResult> {
    let client = Client::connect(addr, &format!("bench-{id}"), "")
        .map_err(|e| anyhow!("connect to {addr}: {e}"))?;
    let mut rng = Rng::new(id as u64 + 1);
    let load = Load::new(p.events, p.payload);
    let mut seq = 0u64;
    let mut request = |rng: &mut Rng| {
        seq += 1;
        load.request(picker, rng, id as u32, seq)
    };
    let measure_from = start + p.warmup;
    let deadline = measure_from + p.duration;
    let mut latency = report::histogram();
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut inflight: Vec<(ReplyFuture, Instant)> = (0..p.pipeline)
        .map(|_| (client.request(&request(&mut rng)), Instant::now()))
        .collect();
    while !inflight.is_empty() {
        let mut done = wait_any(&mut inflight);
        let now = Instant::now();
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (i, result) in done {
            let (_, sent) = inflight.swap_remove(i);
            let counted = sent >= measure_from && now <= deadline;
            match result {
                Ok(Response::Appended(_)) if counted => {
                    requests += 1;
                    report::record(&mut latency, now - sent);
                }
                Ok(Response::Appended(_)) => {}
                Ok(Response::Error { code, message, .. }) => {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("connection {id}: error {code}: {message}");
                    }
                }
                Ok(other) => bail!("unexpected reply {other:?}"),
                Err(e) => bail!("connection {id}: {e}"),
            }
        }
        while inflight.len() < p.pipeline && Instant::now() < deadline {
            inflight.push((client.request(&request(&mut rng)), Instant::now()));
        }
    }
    Ok(NetResult {
        requests,
        events: requests * p.events as u64,
        errors,
        elapsed: p.duration,
        latency,
    })
}

/// One run with the poll driver (`driver.rs`, speaking the protocol through `EvringCodec`).
fn poll_run(addr: &str, a: &NetworkArgs) -> anyhow::Result<NetResult> {
    let w = crate::workload::Workload {
        name: "network".into(),
        connections: a.connections.max(1),
        pipeline: a.pipeline.max(1),
        events_per_request: a.events.max(1),
        payload_bytes: a.payload as usize,
        streams: a.streams.max(1),
        distribution: a.distribution.clone(),
        duration: a.common.duration,
        warmup: a.warmup,
        kind: if a.ping { "ping" } else { "append" }.into(),
        ..Default::default()
    };
    let r = crate::driver::run(
        &w,
        addr,
        a.threads,
        false,
        crate::codecs::EvringCodec::default,
    )?;
    Ok(NetResult {
        requests: r.appends + r.pings,
        events: r.appends * w.events_per_request as u64,
        errors: r.errors,
        elapsed: a.common.duration,
        latency: r.latency,
    })
}

fn one_run(addr: &str, a: &NetworkArgs, picker: &Arc<Picker>) -> anyhow::Result<NetResult> {
    match a.driver.as_str() {
        "poll" => return poll_run(addr, a),
        "client" if a.ping => bail!("--ping needs the poll driver"),
        "client" => {}
        other => bail!("unknown driver {other:?} (poll, client)"),
    }
    let params = Arc::new(Params {
        pipeline: a.pipeline.max(1),
        events: a.events.max(1),
        payload: a.payload as usize,
        warmup: a.warmup,
        duration: a.common.duration,
    });
    let start = Instant::now();
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for id in 0..a.connections.max(1) {
        let (addr, params, picker, results) = (
            addr.to_string(),
            params.clone(),
            picker.clone(),
            results.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let r = connection(&addr, id, &params, &picker, start);
            results.lock().expect("results").push(r);
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let mut total = NetResult {
        requests: 0,
        events: 0,
        errors: 0,
        elapsed: a.common.duration,
        latency: report::histogram(),
    };
    for r in results.lock().expect("results").drain(..) {
        let r = r?;
        total.requests += r.requests;
        total.events += r.events;
        total.errors += r.errors;
        total.latency.add(&r.latency).expect("same bounds");
    }
    Ok(total)
}

/// VmHWM (peak resident set) of a process, in KiB; 0 if unreadable.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub fn main(a: NetworkArgs) -> anyhow::Result<()> {
    let picker = Arc::new(Picker::new(a.streams.max(1), &a.distribution)?);
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for i in 0..a.common.runs.max(1) {
        // A fresh server per run: every run starts from an empty journal.
        let server = match &a.addr {
            Some(_) => None,
            None => Some(start_server(&a.common.dir, &a.server_set)?),
        };
        let addr = a
            .addr
            .clone()
            .or_else(|| server.as_ref().map(|s| s.addr.clone()))
            .expect("an address");
        let r = one_run(&addr, &a, &picker)?;
        let mut row = r.row(&format!("evring run {}", i + 1));
        if let Some(s) = &server {
            row = row.cell(
                "server peak RSS MiB",
                format!("{:.1}", peak_rss_kib(s.child.id()) as f64 / 1024.0),
            );
        }
        drop(server);
        rows.push(row);
        runs.push(r);
    }
    let med = crate::median_by(runs, |r| r.requests as f64);
    let what = if a.ping {
        "PING".to_string()
    } else {
        format!(
            "{} ev x {}B, {} {} streams",
            a.events, a.payload, a.streams, a.distribution
        )
    };
    rows.push(med.row(&format!(
        "evring {}c x {}p, {what}, {} driver, median",
        a.connections, a.pipeline, a.driver
    )));
    report::print(&rows, a.common.json);
    Ok(())
}
