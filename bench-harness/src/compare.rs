//! `evring-bench compare WORKLOAD.toml`: one workload against evring and the systems users
//! would run instead, interleaved round by round (A B C … A B C …) so every target sees the
//! same disk weather, through one driver (`driver.rs`) that speaks each protocol.
//!
//! Targets: `evring` (a fresh evringd per round), `evring-resp` (a fresh evringd per round,
//! driven through its RESP port with the Redis targets' codec and commands: XADD, a request of
//! n events as MULTI, n × XADD, EXEC), `redis-always` (Redis Streams, AOF fsynced on every
//! write), `redis-nopersist` (Redis without persistence: the in-memory reference
//! line), `postgres` (INSERTs into an events table, `synchronous_commit = on`), `disk` (the
//! raw device: O_DSYNC writes of one request's journal frame, 4 in flight — the ceiling any
//! durable store has on this disk at that write size), `floor` and `floor-native` (a minimal
//! io_uring server in this process answering PING, `floor.rs`, driven with RESP and with
//! evring's frames: the ceiling of the network path on this machine; ping workloads only),
//! `floor-durable` and `floor-durable-native` (the same server made durable: XADD and APPEND
//! bytes written to a file with `O_DIRECT | O_DSYNC` by group commit, replied to after their
//! write: the ceiling of durable single-event appends on this machine; append workloads of
//! one event per request only).
//!
//! Output: a table of medians over the rounds with min–max, the ratio evring/target (and
//! evring-resp/target, and target/floor) per round and its median, a JSON document and two SVG charts (throughput per target, latency
//! percentile curves) in `--out`. `--verify` reads back every event evring acknowledged and
//! fails if one is missing or differs, and fails unless evring-resp's streams hold exactly
//! the XADDs it acknowledged (`XLEN` of every stream; an XADD reply carries no version).
//!
//! A `kind = "groups-consume"` workload runs `consume.rs` instead of the append driver, on
//! the RESP targets only (evring-resp, redis-always, redis-nopersist): an event is an entry
//! consumed and acknowledged, a request one XREADGROUP + XACK round. Its checks run in every
//! round with or without `--verify`, and a failed check fails the comparison.
//!
//! A `kind = "ping"` workload sends PINGs through the same driver (evring's PING frame to
//! `evring` and `floor-native`, RESP `PING` to the others) on evring, evring-resp, the Redis
//! targets and the floors; a PING counts as one event (events/s = requests/s), nothing is
//! written and `--verify` has nothing to check. Every target is also compared with the floors
//! when they ran: how close each comes to this machine's ceiling for the same work.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::codecs::{self, EvringCodec, PgCodec, RespCodec};
use crate::driver::{self, Acked, DriverResult};
use crate::report;
use crate::workload::Workload;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Workload file (TOML; see bench-harness/workloads/).
    workload: PathBuf,
    /// Comma-separated targets: evring, evring-resp, redis-always, redis-nopersist, postgres,
    /// disk, floor, floor-native, floor-durable, floor-durable-native. Default: all but the
    /// floors; for a ping workload evring,
    /// evring-resp, redis-nopersist, floor, floor-native.
    #[arg(long)]
    targets: Option<String>,
    /// Rounds; each runs every target once, in order.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Directory for servers' data and the raw-disk file (on the disk to measure).
    #[arg(long, default_value = "./target/evring-bench")]
    dir: PathBuf,
    /// Where the JSON and SVG charts go (default: DIR/compare).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Read back every event evring acknowledged; fail if one is missing or differs. For
    /// evring-resp: fail unless its streams hold exactly the XADDs acknowledged.
    #[arg(long)]
    verify: bool,
    /// For the test of --verify: pretend one more event was acknowledged than was written.
    #[arg(long, hide = true)]
    verify_fault: bool,
    /// Driver threads (the client shares the machine with the server: keep it small).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Extra `--set key=value` for evringd (repeatable).
    #[arg(long = "server-set")]
    server_set: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    Evring,
    EvringResp,
    RedisAlways,
    RedisNoPersist,
    Postgres,
    Disk,
    Floor,
    FloorNative,
    FloorDurable,
    FloorDurableNative,
}

const DEFAULT_TARGETS: &str = "evring,evring-resp,redis-always,redis-nopersist,postgres,disk";
const DEFAULT_PING_TARGETS: &str = "evring,evring-resp,redis-nopersist,floor,floor-native";

impl Target {
    fn parse(s: &str) -> anyhow::Result<Target> {
        Ok(match s.trim() {
            "evring" => Target::Evring,
            "evring-resp" => Target::EvringResp,
            "redis-always" => Target::RedisAlways,
            "redis-nopersist" => Target::RedisNoPersist,
            "postgres" => Target::Postgres,
            "disk" => Target::Disk,
            "floor" => Target::Floor,
            "floor-native" => Target::FloorNative,
            "floor-durable" => Target::FloorDurable,
            "floor-durable-native" => Target::FloorDurableNative,
            other => bail!(
                "unknown target {other:?} (evring, evring-resp, redis-always, redis-nopersist, postgres, disk, floor, floor-native, floor-durable, floor-durable-native)"
            ),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Target::Evring => "evring",
            Target::EvringResp => "evring-resp",
            Target::RedisAlways => "redis-always",
            Target::RedisNoPersist => "redis-nopersist",
            Target::Postgres => "postgres",
            Target::Disk => "disk",
            Target::Floor => "floor",
            Target::FloorNative => "floor-native",
            Target::FloorDurable => "floor-durable",
            Target::FloorDurableNative => "floor-durable-native",
        }
    }
    /// What the target does before it replies (for a ping workload: how it answers).
    fn durability(self, w: &Workload) -> &'static str {
        match self {
            Target::Evring if w.ping() => "evring's PING frame, answered by the shard, nothing written",
            Target::EvringResp if w.ping() => {
                "RESP PING on evringd's RESP port, answered by the shard, nothing written"
            }
            Target::Evring => "acknowledged after the O_DSYNC write of its journal frame",
            Target::EvringResp => {
                "the RESP port: XADD (MULTI/EXEC: one journal frame), XREADGROUP, XACK replied after their O_DSYNC write"
            }
            Target::RedisAlways => {
                "appendonly yes, appendfsync always: fsync of the AOF before the reply"
            }
            Target::RedisNoPersist => "no persistence (in-memory reference, not durable)",
            Target::Postgres => "synchronous_commit = on, fsync = on: COMMIT after the WAL flush",
            Target::Disk => "raw O_DSYNC writes of one request's frame, 4 in flight (ceiling)",
            Target::Floor => {
                "a minimal io_uring server on CPU 0 answering RESP PING, nothing stored (ceiling)"
            }
            Target::FloorNative => {
                "the same floor server answering evring's PING frame, nothing stored (ceiling)"
            }
            Target::FloorDurable => {
                "the floor server, XADD's bytes in an O_DSYNC group-commit write before the reply (ceiling)"
            }
            Target::FloorDurableNative => {
                "the floor server, APPEND's bytes in an O_DSYNC group-commit write before the reply (ceiling)"
            }
        }
    }
    fn is_floor(self) -> bool {
        self.is_ping_floor() || self.is_durable_floor()
    }
    fn is_ping_floor(self) -> bool {
        matches!(self, Target::Floor | Target::FloorNative)
    }
    fn is_durable_floor(self) -> bool {
        matches!(self, Target::FloorDurable | Target::FloorDurableNative)
    }
}

/// One target's figures in one round.
#[derive(Clone, Debug)]
pub struct RoundResult {
    target: Target,
    round: usize,
    requests_per_s: f64,
    events_per_s: f64,
    bytes_per_s: f64,
    errors: u64,
    latency: Histogram<u64>,
    server_rss_mib: Option<f64>,
}

const QUANTILES: [f64; 7] = [0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0];

impl RoundResult {
    fn from_consume(
        t: Target,
        round: usize,
        w: &Workload,
        r: &crate::consume::ConsumeResult,
    ) -> RoundResult {
        let secs = w.duration.as_secs_f64();
        RoundResult {
            target: t,
            round,
            requests_per_s: r.rounds as f64 / secs,
            events_per_s: r.entries as f64 / secs,
            bytes_per_s: (r.entries * w.payload_bytes as u64) as f64 / secs,
            errors: 0,
            latency: r.latency.clone(),
            server_rss_mib: None,
        }
    }

    fn from_driver(t: Target, round: usize, w: &Workload, r: &DriverResult) -> RoundResult {
        let secs = w.duration.as_secs_f64();
        // A PING is one event, of no bytes.
        let (events, bytes) = if w.ping() {
            (r.pings, 0)
        } else {
            let events = r.appends * w.events_per_request as u64;
            (events, events * w.payload_bytes as u64)
        };
        RoundResult {
            target: t,
            round,
            requests_per_s: (r.appends + r.reads + r.pings) as f64 / secs,
            events_per_s: events as f64 / secs,
            bytes_per_s: bytes as f64 / secs,
            errors: r.errors,
            latency: r.latency.clone(),
            server_rss_mib: None,
        }
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    fn json(&self) -> Value {
        json!({
            "target": self.target.name(),
            "round": self.round,
            "requests_per_s": self.requests_per_s,
            "events_per_s": self.events_per_s,
            "bytes_per_s": self.bytes_per_s,
            "errors": self.errors,
            "latency_ms": QUANTILES.iter().map(|&q| json!({"quantile": q, "ms": self.ms(q)})).collect::<Vec<_>>(),
            "server_peak_rss_mib": self.server_rss_mib,
        })
    }
}

/// Median of a list (the upper middle for even lengths).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// evring / peer per round (rounds where both ran), and their median.
pub fn ratios(evring: &[f64], peer: &[f64]) -> (Vec<f64>, f64) {
    let per_round: Vec<f64> = evring
        .iter()
        .zip(peer)
        .map(|(e, p)| if *p > 0.0 { e / p } else { f64::INFINITY })
        .collect();
    let m = median(&per_round);
    (per_round, m)
}

fn frame_bytes(w: &Workload) -> usize {
    // Frame header 96 + per record: 72-byte header, stream name, type "bench", data, aligned
    // to 8 — the journal frame one request makes, rounded up to 4 KiB.
    let record = (72 + 6 + 5 + w.payload_bytes).div_ceil(8) * 8;
    (96 + w.events_per_request * record).div_ceil(4096) * 4096
}

fn run_target(
    t: Target,
    round: usize,
    w: &Workload,
    a: &CompareArgs,
    pg: Option<&crate::peers::PgCluster>,
    acked: &mut Vec<(Vec<Acked>, Option<String>)>,
) -> anyhow::Result<RoundResult> {
    let threads = a.threads;
    // Nothing is appended in a ping workload: nothing to read back.
    let verifying = a.verify && !w.ping();
    match t {
        Target::Evring => {
            let server = crate::network::start_server(&a.dir, &a.server_set)?;
            let r = driver::run(w, &server.addr, threads, verifying, EvringCodec::default)?;
            let mut rr = RoundResult::from_driver(t, round, w, &r);
            rr.server_rss_mib = Some(crate::network::peak_rss_kib(server.pid()) as f64 / 1024.0);
            if verifying {
                let mut list = r.acked;
                if a.verify_fault {
                    // One more acknowledgement than the server ever gave: verify must fail.
                    if let Some(last) = list.last().copied() {
                        list.push(Acked {
                            first_version: last.first_version + 1_000_000,
                            ..last
                        });
                    }
                }
                let outcome = verify(&server.addr, &list, w.payload_bytes).err();
                acked.push((list, outcome.map(|e| format!("{e:#}"))));
            }
            Ok(rr)
        }
        Target::EvringResp => {
            // The same server as `evring` (defaults, fresh data), its RESP port on an
            // ephemeral loopback port; the load goes through the Redis targets' codec.
            let mut sets = vec![r#"resp_listen="127.0.0.1:0""#.to_string()];
            sets.extend(a.server_set.iter().cloned());
            let server = crate::network::start_server(&a.dir, &sets)?;
            let addr = server.address("resp")?;
            if w.consume() {
                let r = crate::consume::run(w, &addr)?;
                let mut rr = RoundResult::from_consume(t, round, w, &r);
                rr.server_rss_mib =
                    Some(crate::network::peak_rss_kib(server.pid()) as f64 / 1024.0);
                return Ok(rr);
            }
            let r = driver::run(w, &addr, threads, false, RespCodec::default)?;
            let mut rr = RoundResult::from_driver(t, round, w, &r);
            rr.server_rss_mib = Some(crate::network::peak_rss_kib(server.pid()) as f64 / 1024.0);
            if verifying {
                // XADD replies carry no version to read back by: check the count instead.
                // --verify-fault: one more acknowledgement than the server gave.
                let acked_events = r.acked_events + u64::from(a.verify_fault);
                let outcome = verify_count(&addr, w.streams, acked_events).err();
                acked.push((Vec::new(), outcome.map(|e| format!("{e:#}"))));
            }
            Ok(rr)
        }
        Target::RedisAlways | Target::RedisNoPersist => {
            let peer = crate::peers::redis(&a.dir, t == Target::RedisAlways)?;
            if w.consume() {
                let r = crate::consume::run(w, &peer.addr)?;
                let mut rr = RoundResult::from_consume(t, round, w, &r);
                rr.server_rss_mib = Some(crate::network::peak_rss_kib(peer.pid()) as f64 / 1024.0);
                return Ok(rr);
            }
            let r = driver::run(w, &peer.addr, threads, false, RespCodec::default)?;
            let mut rr = RoundResult::from_driver(t, round, w, &r);
            rr.server_rss_mib = Some(crate::network::peak_rss_kib(peer.pid()) as f64 / 1024.0);
            Ok(rr)
        }
        Target::Postgres => {
            let cluster = pg.expect("the cluster is initialised before the rounds");
            let peer = cluster.start()?;
            let r = driver::run(w, &peer.addr, threads, false, PgCodec::default)?;
            // (PostgreSQL's memory is spread over a process per connection: not reported.)
            Ok(RoundResult::from_driver(t, round, w, &r))
        }
        Target::Floor => {
            let floor = crate::floor::Floor::start(None)?;
            let r = driver::run(w, floor.addr(), threads, false, RespCodec::default)?;
            Ok(RoundResult::from_driver(t, round, w, &r))
        }
        Target::FloorNative => {
            let floor = crate::floor::Floor::start(None)?;
            let r = driver::run(w, floor.addr(), threads, false, EvringCodec::default)?;
            Ok(RoundResult::from_driver(t, round, w, &r))
        }
        Target::FloorDurable | Target::FloorDurableNative => {
            let file = a.dir.join("floor-journal.dat");
            let floor = crate::floor::Floor::start(Some(&file))?;
            let r = if t == Target::FloorDurable {
                driver::run(w, floor.addr(), threads, false, RespCodec::default)?
            } else {
                driver::run(w, floor.addr(), threads, false, EvringCodec::default)?
            };
            drop(floor);
            let _ = std::fs::remove_file(&file);
            Ok(RoundResult::from_driver(t, round, w, &r))
        }
        Target::Disk => {
            let file = a.dir.join("disk-bench.dat");
            let frame = frame_bytes(w);
            let d = crate::disk::run(&file, 256 << 20, frame, 4, w.duration, true)?;
            let secs = d.elapsed.as_secs_f64();
            let writes = d.flushes as f64 / secs;
            Ok(RoundResult {
                target: t,
                round,
                requests_per_s: writes,
                events_per_s: writes * w.events_per_request as f64,
                bytes_per_s: writes * (w.events_per_request * w.payload_bytes) as f64,
                errors: 0,
                latency: d.latency,
                server_rss_mib: None,
            })
        }
    }
}

/// Counts the entries of every stream on a RESP port (`XLEN`, pipelined) and fails unless
/// they are exactly the acknowledged XADDs.
fn verify_count(addr: &str, streams: usize, acked: u64) -> anyhow::Result<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).context("connect for --verify")?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut out = Vec::new();
    for i in 0..streams {
        codecs::resp_command(&mut out, &[b"XLEN", codecs::stream_name(i).as_bytes()]);
    }
    s.write_all(&out)?;
    let (mut buf, mut at, mut seen, mut total) = (Vec::new(), 0, 0, 0u64);
    let mut chunk = [0u8; 16 * 1024];
    while seen < streams {
        match codecs::resp_value(&buf[at..])? {
            Some((len, None)) if buf[at] == b':' => {
                total += std::str::from_utf8(&buf[at + 1..at + len - 2])?.parse::<u64>()?;
                at += len;
                seen += 1;
            }
            Some((_, e)) => bail!("XLEN answered {e:?}, not an integer"),
            None => {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    bail!("the server closed the connection during --verify");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    if total != acked {
        bail!("{total} entries in the streams, {acked} XADDs acknowledged");
    }
    Ok(total)
}

/// Reads back every acknowledged append and compares the events with what was sent.
fn verify(addr: &str, acked: &[Acked], payload_bytes: usize) -> anyhow::Result<u64> {
    let client = evring::client::BlockingClient::connect(addr, "evring-bench-verify", "")
        .context("connect for --verify")?;
    let mut by_stream: HashMap<u32, Vec<&Acked>> = HashMap::new();
    for a in acked {
        by_stream.entry(a.stream).or_default().push(a);
    }
    let mut checked = 0u64;
    for (stream, list) in by_stream {
        let name = codecs::stream_name(stream as usize);
        let mut all = Vec::new();
        loop {
            let (events, end) = client
                .read(
                    &name,
                    all.len() as u64,
                    10_000,
                    evring::protocol::Direction::Forward,
                )
                .with_context(|| format!("read {name}"))?;
            let n = events.len();
            all.extend(events.into_iter().map(|e| e.event.data));
            if end || n == 0 {
                break;
            }
        }
        for a in list {
            for j in 0..a.events as usize {
                let v = a.first_version as usize + j;
                let want = codecs::payload(a.conn, a.seq, j, payload_bytes);
                match all.get(v) {
                    None => bail!(
                        "acknowledged event {name} v{v} is missing ({} events in the stream)",
                        all.len()
                    ),
                    Some(d) if *d != want => {
                        bail!("acknowledged event {name} v{v} differs from what was sent")
                    }
                    Some(_) => checked += 1,
                }
            }
        }
    }
    Ok(checked)
}

pub fn main(a: CompareArgs) -> anyhow::Result<()> {
    let w = Workload::load(&a.workload)?;
    let mut targets = Vec::new();
    let default = if w.ping() {
        DEFAULT_PING_TARGETS
    } else {
        DEFAULT_TARGETS
    };
    let listed = a.targets.as_deref().unwrap_or(default);
    for t in listed.split(',').filter(|s| !s.trim().is_empty()) {
        let t = Target::parse(t)?;
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    if targets.is_empty() {
        bail!("no targets");
    }
    if w.consume() {
        let resp = [
            Target::EvringResp,
            Target::RedisAlways,
            Target::RedisNoPersist,
        ];
        if let Some(t) = targets.iter().find(|t| !resp.contains(t)) {
            bail!(
                "{}: a groups-consume workload runs on the RESP targets only (evring-resp, redis-always, redis-nopersist)",
                t.name()
            );
        }
    }
    if w.ping() {
        if let Some(t) = targets
            .iter()
            .find(|t| matches!(t, Target::Postgres | Target::Disk) || t.is_durable_floor())
        {
            bail!(
                "{}: a ping workload runs on evring, evring-resp, redis-always, redis-nopersist, floor and floor-native",
                t.name()
            );
        }
        if a.verify {
            eprintln!(
                "--verify: a ping workload appends nothing, so there is nothing to read back"
            );
        }
    } else if let Some(t) = targets.iter().find(|t| t.is_ping_floor()) {
        bail!(
            "{}: this floor answers PING only; use it with a kind = \"ping\" workload (or floor-durable, floor-durable-native with appends)",
            t.name()
        );
    } else if let Some(t) = targets.iter().find(|t| t.is_durable_floor()) {
        if w.consume() || w.events_per_request != 1 || w.read_fraction > 0.0 {
            bail!(
                "{}: the durable floor serves appends of one event per request only (no reads, no groups)",
                t.name()
            );
        }
    }
    std::fs::create_dir_all(&a.dir)?;
    let out = a.out.clone().unwrap_or_else(|| a.dir.join("compare"));
    std::fs::create_dir_all(&out)?;
    eprintln!("workload {}", w.describe());
    // PostgreSQL takes seconds to initialise: one cluster for all rounds, started and
    // stopped around each of its rounds (the table recreated each time).
    let pg = if targets.contains(&Target::Postgres) {
        Some(crate::peers::postgres_init(&a.dir)?)
    } else {
        None
    };
    let mut results: Vec<RoundResult> = Vec::new();
    let mut verified: Vec<(Vec<Acked>, Option<String>)> = Vec::new();
    for round in 1..=a.rounds.max(1) {
        for &t in &targets {
            let r = run_target(t, round, &w, &a, pg.as_ref(), &mut verified)
                .with_context(|| format!("round {round}, target {}", t.name()))?;
            eprintln!(
                "round {round} {:<16} {:>10.0} req/s {:>10.0} events/s  p50 {:.3} ms  p99 {:.3} ms  errors {}",
                t.name(),
                r.requests_per_s,
                r.events_per_s,
                r.ms(0.5),
                r.ms(0.99),
                r.errors
            );
            results.push(r);
        }
    }
    drop(pg);
    let summary = summarize(&w, &targets, &results);
    report::print(&summary.rows, false);
    println!();
    report::print(&summary.ratio_rows, false);
    for t in &targets {
        println!("  {:<16} {}", t.name(), t.durability(&w));
    }
    let verifying = a.verify && !w.ping();
    let verify_doc = if verifying {
        let failures: Vec<&String> = verified.iter().filter_map(|(_, e)| e.as_ref()).collect();
        let events: u64 = verified
            .iter()
            .flat_map(|(l, _)| l.iter().map(|a| u64::from(a.events)))
            .sum();
        json!({"acknowledged_events": events, "failures": failures})
    } else {
        Value::Null
    };
    let doc = json!({
        "workload": {
            "name": w.name, "connections": w.connections, "pipeline": w.pipeline,
            "rate": w.rate, "events_per_request": w.events_per_request,
            "payload_bytes": w.payload_bytes, "streams": w.streams,
            "distribution": w.distribution, "expected_version": w.expected_version,
            "read_fraction": w.read_fraction, "duration_s": w.duration.as_secs_f64(),
            "warmup_s": w.warmup.as_secs_f64(), "kind": w.kind, "count": w.count,
            "prefill": w.prefill,
        },
        "rounds": results.iter().map(RoundResult::json).collect::<Vec<_>>(),
        "summary": summary.json,
        "ratios": summary.ratio_json,
        "durability": targets.iter().map(|t| json!({"target": t.name(), "setting": t.durability(&w)})).collect::<Vec<_>>(),
        "verify": verify_doc,
    });
    let json_path = out.join(format!("{}.json", w.name));
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)?;
    crate::charts::throughput(
        &out.join(format!("{}-throughput.svg", w.name)),
        &w,
        &summary.json,
    )?;
    crate::charts::latency(
        &out.join(format!("{}-latency.svg", w.name)),
        &w,
        &summary.json,
    )?;
    eprintln!("wrote {} and its charts", json_path.display());
    if verifying {
        let failures: Vec<&String> = verified.iter().filter_map(|(_, e)| e.as_ref()).collect();
        if let Some(f) = failures.first() {
            bail!("--verify failed: {f}");
        }
        let events: u64 = verified
            .iter()
            .flat_map(|(l, _)| l.iter().map(|a| u64::from(a.events)))
            .sum();
        if targets.contains(&Target::Evring) {
            println!("verify: all {events} acknowledged evring events read back identical");
        }
        if targets.contains(&Target::EvringResp) && !w.consume() {
            println!("verify: evring-resp's streams held exactly the XADDs acknowledged");
        }
    }
    Ok(())
}

struct Summary {
    rows: Vec<report::Row>,
    ratio_rows: Vec<report::Row>,
    json: Value,
    ratio_json: Value,
}

/// Which ratios a comparison reports: evring against every other target but evring-resp,
/// then evring-resp against every other target (native evring first), then every other
/// target but the floors against the floors.
fn ratio_pairs(targets: &[Target]) -> Vec<(Target, Vec<Target>)> {
    let mut pairs = Vec::new();
    if targets.contains(&Target::Evring) {
        let peers = targets
            .iter()
            .copied()
            .filter(|&t| t != Target::Evring && t != Target::EvringResp)
            .collect();
        pairs.push((Target::Evring, peers));
    }
    if targets.contains(&Target::EvringResp) {
        let mut peers: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|&t| t != Target::EvringResp)
            .collect();
        peers.sort_by_key(|&t| t != Target::Evring);
        pairs.push((Target::EvringResp, peers));
    }
    let floors: Vec<Target> = targets.iter().copied().filter(|t| t.is_floor()).collect();
    if !floors.is_empty() {
        for &t in targets {
            if !t.is_floor() && t != Target::Evring && t != Target::EvringResp {
                pairs.push((t, floors.clone()));
            }
        }
    }
    pairs
}

fn summarize(w: &Workload, targets: &[Target], results: &[RoundResult]) -> Summary {
    let of =
        |t: Target| -> Vec<&RoundResult> { results.iter().filter(|r| r.target == t).collect() };
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for &t in targets {
        let rs = of(t);
        let req: Vec<f64> = rs.iter().map(|r| r.requests_per_s).collect();
        let ev: Vec<f64> = rs.iter().map(|r| r.events_per_s).collect();
        let mb: Vec<f64> = rs.iter().map(|r| r.bytes_per_s / 1e6).collect();
        let q = |q: f64| median(&rs.iter().map(|r| r.ms(q)).collect::<Vec<_>>());
        let min = req.iter().copied().fold(f64::INFINITY, f64::min);
        let max = req.iter().copied().fold(0.0, f64::max);
        let errors: u64 = rs.iter().map(|r| r.errors).sum();
        rows.push(
            report::Row::new(format!("{} ({})", t.name(), w.name))
                .cell("req/s median", format!("{:.0}", median(&req)))
                .cell("min–max", format!("{min:.0}–{max:.0}"))
                .cell("events/s", format!("{:.0}", median(&ev)))
                .cell("MB/s", format!("{:.2}", median(&mb)))
                .cell("p50 ms", format!("{:.3}", q(0.5)))
                .cell("p99 ms", format!("{:.3}", q(0.99)))
                .cell("p99.9 ms", format!("{:.3}", q(0.999)))
                .cell("errors", errors.to_string()),
        );
        json_rows.push(json!({
            "target": t.name(),
            "requests_per_s": {"median": median(&req), "min": min, "max": max},
            "events_per_s": median(&ev),
            "mb_per_s": median(&mb),
            "latency_ms": QUANTILES.iter().map(|&qq| json!({"quantile": qq, "ms": q(qq)})).collect::<Vec<_>>(),
            "errors": errors,
        }));
    }
    let mut ratio_rows = Vec::new();
    let mut ratio_json = Vec::new();
    for (subject, peers) in ratio_pairs(targets) {
        let mine: Vec<&RoundResult> = of(subject);
        for t in peers {
            let peer = of(t);
            // The disk ceiling is compared in bytes/s (what it can move); peers in events/s.
            let key = |r: &&RoundResult| {
                if t == Target::Disk {
                    r.bytes_per_s
                } else {
                    r.events_per_s
                }
            };
            let e: Vec<f64> = mine.iter().map(key).collect();
            let p: Vec<f64> = peer.iter().map(key).collect();
            let (per_round, m) = ratios(&e, &p);
            let p99_e = median(&mine.iter().map(|r| r.ms(0.99)).collect::<Vec<_>>());
            let p99_p = median(&peer.iter().map(|r| r.ms(0.99)).collect::<Vec<_>>());
            let unit = if t == Target::Disk {
                "bytes/s"
            } else {
                "events/s"
            };
            ratio_rows.push(
                report::Row::new(format!("{} / {} ({unit})", subject.name(), t.name()))
                    .cell("median", format!("{m:.2}"))
                    .cell(
                        "per round",
                        per_round
                            .iter()
                            .map(|r| format!("{r:.2}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    )
                    .cell("p99 ms", format!("{p99_e:.3}"))
                    .cell("p99 peer ms", format!("{p99_p:.3}")),
            );
            ratio_json.push(json!({
                "subject": subject.name(), "peer": t.name(), "unit": unit, "median": m,
                "per_round": per_round, "p99_ms_subject": p99_e, "p99_ms_peer": p99_p,
            }));
        }
    }
    Summary {
        rows,
        ratio_rows,
        json: Value::Array(json_rows),
        ratio_json: Value::Array(ratio_json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
        let (per, m) = ratios(&[100.0, 200.0, 300.0], &[50.0, 50.0, 100.0]);
        assert_eq!(per, vec![2.0, 4.0, 3.0]);
        assert_eq!(m, 3.0);
        let (per, _) = ratios(&[1.0], &[0.0]);
        assert!(per[0].is_infinite());
    }

    #[test]
    fn evring_resp_is_compared_with_native_evring_first_and_every_peer() {
        use Target::*;
        let all = [Evring, EvringResp, RedisAlways, RedisNoPersist, Disk];
        assert_eq!(
            ratio_pairs(&all),
            vec![
                (Evring, vec![RedisAlways, RedisNoPersist, Disk]),
                (EvringResp, vec![Evring, RedisAlways, RedisNoPersist, Disk]),
            ]
        );
        assert_eq!(
            ratio_pairs(&[RedisAlways, EvringResp]),
            vec![(EvringResp, vec![RedisAlways])]
        );
        assert!(ratio_pairs(&[RedisAlways, Postgres]).is_empty());
        assert_eq!(Target::parse("evring-resp").unwrap(), EvringResp);
        assert_eq!(
            ratio_pairs(&[Evring, EvringResp, RedisNoPersist, Floor, FloorNative]),
            vec![
                (Evring, vec![RedisNoPersist, Floor, FloorNative]),
                (EvringResp, vec![Evring, RedisNoPersist, Floor, FloorNative]),
                (RedisNoPersist, vec![Floor, FloorNative]),
            ]
        );
        assert_eq!(Target::parse("floor-native").unwrap(), FloorNative);
    }

    #[test]
    fn the_disk_target_writes_one_requests_frame() {
        let w = Workload {
            events_per_request: 100,
            payload_bytes: 100,
            ..Default::default()
        };
        // 96 + 100 × 184 = 18,496 → 20,480.
        assert_eq!(frame_bytes(&w), 20_480);
        let one = Workload::default();
        assert_eq!(frame_bytes(&one), 4096);
    }
}
