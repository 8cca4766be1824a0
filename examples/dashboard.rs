//! A metrics dashboard on evring, after LockFree.EventStore's MetricsDashboard sample: "add
//! metric" appends a metric event (a label such as cpu_usage, memory or requests, a host, a
//! numeric value, a timestamp), and the dashboard's views are grouped aggregations
//! (AGGREGATE_GROUPS) through the Rust client:
//!
//! - the sum by label over a window (group by `data.label`, aggregate `data.value`);
//! - the top-K: the 2 hosts with the highest average cpu_usage (only `data.label` equal to
//!   cpu_usage, group by `data.host`, top 2 by average);
//! - a per-minute series of one label (buckets of 60 s).
//!
//! Each metric is an event of type `metric` whose JSON data is
//! `{"label":"cpu_usage","host":"web-1","value":0.73}`, with the event's value set to the same
//! number (so `evring aggregate --type metric` sums it too). The metrics are a fixed set over
//! the three minutes before the current one, in streams named `metrics-<run>-<host>`; every
//! view reads only this run's streams (`--stream-prefix`), so its output is the same on
//! every run (`tests/examples.rs` compares it).
//!
//! ```sh
//! cargo run --release --example dashboard                  # its own evringd, in a temporary directory
//! cargo run --release --example dashboard -- 127.0.0.1:7070   # a running evringd
//! ```
//!
//! The same views from the command line, against the server the second form uses:
//!
//! ```sh
//! evring aggregate --since 5m --stream-prefix metrics- --group-by data.label --field data.value
//! evring aggregate --since 5m --where data.label=cpu_usage --field data.value \
//!     --group-by data.host --top 2 --order avg
//! evring aggregate --since 5m --where data.label=requests --field data.value --bucket 1m
//! ```

use evring::client::BlockingClient;
use evring::protocol::{Event, GroupOrder, GroupedAggregate, Groups, NameMatch};

const MINUTE_NS: u64 = 60_000_000_000;

const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];

/// The metrics: per label, per minute, one value per host (in the order of [`HOSTS`]).
const METRICS: [(&str, [[f64; 3]; 3]); 3] = [
    (
        "cpu_usage",
        [[0.73, 0.41, 0.88], [0.65, 0.52, 0.91], [0.70, 0.38, 0.95]],
    ),
    (
        "memory",
        [[3.2, 2.8, 5.1], [3.4, 2.9, 5.6], [3.3, 2.7, 5.8]],
    ),
    (
        "requests",
        [
            [120.0, 95.0, 143.0],
            [131.0, 88.0, 150.0],
            [117.0, 102.0, 161.0],
        ],
    ),
];

/// One metric, as "add metric" takes it.
struct Metric<'a> {
    label: &'a str,
    host: &'a str,
    value: f64,
    timestamp_ns: u64,
}

/// "Add metric": one event appended to the host's stream.
fn add_metric(c: &BlockingClient, streams: &str, m: &Metric) -> anyhow::Result<()> {
    let data = serde_json::json!({"label": m.label, "host": m.host, "value": m.value});
    let event = Event {
        id: [0; 16],
        event_type: "metric".into(),
        timestamp_ns: m.timestamp_ns,
        value: m.value,
        data: data.to_string().into_bytes(),
        metadata: Vec::new(),
    };
    c.append(&format!("{streams}{}", m.host), -1, vec![event])?;
    Ok(())
}

/// A number rounded to two decimals, without trailing zeros.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The dashboard's views over `[from, from + 3 minutes)`: this run's metric events, their
/// `data.value` summed.
fn request(streams: &str, from: u64) -> GroupedAggregate {
    GroupedAggregate {
        stream: streams.into(),
        stream_match: NameMatch::Prefix,
        event_type: "metric".into(),
        field: "data.value".into(),
        ..GroupedAggregate::window(from, from + 3 * MINUTE_NS)
    }
}

/// Sum by label: one group per `data.label`, by label.
fn sum_by_label(c: &BlockingClient, streams: &str, from: u64) -> anyhow::Result<()> {
    let q = GroupedAggregate {
        group_by: "data.label".into(),
        ..request(streams, from)
    };
    println!("Sum by label:");
    for g in c.aggregate_groups(&q)?.groups {
        let t = g.total();
        println!("  {:<10} {:>7} ({} metrics)", g.key, round2(t.sum), t.count);
    }
    Ok(())
}

/// Top-K: the 2 hosts with the highest average cpu_usage.
fn top_hosts(c: &BlockingClient, streams: &str, from: u64) -> anyhow::Result<()> {
    let q = GroupedAggregate {
        where_field: "data.label".into(),
        where_value: "cpu_usage".into(),
        group_by: "data.host".into(),
        order: GroupOrder::Average,
        top_k: 2,
        ..request(streams, from)
    };
    let top: Groups = c.aggregate_groups(&q)?;
    println!(
        "Top 2 hosts by average cpu_usage (of {}):",
        top.groups_total
    );
    for (rank, g) in top.groups.iter().enumerate() {
        let t = g.total();
        println!(
            "  {}. {} {} (max {})",
            rank + 1,
            g.key,
            round2(t.average()),
            round2(t.max)
        );
    }
    Ok(())
}

/// A per-minute series of one label: buckets of 60 s.
fn per_minute(c: &BlockingClient, streams: &str, from: u64, label: &str) -> anyhow::Result<()> {
    let q = GroupedAggregate {
        where_field: "data.label".into(),
        where_value: label.into(),
        bucket_ns: MINUTE_NS,
        ..request(streams, from)
    };
    println!("{label} per minute:");
    let series = c.aggregate_groups(&q)?;
    for (minute, b) in series.groups[0].buckets.iter().enumerate() {
        println!(
            "  minute {}: sum {} avg {} (min {}, max {})",
            minute + 1,
            round2(b.sum),
            round2(b.average()),
            round2(b.min),
            round2(b.max)
        );
    }
    Ok(())
}

fn dashboard(addr: &str) -> anyhow::Result<()> {
    let c = BlockingClient::connect(addr, "dashboard-example", "")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let now = now.as_nanos() as u64;
    // The three whole minutes before the current one; this run's own streams.
    let from = now - now % MINUTE_NS - 3 * MINUTE_NS;
    let streams = format!("metrics-{now:x}-");
    let mut added = 0;
    for (label, minutes) in METRICS {
        for (minute, values) in minutes.iter().enumerate() {
            for (h, (host, value)) in HOSTS.iter().zip(values).enumerate() {
                // A few seconds apart within the minute, host by host.
                let offset = minute as u64 * MINUTE_NS + (10 + 5 * h as u64) * 1_000_000_000;
                let m = Metric {
                    label,
                    host,
                    value: *value,
                    timestamp_ns: from + offset,
                };
                add_metric(&c, &streams, &m)?;
                added += 1;
            }
        }
    }
    println!(
        "Added {added} metrics from {} hosts over 3 minutes.",
        HOSTS.len()
    );
    sum_by_label(&c, &streams, from)?;
    top_hosts(&c, &streams, from)?;
    per_minute(&c, &streams, from, "requests")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Some(addr) = std::env::args().nth(1) {
        return dashboard(&addr);
    }
    // No address: an evringd of its own, on a free port, in a temporary directory.
    let dir = tempfile::tempdir()?;
    let config = evring::config::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        resp_listen: String::new(),
        partitions: 2,
        shards: 1,
        pin_cpus: false,
        ..Default::default()
    };
    let server = evring::server::start(config)?;
    let shown = dashboard(&server.client_addr.to_string());
    server.stop()?;
    shown
}
