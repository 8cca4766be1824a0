//! `evring-bench groups`: AGGREGATE_GROUPS requests timed end to end against real evringd
//! servers holding 1M events in their rings.
//!
//! The events are those of `benches/groups.rs` (criterion): `--events` events (default
//! 1,000,000) appended in batches of 100, batch `b` to stream `stream-{b % 1000}`, each event
//! of one of 8 types, its value set, and JSON data such as
//! `{"label":"cpu_usage","host":"web-17","amount":12.5}` (16 labels, 100 hosts, `amount`
//! equal to the value), appended through the client (4 connections × 16 APPENDs in flight).
//!
//! Servers, every one with one shard (`shards=1`: every scan of a request runs on that one
//! core, as the 20 ms goal is stated) and rings sized to hold all they are given (a window
//! the ring no longer holds whole is refused), no snapshots:
//! - **1 partition**: all the events in one partition;
//! - **4 partitions**: the same events over 4 partitions (by stream, `partition_of`);
//! - **parts p0..p3**: four one-partition servers, server p holding exactly the events of
//!   the 4-partition server's partition p, appended in the same order.
//!
//! Queries, each over the whole time axis (stream "", no type filter), one bucket:
//! value-column sum; `data.amount` sum; group-by type top-10 by sum; group-by stream top-10
//! by count; group-by `data.label` top-5 by average, without and with where
//! `data.host == "web-17"`.
//!
//! A round sends every query once to every server (the order of the servers rotating from
//! round to round), one request at a time on one connection, and times each from the
//! request to its decoded reply. Round 0 is a warm-up and not counted; `--runs` rounds are.
//! Every reply is checked (the events it matched).
//!
//! All-partition against its parts: no request reads one partition whole (a stream named
//! whole targets its partition but keeps only that stream's events; a stream prefix is
//! read on every partition), so each part is a request to a server that holds exactly that
//! partition's events: the same ring contents, the same scan. A part thus pays a request's
//! fixed cost (round trip, decoding, reply) that the all-partition request pays once, not
//! four times; the round trip part of it is printed (a PING on the same connection). The
//! same comparison without any request cost is `benches/groups.rs` (`groups_4p`).
//!
//! Printed: every figure's median over the rounds and every round's; then the ratios, each
//! the median of the per-round ratios: `data.amount` sum ÷ value sum, and 4 partitions
//! (all) ÷ the sum of the parts, and ÷ 1 partition.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail};

use evring::client::{BlockingClient, Client};
use evring::protocol::{
    expected, partition_of, AppendResult, Event, GroupOrder, GroupedAggregate, Request, Response,
};

use crate::network::{start_server, Server};
use crate::report::{self, Row};

#[derive(clap::Args)]
pub struct GroupsArgs {
    /// Directory for the servers' data (on a disk; not tmpfs).
    #[arg(long, default_value = "./target/evring-bench")]
    dir: std::path::PathBuf,
    /// Events appended to each layout before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Counted rounds (after one warm-up round); the median is reported.
    #[arg(long, default_value_t = 11)]
    runs: usize,
    /// One JSON object per result row.
    #[arg(long)]
    json: bool,
    /// Extra `--set key=value` for every evringd started here (repeatable).
    #[arg(long = "server-set")]
    server_set: Vec<String>,
}

const BATCH: u64 = 100;
const STREAMS: u64 = 1_000;
const HOSTS: u64 = 100;
const PARTS: u32 = 4;
const TYPES: [&str; 8] = [
    "metric.cpu",
    "metric.mem",
    "metric.disk",
    "metric.net",
    "order.placed",
    "order.paid",
    "user.login",
    "user.logout",
];
const LABELS: [&str; 16] = [
    "cpu_usage",
    "cpu_steal",
    "mem_used",
    "mem_free",
    "disk_read",
    "disk_write",
    "net_in",
    "net_out",
    "load_1m",
    "load_5m",
    "gc_pause",
    "queue_depth",
    "latency_p50",
    "latency_p99",
    "errors",
    "requests",
];

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The stream of batch `b`.
fn stream_of(b: u64) -> String {
    format!("stream-{}", b % STREAMS)
}

/// Event `i` (as in `benches/groups.rs`): its type, JSON data and value.
fn event(i: u64) -> Event {
    let h = mix(i);
    let amount = ((h >> 32) % 1000) as f64 / 10.0;
    let data = format!(
        r#"{{"label":"{}","host":"web-{}","amount":{amount}}}"#,
        LABELS[(h % 16) as usize],
        (h >> 8) % HOSTS
    );
    Event {
        value: amount,
        ..evring::client::event(TYPES[(i % 8) as usize], data)
    }
}

/// The batches (by index) a server is given, and how many events they hold.
struct Batches {
    events: u64,
    batches: Vec<u64>,
}

impl Batches {
    /// Every batch of `events` events; with `part`, only those of that partition of 4.
    fn new(events: u64, part: Option<u32>) -> Batches {
        let batches: Vec<u64> = (0..events.div_ceil(BATCH))
            .filter(|&b| part.is_none_or(|p| partition_of(&stream_of(b), PARTS) == p))
            .collect();
        let events = batches.iter().map(|&b| batch_len(events, b)).sum();
        Batches { events, batches }
    }
}

/// Events of batch `b` out of `total`.
fn batch_len(total: u64, b: u64) -> u64 {
    BATCH.min(total - b * BATCH)
}

/// Appends `batches` to `addr`: 4 connections, 16 APPENDs in flight each; every reply is
/// checked.
fn fill(addr: &str, total: u64, batches: &Batches) -> anyhow::Result<()> {
    let conns = 4usize;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                scope.spawn(move || -> anyhow::Result<()> {
                    let client = Client::connect(addr, "evring-bench-groups-fill", "")
                        .map_err(|e| anyhow!("connect to {addr}: {e}"))?;
                    let check = |f| match futures_lite::future::block_on(f) {
                        Ok(Response::Appended(AppendResult { .. })) => Ok(()),
                        Ok(other) => Err(anyhow!("fill: unexpected reply {other:?}")),
                        Err(e) => Err(anyhow!("fill: {e}")),
                    };
                    let mut inflight = std::collections::VecDeque::new();
                    for &b in batches.batches.iter().skip(c).step_by(conns) {
                        let req = Request::Append {
                            stream: stream_of(b),
                            expected_version: expected::ANY,
                            events: (0..batch_len(total, b))
                                .map(|j| event(b * BATCH + j))
                                .collect(),
                        };
                        inflight.push_back(client.request(&req));
                        if inflight.len() >= 16 {
                            check(inflight.pop_front().expect("non-empty"))?;
                        }
                    }
                    inflight.into_iter().try_for_each(check)
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("a fill thread panicked"))??;
        }
        Ok(())
    })
}

/// A started, filled server and a connection to it.
struct Target {
    name: String,
    events: u64,
    client: BlockingClient,
    _server: Server,
}

/// Starts a one-shard server with `partitions` partitions whose rings hold `per_partition`
/// events, and appends `batches`.
fn start(
    dir: &Path,
    a: &GroupsArgs,
    name: &str,
    partitions: u32,
    per_partition: u64,
    batches: &Batches,
) -> anyhow::Result<Target> {
    // About 105 payload bytes per event in the ring (28 of layout, the stream, the type and
    // the data); 128 and 1 MiB of room.
    let ring_events = per_partition.next_power_of_two().max(1 << 10);
    let ring_bytes = (per_partition * 128).div_ceil(1 << 20).max(1) << 20;
    let mut sets: Vec<String> = vec![
        "shards=1".into(),
        format!("partitions={partitions}"),
        format!("ring_capacity_events={ring_events}"),
        format!("ring_capacity_bytes={ring_bytes}"),
        "snapshot_every_events=0".into(),
        "snapshot_every_secs=0".into(),
        "snapshot_on_shutdown=false".into(),
    ];
    sets.extend(a.server_set.iter().cloned());
    let server = start_server(&dir.join(name), &sets)?;
    let t = Instant::now();
    fill(&server.addr, a.events, batches)?;
    eprintln!(
        "  {name}: {} events appended in {:.2} s",
        batches.events,
        t.elapsed().as_secs_f64()
    );
    let client = BlockingClient::connect(&server.addr, "evring-bench-groups", "")
        .map_err(|e| anyhow!("connect to {}: {e}", server.addr))?;
    Ok(Target {
        name: name.to_string(),
        events: batches.events,
        client,
        _server: server,
    })
}

/// The queries, by name; `true` for those that match every event of the window.
fn queries() -> Vec<(&'static str, GroupedAggregate, bool)> {
    let w = GroupedAggregate::window(0, u64::MAX);
    let label = GroupedAggregate {
        group_by: "data.label".into(),
        order: GroupOrder::Average,
        top_k: 5,
        ..w.clone()
    };
    vec![
        ("value sum", w.clone(), true),
        (
            "data.amount sum",
            GroupedAggregate {
                field: "data.amount".into(),
                ..w.clone()
            },
            true,
        ),
        (
            "type top-10 by sum",
            GroupedAggregate {
                group_by: "type".into(),
                order: GroupOrder::Sum,
                top_k: 10,
                ..w.clone()
            },
            true,
        ),
        (
            "stream top-10 by count",
            GroupedAggregate {
                group_by: "stream".into(),
                order: GroupOrder::Count,
                top_k: 10,
                ..w.clone()
            },
            true,
        ),
        ("label top-5 by avg", label.clone(), true),
        (
            "label top-5 by avg, host=web-17",
            GroupedAggregate {
                where_field: "data.host".into(),
                where_value: "web-17".into(),
                ..label
            },
            false,
        ),
    ]
}

/// A request's fixed cost on the wire: a PING's round trip on the same connection.
const PING: &str = "PING round trip";

/// Figures of one series, one per counted round.
struct Series {
    name: String,
    values: Vec<f64>,
}

#[derive(Default)]
struct Results {
    series: Vec<Series>,
}

impl Results {
    fn add(&mut self, name: &str, value: f64) {
        match self.series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.values.push(value),
            None => self.series.push(Series {
                name: name.to_string(),
                values: vec![value],
            }),
        }
    }

    fn values(&self, name: &str) -> &[f64] {
        self.series
            .iter()
            .find(|s| s.name == name)
            .map_or(&[], |s| &s.values)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn join(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Times `q` on `t` (ms) and checks what it matched.
fn time(t: &Target, name: &str, q: &GroupedAggregate, whole: bool) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let g = t
        .client
        .aggregate_groups(q)
        .map_err(|e| anyhow!("{name} on {}: {e}", t.name))?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let ok = if whole {
        g.matched == t.events
    } else {
        g.matched > 0 && g.matched < t.events
    };
    if !ok {
        bail!(
            "{name} on {}: matched {} of {} events",
            t.name,
            g.matched,
            t.events
        );
    }
    Ok(ms)
}

pub fn main(a: GroupsArgs) -> anyhow::Result<()> {
    let dir = a.dir.join("groups");
    std::fs::create_dir_all(&dir)?;
    let all = Batches::new(a.events, None);
    let parts: Vec<Batches> = (0..PARTS)
        .map(|p| Batches::new(a.events, Some(p)))
        .collect();
    let largest = parts.iter().map(|p| p.events).max().unwrap_or(0);
    eprintln!("starting and filling the servers");
    let one = start(&dir, &a, "1 partition", 1, a.events, &all)?;
    let four = start(&dir, &a, "4 partitions", PARTS, largest, &all)?;
    let mut part_targets = Vec::new();
    for (p, b) in parts.iter().enumerate() {
        part_targets.push(start(&dir, &a, &format!("part p{p}"), 1, b.events, b)?);
    }
    let mut targets: Vec<&Target> = vec![&one, &four];
    targets.extend(part_targets.iter());

    let queries = queries();
    let mut results = Results::default();
    for round in 0..=a.runs {
        if round == 0 {
            eprintln!("round 0 (warm-up)");
        } else {
            eprintln!("round {round}");
        }
        let mut order = targets.clone();
        order.rotate_left(round % targets.len());
        for (name, q, whole) in &queries {
            for t in &order {
                let ms = time(t, name, q, *whole)?;
                if round > 0 {
                    results.add(&format!("{name} | {}", t.name), ms);
                }
            }
        }
        for t in &order {
            let t0 = Instant::now();
            t.client
                .ping()
                .map_err(|e| anyhow!("PING {}: {e}", t.name))?;
            if round > 0 {
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                results.add(&format!("{PING} | {}", t.name), ms);
            }
        }
    }

    // Per query: every server's median, and the sum of the parts per round.
    let part_names: Vec<String> = part_targets.iter().map(|t| t.name.clone()).collect();
    let mut rows = Vec::new();
    let mut round_rows = Vec::new();
    let mut ratio_rows = Vec::new();
    for server in [&one.name, &four.name] {
        let json = results.values(&format!("data.amount sum | {server}"));
        let value = results.values(&format!("value sum | {server}"));
        let r: Vec<f64> = json.iter().zip(value).map(|(j, v)| j / v).collect();
        ratio_rows.push(
            Row::new(format!("data.amount sum ÷ value sum, {server}"))
                .cell("median", format!("{:.1}", median(&r)))
                .cell("every round", join(&r, 1)),
        );
    }
    let names = queries.iter().map(|(n, _, _)| *n).chain([PING]);
    for name in names {
        let get = |server: &str| results.values(&format!("{name} | {server}")).to_vec();
        let (one_ms, four_ms) = (get(&one.name), get(&four.name));
        let sum_parts: Vec<f64> = (0..a.runs)
            .map(|r| part_names.iter().map(|p| get(p)[r]).sum())
            .collect();
        let mut row = Row::new(name)
            .cell("1 partition", format!("{:.2}", median(&one_ms)))
            .cell("4 partitions", format!("{:.2}", median(&four_ms)));
        for p in &part_names {
            row = row.cell(p, format!("{:.2}", median(&get(p))));
        }
        rows.push(row.cell("sum of parts", format!("{:.2}", median(&sum_parts))));
        for (server, v) in [
            (one.name.as_str(), &one_ms),
            (four.name.as_str(), &four_ms),
            ("sum of parts", &sum_parts),
        ] {
            round_rows
                .push(Row::new(format!("{name}, {server}")).cell("every round, ms", join(v, 2)));
        }
        if name == PING {
            continue;
        }
        let per_round: Vec<f64> = four_ms.iter().zip(&sum_parts).map(|(f, s)| f / s).collect();
        let vs_one: Vec<f64> = four_ms.iter().zip(&one_ms).map(|(f, o)| f / o).collect();
        ratio_rows.push(
            Row::new(format!("{name}: 4 partitions ÷ sum of parts"))
                .cell("median", format!("{:.3}", median(&per_round)))
                .cell("every round", join(&per_round, 3)),
        );
        ratio_rows.push(
            Row::new(format!("{name}: 4 partitions ÷ 1 partition"))
                .cell("median", format!("{:.3}", median(&vs_one)))
                .cell("every round", join(&vs_one, 3)),
        );
    }
    println!(
        "AGGREGATE_GROUPS end to end, {} events, medians of {} rounds (ms):",
        a.events, a.runs
    );
    for table in [&rows, &round_rows, &ratio_rows] {
        report::print(table, a.json);
        if !a.json {
            println!();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_hold_every_batch_once() {
        let all = Batches::new(123_450, None);
        assert_eq!(all.events, 123_450);
        let parts: Vec<Batches> = (0..PARTS).map(|p| Batches::new(123_450, Some(p))).collect();
        assert_eq!(parts.iter().map(|p| p.events).sum::<u64>(), 123_450);
        let mut batches: Vec<u64> = parts.iter().flat_map(|p| p.batches.clone()).collect();
        batches.sort_unstable();
        assert_eq!(batches, all.batches);
    }

    #[test]
    fn events_carry_the_amount_as_their_value_and_in_their_data() {
        let e = event(42);
        let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(data["amount"].as_f64(), Some(e.value));
        assert!(data["host"].as_str().unwrap().starts_with("web-"));
        assert!(LABELS.contains(&data["label"].as_str().unwrap()));
    }
}
