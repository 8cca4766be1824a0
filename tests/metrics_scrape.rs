//! The real Prometheus endpoint, scraped over HTTP and parsed with a Prometheus text-format
//! parser: every series evringd documents is present, named by the conventions (counters end
//! in `_total`, units in the name), described by a `# HELP` line, and the values follow the
//! load. The endpoint keeps serving scrapes while a client drips bytes, holds its memory
//! while a client sends endless bytes, bounds its connections, and answers only
//! `GET /metrics`. docs/OPERATIONS.md documents exactly the metrics the code emits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ev, Server};
use evring::protocol::{code, expected};
use prometheus_parse::{Scrape, Value};

/// Starts evringd with its metrics endpoint on an ephemeral port; returns the endpoint too.
fn start_with_metrics(dir: &tempfile::TempDir, extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--set", "metrics_listen=\"127.0.0.1:0\""];
    args.extend(extra);
    let server = Server::start(&dir.path().join("data"), &args);
    let text = std::fs::read_to_string(dir.path().join("data.addr")).unwrap();
    let metrics = text
        .lines()
        .find_map(|l| l.strip_prefix("metrics="))
        .expect("the addresses file names the metrics endpoint")
        .to_string();
    (server, metrics)
}

/// Sends `request` on a new connection and returns everything the server sent before it
/// closed (or before 30 s passed, or the connection was reset).
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

fn scrape(addr: &str) -> Scrape {
    let text = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Scrape::parse(lines).expect("valid Prometheus text format")
}

/// The metric names and types docs/OPERATIONS.md's metrics table lists.
fn documented() -> Vec<(String, String)> {
    let ops = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"),
    )
    .unwrap();
    ops.lines()
        .filter(|l| l.starts_with("| `evring_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

/// The family a sample belongs to (a histogram's `_sum`, `_count` and `_bucket` series
/// belong to the histogram).
fn family<'a>(name: &'a str, known: &[(String, String)]) -> &'a str {
    ["_sum", "_count", "_bucket"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|f| known.iter().any(|(d, _)| d == f))
        .unwrap_or(name)
}

#[test]
fn the_metrics_endpoint_parses_and_follows_prometheus_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_with_metrics(&dir, &[]);
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

/// Fails unless every series of `scrape` is in docs/OPERATIONS.md's metrics table and has a
/// HELP line.
fn all_documented(scrape: &Scrape) {
    let documented = documented();
    for s in &scrape.samples {
        let family = family(&s.metric, &documented);
        assert!(
            documented.iter().any(|(d, _)| d == family),
            "{} is not documented in docs/OPERATIONS.md",
            s.metric
        );
        assert!(
            scrape.docs.get(family).is_some_and(|h| !h.is_empty()),
            "{family} has no # HELP line"
        );
    }
}

#[test]
fn every_documented_metric_is_emitted_with_help_and_every_emitted_one_is_documented() {
    // The docs' table and the code's list of metrics are the same, with the same types.
    let documented = documented();
    let mut in_docs: Vec<(&str, &str)> = documented
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let mut in_code: Vec<(&str, &str)> = evring::metrics::METRICS
        .iter()
        .map(|(n, k, _)| (*n, k.name()))
        .collect();
    in_docs.sort_unstable();
    in_code.sort_unstable();
    assert_eq!(
        in_docs, in_code,
        "docs/OPERATIONS.md's metrics table and evring::metrics::METRICS differ"
    );
    // Every metric the code records is named by a constant of evring::metrics (which the
    // unit test `every_metric_has_its_help_and_type_lines` ties to METRICS).
    let consts = include_str!("../src/metrics.rs");
    let mut files = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut uses = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|x| x != "rs") || path.ends_with("src/metrics.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_name) {
                if text[..at].ends_with("describe_") {
                    continue;
                }
                let arg = text[at + macro_name.len()..].trim_start();
                let name = arg
                    .strip_prefix("crate::metrics::")
                    .and_then(|rest| {
                        rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                            .next()
                    })
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: a metric not named by an evring::metrics constant: {}",
                            path.display(),
                            &arg[..arg.len().min(60)]
                        )
                    });
                assert!(
                    consts.contains(&format!("pub const {name}: &str = \"evring_")),
                    "{}: {name} is not a metric constant",
                    path.display()
                );
                uses += 1;
            }
        }
    }
    assert!(
        uses >= in_code.len(),
        "every metric is recorded somewhere ({uses} uses)"
    );

    // A live server with a snapshot taken: every metric that needs no fault to appear is in
    // the scrape, each with its HELP line.
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_with_metrics(&dir, &["--set", "snapshot_every_events=5"]);
    let c = server.client();
    for i in 0..10 {
        c.append("m", expected::ANY, vec![ev("E", format!("{i}").as_bytes())])
            .unwrap();
    }
    assert!(c
        .read("missing", 0, 1, evring::protocol::Direction::Forward)
        .is_err());
    let started = Instant::now();
    let scrape = loop {
        let scrape = scrape(&metrics);
        if scrape
            .samples
            .iter()
            .any(|s| s.metric == "evring_snapshot_lsn")
        {
            break scrape;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no snapshot was taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Only faults (a failed snapshot, no file descriptors left) make these appear, as
    // docs/OPERATIONS.md says; every other series is in a fault-free scrape.
    let fault_only = [
        "evring_snapshot_failures_total",
        "evring_accept_failures_total",
    ];
    let ops = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"),
    )
    .unwrap();
    let line = ops
        .lines()
        .find(|l| l.starts_with("- only after a fault:"))
        .expect("docs/OPERATIONS.md says which series appear only after a fault");
    let in_docs: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
    assert_eq!(in_docs, fault_only, "{line}");
    for name in fault_only {
        assert!(
            !scrape
                .samples
                .iter()
                .any(|s| family(&s.metric, &documented) == name),
            "{name} is in a scrape without faults"
        );
    }
    for (name, _) in documented
        .iter()
        .filter(|(n, _)| !fault_only.contains(&n.as_str()))
    {
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| family(&s.metric, &documented) == name),
            "{name} is documented but not in the scrape"
        );
        assert!(
            scrape.docs.get(name).is_some_and(|h| !h.is_empty()),
            "{name} has no # HELP line"
        );
    }
}

/// Bytes of a process's resident set now (VmRSS) and at its peak (VmHWM).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_client_dripping_bytes_does_not_stall_other_scrapes_and_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, metrics) = start_with_metrics(&dir, &[]);
    // The drip: a request head one byte every 3 s, for at most about 10 s, until the server
    // answers or closes.
    let mut drip = TcpStream::connect(&metrics).unwrap();
    drip.write_all(b"G").unwrap();
    let dripper = std::thread::spawn(move || {
        let started = Instant::now();
        drip.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut rest = b"ET /metrics HTTP/1.1\r\n".iter();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match drip.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    let Some(&b) = rest.next() else { break };
                    if started.elapsed() > Duration::from_secs(10) || drip.write_all(&[b]).is_err()
                    {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        (
            String::from_utf8_lossy(&got).into_owned(),
            started.elapsed(),
        )
    });
    // Meanwhile, three scrapes in a row each complete at once (well under the drip's 3 s
    // interval: a scrape queued behind the drip would wait for it).
    for i in 0..3 {
        let started = Instant::now();
        let scrape = scrape(&metrics);
        assert!(!scrape.samples.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "scrape {i} took {:?} while a client dripped bytes",
            started.elapsed()
        );
    }
    let (answer, after) = dripper.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "the drip is answered 408 at the head deadline: {answer:?}"
    );
    assert!(
        after < Duration::from_secs(9),
        "the drip was cut off after {after:?}"
    );
}

#[test]
fn a_request_without_end_is_refused_without_growing_memory() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_with_metrics(&dir, &[]);
    let pid = server.child.as_ref().unwrap().id();
    // Warm up (the first scrape renders and allocates), then reset the peak (VmHWM).
    scrape(&metrics);
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let (before, _) = rss(pid);
    let mut s = TcpStream::connect(&metrics).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 64 * MIB {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let sent = sender.join().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "a 431 answer or a reset: {answer:?}"
    );
    let (_, peak) = rss(pid);
    assert!(
        peak.saturating_sub(before) < 8 * MIB as u64,
        "RSS grew by {} KiB for a request of {} KiB",
        peak.saturating_sub(before) / 1024,
        sent / 1024
    );
    assert!(
        sent < 64 * MIB,
        "the server took all {sent} bytes of a request head without end"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused after {:?}",
        started.elapsed()
    );
    // The endpoint goes on.
    scrape(&metrics);
}

#[test]
fn only_get_metrics_is_answered_and_connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, metrics) = start_with_metrics(&dir, &[]);
    let status = |request: &[u8]| -> String {
        let text = exchange(&metrics, request);
        text.lines().next().unwrap_or("").to_string()
    };
    assert_eq!(
        status(b"GET /other HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 404 Not Found"
    );
    let text = exchange(
        &metrics,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
    assert_eq!(status(b"hello\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
    long.extend(std::iter::repeat_n(b"X-Filler: aaaaaaaaaaaaaaaa\r\n", 400).flatten());
    long.extend(b"\r\n");
    let text = exchange(&metrics, &long);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "a head beyond 8 KiB: {text:?}"
    );

    // Connections that send nothing hold their slots (until the head deadline); once
    // MAX_CONNECTIONS are held, the next one is answered 503 at once.
    let mut idle = Vec::new();
    for _ in 0..evring::metrics::MAX_CONNECTIONS {
        idle.push(TcpStream::connect(&metrics).unwrap());
    }
    let refused = (0..10).find_map(|_| {
        let mut s = TcpStream::connect(&metrics).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        if got.is_empty() {
            // It got a slot a connection before it was leaving: hold it too.
            idle.push(s);
            None
        } else {
            Some(String::from_utf8_lossy(&got).into_owned())
        }
    });
    let refused = refused.expect("a connection beyond the limit is answered");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(idle);
    // The slots come back.
    let started = Instant::now();
    loop {
        let text = exchange(&metrics, b"GET /metrics HTTP/1.1\r\n\r\n");
        if text.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "slots not freed"
        );
        std::thread::sleep(Duration::from_millis(20));
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
            .find(|s| evring::protocol::partition_of(s, 2) == p)
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
