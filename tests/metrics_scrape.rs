//! The real Prometheus endpoint, scraped over HTTP and parsed with a Prometheus text-format
//! parser: every series evringd documents is present, named by the conventions (counters end
//! in `_total`, units in the name), and the values follow the load.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{ev, Server};
use evring::protocol::expected;
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
    // Every series is documented in docs/OPERATIONS.md.
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
