//! What a dashboard learns about a partition's ring on the real evringd: STATS' time of the
//! last acknowledged append, the eviction counter and its one log line when the ring fills,
//! and AGGREGATE refusing a window that reaches back before what the ring holds whole —
//! naming the time to retry from — on the owning shard and through the view on the other.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{ev, hello, raw_connect, recv, send, Server};
use evring::protocol::{self, code, expected, Request, Response};

fn valued(value: f64, timestamp_ns: u64) -> protocol::Event {
    let mut e = ev("M", format!("{value}").as_bytes());
    e.value = value;
    e.timestamp_ns = timestamp_ns;
    e
}

fn metric(addr: &str, name: &str) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends an AGGREGATE of `[from, u64::MAX)` over `stream` on a raw connection, and the same
/// window as an AGGREGATE_GROUPS, which must answer alike: the buckets' (count, sum, min,
/// max), or the error's code and message.
fn aggregate(
    addr: &str,
    stream: &str,
    from_ns: u64,
) -> Result<(u64, f64, f64, f64), (u16, String)> {
    let mut s = raw_connect(addr);
    send(&mut s, 1, &hello());
    assert!(matches!(recv(&mut s), Some((1, Response::Hello { .. }))));
    send(
        &mut s,
        2,
        &Request::Aggregate {
            stream: stream.to_string(),
            type_prefix: String::new(),
            from_ns,
            to_ns: u64::MAX,
            bucket_ns: 0,
        },
    );
    let plain = match recv(&mut s) {
        Some((2, Response::Aggregated { buckets })) => {
            let b = &buckets[0];
            Ok((b.count, b.sum, b.min, b.max))
        }
        Some((2, Response::Error { code, message, .. })) => Err((code, message)),
        other => panic!("{other:?}"),
    };
    let q = protocol::GroupedAggregate {
        stream: stream.to_string(),
        ..protocol::GroupedAggregate::window(from_ns, u64::MAX)
    };
    send(&mut s, 3, &Request::AggregateGroups(Box::new(q)));
    let grouped = match recv(&mut s) {
        Some((3, Response::Groups(g))) => {
            let b = &g.groups[0].buckets[0];
            Ok((b.count, b.sum, b.min, b.max))
        }
        Some((3, Response::Error { code, message, .. })) => Err((code, message)),
        other => panic!("{other:?}"),
    };
    // NaN min/max of an empty bucket compare unequal: compare their bits.
    let bits = |r: &Result<(u64, f64, f64, f64), (u16, String)>| {
        r.clone()
            .map(|(c, s, lo, hi)| (c, s.to_bits(), lo.to_bits(), hi.to_bits()))
    };
    assert_eq!(
        bits(&plain),
        bits(&grouped),
        "AGGREGATE and AGGREGATE_GROUPS"
    );
    plain
}

#[test]
fn stats_give_the_time_of_the_last_acknowledged_append_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--partitions", "2"]);
    let c = server.client();
    let last = |c: &evring::client::BlockingClient| -> Vec<u64> {
        let stats: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
        stats["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["last_append_time_ns"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(last(&c), [0, 0], "no append since start");
    let stream = (0..)
        .map(|k| format!("s-{k}"))
        .find(|s| protocol::partition_of(s, 2) == 1)
        .unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    };
    let before = now();
    // A client timestamp far in the past: the server's clock is what counts.
    c.append(&stream, expected::ANY, vec![valued(1.0, 5)])
        .unwrap();
    let after = now();
    let times = last(&c);
    assert_eq!(times[0], 0);
    assert!(
        before <= times[1] && times[1] <= after,
        "{times:?} in {before}..{after}"
    );
    // A failed append does not count.
    let err = c.append(&stream, expected::NO_STREAM, vec![valued(2.0, 0)]);
    assert_eq!(err.unwrap_err().code(), Some(code::WRONG_EXPECTED_VERSION));
    assert_eq!(last(&c)[1], times[1]);
}

#[test]
fn a_full_ring_counts_its_evictions_logs_once_and_refuses_windows_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("evringd.log");
    let mut server = Server::start_logged(
        &dir.path().join("data"),
        &log,
        &[
            "--partitions",
            "2",
            "--set",
            "shards=2",
            "--set",
            "pin_cpus=false",
            "--set",
            "shard_ports=\"auto\"",
            "--set",
            "ring_capacity_events=16",
            "--set",
            "metrics_listen=\"127.0.0.1:0\"",
        ],
    );
    let metrics = server.metrics_addr();
    let evicted = || metric(&metrics, "evring_ring_evicted_events_total");
    assert_eq!(evicted(), 0.0);
    // Partition 1 (shard 1's): 40 events at increasing times 1000, 1001, …, in 8 appends.
    let stream = (0..)
        .map(|k| format!("w-{k}"))
        .find(|s| protocol::partition_of(s, 2) == 1)
        .unwrap();
    let c = server.client();
    for batch in 0..8u64 {
        let events = (batch * 5..batch * 5 + 5)
            .map(|i| valued(i as f64, 1000 + i))
            .collect();
        c.append(&stream, expected::ANY, events).unwrap();
    }
    // 16 slots: events 24..40 are held, 0..24 evicted (timestamps up to 1023).
    assert_eq!(evicted(), 24.0);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ring is full"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {lines:?}");
    for part in [
        "partition 1's ring is full",
        "16 events",
        "ring_capacity_events",
        "ring_capacity_bytes",
    ] {
        assert!(lines[0].contains(part), "{part:?} in {}", lines[0]);
    }
    let stats: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
    assert_eq!(stats["partitions"][1]["ring"]["complete_from_ns"], 1024);
    assert_eq!(stats["partitions"][0]["ring"]["complete_from_ns"], 0);
    let addr_file = server.data_dir.with_extension("addr");
    let shard = |i: usize| {
        let text = std::fs::read_to_string(&addr_file).unwrap();
        let key = format!("shard{i}=");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .unwrap()
            .to_string()
    };
    // The reference: events 24..40 (values 24..39), all with timestamps ≥ 1024.
    let want = (16, (24..40).sum::<u64>() as f64, 24.0, 39.0);
    let check = |addr: &str| {
        for target in [stream.as_str(), ""] {
            // The ring no longer holds everything from 0, nor from 1023, on: refused.
            for from in [0, 1023] {
                let (code, message) = aggregate(addr, target, from).unwrap_err();
                assert_eq!(code, code::INVALID_ARGUMENT);
                for part in [
                    "partition 1's ring",
                    "events up to 1023 ns (1970-01-01T00:00:00.000001023Z)",
                    "aggregate from 1024 or later",
                    "ring_capacity_events",
                ] {
                    assert!(message.contains(part), "{part:?} in {message}");
                }
            }
            // From the time named + 1: exact.
            assert_eq!(
                aggregate(addr, target, 1024),
                Ok(want),
                "{target:?} on {addr}"
            );
        }
    };
    // Shard 1 owns partition 1; shard 0 reads it through its view.
    check(&shard(1));
    check(&shard(0));
    // More evictions: counted, not logged again.
    c.append(&stream, expected::ANY, vec![valued(40.0, 1040)])
        .unwrap();
    assert_eq!(evicted(), 25.0);
    // After a restart the ring is rebuilt from the journal (no snapshot): the same rule.
    drop(c);
    server.kill_and_restart();
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.matches("ring is full").count(), 1);
    let want = (16, (25..41).sum::<u64>() as f64, 25.0, 40.0);
    for addr in [shard(0), shard(1)] {
        let (code, message) = aggregate(&addr, &stream, 1024).unwrap_err();
        assert_eq!(code, code::INVALID_ARGUMENT);
        assert!(
            message.contains("aggregate from 1025 or later"),
            "{message}"
        );
        assert_eq!(aggregate(&addr, &stream, 1025), Ok(want));
    }
}

#[test]
fn a_restart_from_a_snapshot_keeps_what_the_ring_no_longer_held() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(
        &data,
        &[
            "--partitions",
            "1",
            "--set",
            "ring_capacity_events=16",
            "--set",
            "snapshot_every_events=30",
        ],
    );
    let c = server.client();
    // Event 0 has the latest time of all (5000); the others 1001, 1002, ….
    let at = |i: u64| if i == 0 { 5000 } else { 1000 + i };
    for i in 0..30u64 {
        c.append("s", expected::ANY, vec![valued(i as f64, at(i))])
            .unwrap();
    }
    let snapshot = || {
        std::fs::read_dir(data.join("p0"))
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "snap"))
    };
    let started = std::time::Instant::now();
    while !snapshot() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for i in 30..40u64 {
        c.append("s", expected::ANY, vec![valued(i as f64, at(i))])
            .unwrap();
    }
    drop(c);
    // The snapshot's ring held events 14..30 only; event 0 (time 5000) had left it before.
    // Rebuilt from the snapshot and the journal after it, the ring must still know that.
    server.kill_and_restart();
    let c = server.client();
    let stats: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
    assert_eq!(stats["partitions"][0]["ring"]["complete_from_ns"], 5001);
    let err = c.aggregate("s", "", 1030, u64::MAX, 0).unwrap_err();
    assert_eq!(err.code(), Some(code::INVALID_ARGUMENT));
    assert!(err.to_string().contains("events up to 5000 ns"), "{err}");
    let agg = c.aggregate("s", "", 5001, u64::MAX, 0).unwrap();
    assert_eq!(agg[0].count, 0, "nothing at or after 5001");
}
