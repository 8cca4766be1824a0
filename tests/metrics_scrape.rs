//! The real Prometheus endpoint, scraped over HTTP and parsed with a Prometheus text-format
//! parser: every series evringd documents is present, named by the conventions (counters end
//! in `_total`, units in the name), and the values follow the load.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{ev, Server};
use evring::protocol::{code, expected};
use prometheus_parse::{Scrape, Value};

fn scrape(addr: &str) -> Scrape {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Scrape::parse(lines).expect("valid Prometheus text format")
}

#[test]
fn the_metrics_endpoint_parses_and_follows_prometheus_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", "metrics_listen=\"127.0.0.1:0\""],
    );
    let text = std::fs::read_to_string(dir.path().join("data.addr")).unwrap();
    let metrics = text
        .lines()
        .find_map(|l| l.strip_prefix("metrics="))
        .unwrap()
        .to_string();
    let c = server.client();
    for i in 0..7 {
        c.append("m", expected::ANY, vec![ev("E", format!("{i}").as_bytes())])
            .unwrap();
    }
    let err = c
        .read("missing", 0, 1, evring::protocol::Direction::Forward)
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(evring::protocol::code::STREAM_NOT_FOUND),
        "{err}"
    );
    let scrape = scrape(&metrics);
    let value = |name: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(value("evring_appends_total"), 7.0);
    assert_eq!(value("evring_events_appended_total"), 7.0);
    assert_eq!(value("evring_ring_events"), 7.0);
    assert!(value("evring_frames_written_total") >= 1.0);
    assert!(value("evring_journal_bytes_written_total") >= 4096.0);
    assert!(value("evring_append_bytes_total") >= 7.0);
    assert_eq!(value("evring_connections"), 1.0);
    assert!(
        value("evring_errors_total") >= 1.0,
        "the STREAM_NOT_FOUND reply is counted"
    );
    let latency = scrape
        .samples
        .iter()
        .find(|s| s.metric == "evring_flush_latency_seconds")
        .expect("the flush latency histogram");
    assert!(
        matches!(latency.value, Value::Histogram(_)),
        "{:?}",
        latency.value
    );
    // Conventions: counters end in _total; every series carries the evring_ prefix.
    for s in &scrape.samples {
        assert!(s.metric.starts_with("evring_"), "{}", s.metric);
        if matches!(s.value, Value::Counter(_)) {
            assert!(
                s.metric.ends_with("_total"),
                "counter {} lacks _total",
                s.metric
            );
        }
    }
    all_documented(&scrape);
}

/// Fails unless every series of `scrape` is in docs/OPERATIONS.md's metrics table.
fn all_documented(scrape: &Scrape) {
    let ops = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"),
    )
    .unwrap();
    let documented: Vec<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix("| `evring_"))
        .filter_map(|l| l.split('`').next().map(|n| format!("evring_{n}")))
        .collect();
    for s in &scrape.samples {
        // A histogram's _sum and _count series belong to its family.
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|suffix| s.metric.strip_suffix(suffix))
            .filter(|f| documented.iter().any(|d| d == f))
            .unwrap_or(&s.metric);
        assert!(
            documented.iter().any(|d| d == family),
            "{} is not documented in docs/OPERATIONS.md",
            s.metric
        );
    }
}

/// The value of one series: `name` with label `partition`.
fn by_partition(scrape: &Scrape, name: &str, partition: u32) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("partition") == Some(&partition.to_string()))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a number: {other:?}"),
        })
}

/// The (count, sum) of a histogram series with label `partition`.
fn histogram_by_partition(scrape: &Scrape, name: &str, partition: u32) -> Option<(u64, f64)> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("partition") == Some(&partition.to_string()))
        .map(|s| match &s.value {
            Value::Histogram(h) => {
                let count = h.iter().map(|b| b.count).fold(0.0, f64::max);
                let sum = scrape
                    .samples
                    .iter()
                    .find(|x| {
                        x.metric == format!("{name}_sum")
                            && x.labels.get("partition") == Some(&partition.to_string())
                    })
                    .map(|x| match x.value {
                        Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) => v,
                        _ => f64::NAN,
                    })
                    .unwrap_or(f64::NAN);
                (count as u64, sum)
            }
            other => panic!("{name} is not a histogram: {other:?}"),
        })
}

/// The LSN of the newest snapshot file of partition `p`.
fn newest_snapshot_lsn(data: &std::path::Path, p: u32) -> Option<u64> {
    evring::snapshot::list(&data.join(format!("p{p}")))
        .unwrap()
        .first()
        .map(|(lsn, _)| *lsn)
}

/// Scrapes until `done` holds for the scrape (10 s at most).
fn scrape_until(addr: &str, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let started = std::time::Instant::now();
    loop {
        let s = scrape(addr);
        if done(&s) {
            return s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}: not after 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn snapshot_metrics_follow_the_snapshots_and_no_partition_is_poisoned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--partitions",
            "1",
            "--set",
            "metrics_listen=\"127.0.0.1:0\"",
            "--set",
            "snapshot_every_events=100",
            "--set",
            "snapshot_every_secs=0",
        ],
    );
    let metrics = server.metrics_addr();
    let before = scrape(&metrics);
    assert_eq!(
        by_partition(&before, "evring_partition_poisoned", 0),
        Some(0.0),
        "a healthy partition reports 0"
    );
    assert_eq!(by_partition(&before, "evring_snapshots_total", 0), None);
    let c = server.client();
    // 100 events in one append: exactly one snapshot is due, at LSN 100; then another 100.
    for round in 1..=2u64 {
        let events = (0..100)
            .map(|i| ev("E", format!("{round}/{i}").as_bytes()))
            .collect();
        c.append("m", expected::ANY, events).unwrap();
        let s = scrape_until(&metrics, "the snapshot's LSN gauge", |s| {
            by_partition(s, "evring_snapshot_lsn", 0) == Some(100.0 * round as f64)
        });
        assert_eq!(newest_snapshot_lsn(&data, 0), Some(100 * round));
        assert_eq!(
            by_partition(&s, "evring_snapshots_total", 0),
            Some(round as f64)
        );
        let (count, sum) =
            histogram_by_partition(&s, "evring_snapshot_duration_seconds", 0).unwrap();
        assert_eq!(count, round, "one duration per snapshot");
        assert!(sum > 0.0 && sum < 60.0, "{sum}");
        assert_eq!(by_partition(&s, "evring_partition_poisoned", 0), Some(0.0));
        all_documented(&s);
    }
}

#[test]
fn the_poisoned_gauge_is_1_for_the_partition_whose_write_failed_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[
            "--partitions",
            "2",
            "--set",
            "metrics_listen=\"127.0.0.1:0\"",
        ],
        &[("EVRINGD_INJECT_WRITE_FAILURE_AFTER", "20")],
    );
    let metrics = server.metrics_addr();
    let on = |p: u32| {
        (0..)
            .map(|k| format!("s-{k}"))
            .find(|s| evring::server::shard::partition_of(s, 2) == p)
            .unwrap()
    };
    let (s0, s1) = (on(0), on(1));
    let s = scrape(&metrics);
    assert_eq!(by_partition(&s, "evring_partition_poisoned", 0), Some(0.0));
    assert_eq!(by_partition(&s, "evring_partition_poisoned", 1), Some(0.0));
    // Appends to partition 1 until the injected write failure poisons it.
    let c = server.client();
    let err = (0..100)
        .find_map(|i| {
            c.append(&s1, expected::ANY, vec![ev("E", format!("{i}").as_bytes())])
                .err()
        })
        .expect("the injected write failure surfaces");
    assert_eq!(err.code(), Some(code::PARTITION_UNAVAILABLE), "{err}");
    let s = scrape(&metrics);
    assert_eq!(by_partition(&s, "evring_partition_poisoned", 1), Some(1.0));
    assert_eq!(by_partition(&s, "evring_partition_poisoned", 0), Some(0.0));
    // Partition 0 goes on and stays healthy.
    c.append(&s0, expected::ANY, vec![ev("E", b"fine")])
        .unwrap();
    let s = scrape(&metrics);
    assert_eq!(by_partition(&s, "evring_partition_poisoned", 0), Some(0.0));
    assert_eq!(by_partition(&s, "evring_partition_poisoned", 1), Some(1.0));
}
