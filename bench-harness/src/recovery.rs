//! `evring-bench recovery`: how long evringd takes to start again after N events, with the
//! journal alone (every frame is scanned and every event indexed at start-up).
//!
//! For each N: a fresh data directory is filled with N events (100 per APPEND, several
//! connections pipelining), then evringd is killed with SIGKILL (a crash: the worst case, no
//! clean stop) and started again `--runs` times; the time from spawn to serving is measured.
//! The journal size and the recovery rate (events/s of start-up) are printed alongside.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;

use evring::protocol::{expected, Request, Response};

use crate::report;

#[derive(clap::Args)]
pub struct RecoveryArgs {
    /// Event counts to measure, comma-separated (e.g. 1000000,5000000).
    #[arg(long, default_value = "1000000")]
    events: String,
    /// Data bytes per event.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Restarts per count; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory for the data (on the disk to measure).
    #[arg(long, default_value = "./target/evring-bench")]
    dir: PathBuf,
    /// Extra `--set key=value` for evringd (repeatable).
    #[arg(long = "server-set")]
    server_set: Vec<String>,
    /// One JSON object per result row.
    #[arg(long)]
    json: bool,
}

/// Appends `n` events to `addr` (100 per request, 4 connections × 16 in flight).
fn fill(addr: &str, n: u64, payload: usize) -> anyhow::Result<()> {
    let per_request = 100u64;
    let requests = n.div_ceil(per_request);
    let conns = 4u64;
    let mut handles = Vec::new();
    for c in 0..conns {
        let addr = addr.to_string();
        let mine = requests / conns + u64::from(c < requests % conns);
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let client = evring::client::Client::connect(&addr, "evring-bench-fill", "")
                .map_err(|e| anyhow!("connect: {e}"))?;
            let mut inflight = VecDeque::new();
            for i in 0..mine {
                let req = Request::Append {
                    stream: crate::codecs::stream_name((c * 1000 + i % 1000) as usize),
                    expected_version: expected::ANY,
                    events: (0..per_request as usize)
                        .map(|j| {
                            evring::client::event(
                                "bench",
                                crate::codecs::payload(c as u32, i, j, payload),
                            )
                        })
                        .collect(),
                };
                inflight.push_back(client.request(&req));
                if inflight.len() >= 16 {
                    let f = inflight.pop_front().expect("non-empty");
                    check(futures_lite::future::block_on(f))?;
                }
            }
            for f in inflight {
                check(futures_lite::future::block_on(f))?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join().map_err(|_| anyhow!("a fill thread panicked"))??;
    }
    Ok(())
}

fn check(r: Result<Response, evring::client::ClientError>) -> anyhow::Result<()> {
    match r {
        Ok(Response::Appended { .. }) => Ok(()),
        Ok(other) => Err(anyhow!("append: {other:?}")),
        Err(e) => Err(anyhow!("append: {e}")),
    }
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let m = e.metadata().ok();
            match m {
                Some(m) if m.is_dir() => dir_bytes(&e.path()),
                Some(m) => m.len(),
                None => 0,
            }
        })
        .sum()
}

pub fn main(a: RecoveryArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for n in a.events.split(',') {
        let n: u64 = n
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| anyhow!("--events {n:?} is not a number"))?;
        let data = a.dir.join("recovery-data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&a.dir)?;
        let (mut child, addr) = crate::network::spawn_evringd(&data, &a.server_set)?;
        let t = Instant::now();
        fill(&addr, n, a.payload)?;
        eprintln!("{n} events written in {:.1} s", t.elapsed().as_secs_f64());
        let mut times = Vec::new();
        for _ in 0..a.runs.max(1) {
            let _ = child.kill();
            let _ = child.wait();
            let t = Instant::now();
            let (c, _) = crate::network::spawn_evringd(&data, &a.server_set)?;
            times.push(t.elapsed().as_secs_f64());
            child = c;
        }
        // SAFETY: signalling our own child by pid has no memory effects.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let _ = child.wait();
        let segments = dir_bytes(&data);
        let median = crate::compare::median(&times);
        rows.push(
            report::Row::new(format!("restart after {n} events (SIGKILL, journal only)"))
                .cell("median s", format!("{median:.3}"))
                .cell(
                    "runs s",
                    times
                        .iter()
                        .map(|t| format!("{t:.3}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                )
                .cell("events/s", format!("{:.0}", n as f64 / median))
                .cell(
                    "data MiB",
                    format!("{:.0}", segments as f64 / (1 << 20) as f64),
                ),
        );
        let _ = std::fs::remove_dir_all(&data);
    }
    report::print(&rows, a.json);
    Ok(())
}
