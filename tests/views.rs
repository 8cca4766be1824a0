//! Stable views in production, on the real evringd with two shards: a request that arrives
//! on one shard for a partition of the other is served through the partition's view, without
//! a message to the owner (AGGREGATE, the ring part of a subscription's catch-up), and the
//! results are exact while the owner appends at full speed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ev, hello, raw_connect, recv, send, Server};
use evring::protocol::{self, expected, Request, Response, SubscribeTarget};

/// Two shards, two partitions, a port per shard, metrics on.
fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--partitions",
        "2",
        "--set",
        "shards=2",
        "--set",
        "pin_cpus=false",
        "--set",
        "shard_ports=\"auto\"",
        "--set",
        "metrics_listen=\"127.0.0.1:0\"",
    ];
    args.extend_from_slice(extra);
    Server::start(&dir.join("data"), &args)
}

fn shard0(server: &Server) -> String {
    server.shard_addr(0)
}

/// A stream of partition 1, which shard 1 owns (partition p on shard p mod 2).
fn remote_stream(tag: &str) -> String {
    (0..)
        .map(|k| format!("{tag}-{k}"))
        .find(|s| protocol::partition_of(s, 2) == 1)
        .unwrap()
}

fn messages(metrics: &str) -> f64 {
    let mut s = TcpStream::connect(metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("evring_cross_shard_messages_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn raw_hello(addr: &str) -> TcpStream {
    let mut s = raw_connect(addr);
    send(&mut s, 1, &hello());
    assert!(matches!(recv(&mut s), Some((1, Response::Hello { .. }))));
    s
}

fn valued(v: f64) -> protocol::Event {
    let mut e = ev("M", format!("{v}").as_bytes());
    e.value = v;
    e
}

/// Appends `n` events valued 0..n to `stream`, batches of 100.
fn fill(server: &Server, stream: &str, n: u64) {
    let c = server.client();
    let mut v = 0u64;
    while v < n {
        let batch = (v..(v + 100).min(n)).map(|i| valued(i as f64)).collect();
        c.append(stream, expected::ANY, batch).unwrap();
        v = (v + 100).min(n);
    }
}

/// The cross-shard messages an AGGREGATE and a SUBSCRIBE all (catch-up of `n` events of
/// the other shard's partition, then its live registration) cost, asked on shard 0.
fn messages_for_reads(n: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let metrics = server.metrics_addr();
    let stream = remote_stream("hop");
    fill(&server, &stream, n);
    let mut s = raw_hello(&shard0(&server));
    let before = messages(&metrics);
    send(
        &mut s,
        2,
        &Request::Aggregate {
            stream: stream.clone(),
            type_prefix: String::new(),
            from_ns: 0,
            to_ns: u64::MAX,
            bucket_ns: 0,
        },
    );
    match recv(&mut s) {
        Some((2, Response::Aggregated { buckets })) => {
            assert_eq!(buckets[0].count, n);
            assert_eq!(buckets[0].sum, (n * (n - 1) / 2) as f64);
        }
        other => panic!("{other:?}"),
    }
    let after_aggregate = messages(&metrics);
    send(
        &mut s,
        3,
        &Request::Subscribe {
            target: SubscribeTarget::All,
            name: String::new(),
            from: 0,
            type_prefix: String::new(),
            positions: Vec::new(),
        },
    );
    let mut got = 0u64;
    while got < n {
        match recv(&mut s) {
            Some((3, Response::Subscribed)) => {}
            Some((3, Response::Pushed { events })) => {
                for e in events {
                    assert_eq!(e.stream, stream);
                    assert_eq!(e.stream_version, got, "in order, no gap");
                    got += 1;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    // The registration is answered before the catch-up ends; wait for the count to settle.
    let started = Instant::now();
    let mut after_subscribe = messages(&metrics);
    while started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
        let now = messages(&metrics);
        if now == after_subscribe {
            break;
        }
        after_subscribe = now;
    }
    (after_aggregate - before, after_subscribe - after_aggregate)
}

#[test]
fn reads_of_the_other_shards_partition_from_its_ring_send_no_cross_shard_message() {
    let (aggregate_small, subscribe_small) = messages_for_reads(10);
    let (aggregate_large, subscribe_large) = messages_for_reads(3_000);
    assert_eq!(aggregate_small, 0.0, "AGGREGATE through the view");
    assert_eq!(aggregate_large, 0.0);
    // Registering the live subscription at the owner: one call and its reply, whatever the
    // history's length (the catch-up itself crossed nothing).
    assert_eq!(subscribe_small, 2.0);
    assert_eq!(subscribe_large, 2.0);
}

#[test]
fn remote_readers_get_exact_results_while_the_owner_appends_at_full_speed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--set", "ring_capacity_events=1048576"]);
    let stream = remote_stream("stress");
    let stop = Arc::new(AtomicBool::new(false));
    // The owner appends without pause: values 0, 1, 2, … in order (one writer).
    let writer = {
        let c = server.client();
        let stream = stream.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch = (next..next + 50).map(|i| valued(i as f64)).collect();
                c.append(&stream, expected::ANY, batch).unwrap();
                next += 50;
            }
            next
        })
    };
    // Remote readers on shard 0: aggregates must always see a prefix (count c, sum of
    // 0..c), never less than before.
    let addr = shard0(&server);
    let aggregators: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            let stream = stream.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = raw_hello(&addr);
                let (mut last, mut checks) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    send(
                        &mut s,
                        9,
                        &Request::Aggregate {
                            stream: stream.clone(),
                            type_prefix: String::new(),
                            from_ns: 0,
                            to_ns: u64::MAX,
                            bucket_ns: 0,
                        },
                    );
                    match recv(&mut s) {
                        Some((9, Response::Aggregated { buckets })) => {
                            let c = buckets[0].count;
                            assert!(c >= last, "the count went back from {last} to {c}");
                            assert_eq!(
                                buckets[0].sum,
                                (c * c.saturating_sub(1) / 2) as f64,
                                "a prefix of {c} events"
                            );
                            last = c;
                            checks += 1;
                        }
                        other => panic!("{other:?}"),
                    }
                }
                checks
            })
        })
        .collect();
    // A remote subscriber catching up while it grows.
    std::thread::sleep(Duration::from_millis(300));
    let mut sub = raw_hello(&addr);
    send(
        &mut sub,
        5,
        &Request::Subscribe {
            target: SubscribeTarget::All,
            name: String::new(),
            from: 0,
            type_prefix: String::new(),
            positions: Vec::new(),
        },
    );
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    for a in aggregators {
        assert!(a.join().unwrap() > 0);
    }
    let mut got = 0u64;
    while got < written {
        match recv(&mut sub) {
            Some((5, Response::Subscribed)) => {}
            Some((5, Response::Pushed { events })) => {
                for e in events {
                    assert_eq!(e.stream_version, got, "every event once, in order");
                    assert_eq!(e.event.value, got as f64);
                    got += 1;
                }
            }
            other => panic!("after {got} of {written}: {other:?}"),
        }
    }
    eprintln!("stress: {written} events appended; the subscriber got all of them in order");
}

#[test]
fn a_catch_up_of_more_history_than_the_connection_buffer_arrives_whole_on_either_shard() {
    let dir = tempfile::tempdir().unwrap();
    // 30,000 events take about 2.4 MB as pushes: 9 times the 256 KiB outbound buffer.
    let server = start(dir.path(), &["--set", "connection_buffer_bytes=262144"]);
    let stream = remote_stream("history");
    let n = 30_000u64;
    fill(&server, &stream, n);
    // Shard 0 reads partition 1 through its view; shard 1 owns it.
    for shard in [0, 1] {
        let mut s = raw_hello(&server.shard_addr(shard));
        send(
            &mut s,
            4,
            &Request::Subscribe {
                target: SubscribeTarget::All,
                name: String::new(),
                from: 0,
                type_prefix: String::new(),
                positions: Vec::new(),
            },
        );
        // Read nothing for a while: the socket and the outbound buffer fill up, and the
        // catch-up waits for the subscriber instead of dropping it.
        std::thread::sleep(Duration::from_millis(300));
        let mut got = 0u64;
        while got < n {
            match recv(&mut s) {
                Some((4, Response::Subscribed)) => {}
                Some((4, Response::Pushed { events })) => {
                    for e in events {
                        assert_eq!(e.stream_version, got, "shard {shard}: in order, no gap");
                        got += 1;
                    }
                }
                other => panic!("shard {shard}, after {got} of {n} events: {other:?}"),
            }
        }
    }
}

#[test]
fn a_stop_does_not_wait_for_a_subscriber_that_reads_none_of_its_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &["--set", "connection_buffer_bytes=262144"]);
    let stream = remote_stream("unread");
    fill(&server, &stream, 30_000);
    let mut s = raw_hello(&shard0(&server));
    send(
        &mut s,
        4,
        &Request::Subscribe {
            target: SubscribeTarget::All,
            name: String::new(),
            from: 0,
            type_prefix: String::new(),
            positions: Vec::new(),
        },
    );
    // The catch-up fills the socket and the outbound buffer, then waits for the subscriber.
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.as_ref().unwrap().id();
    let (tx, rx) = std::sync::mpsc::channel();
    let stopper = std::thread::spawn(move || {
        let started = Instant::now();
        let code = server.terminate();
        let _ = tx.send((code, started.elapsed()));
    });
    let Ok((code, took)) = rx.recv_timeout(Duration::from_secs(20)) else {
        // SAFETY: signalling our own child by pid has no memory effects.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        panic!("the stop still waits for the subscriber after 20 s");
    };
    stopper.join().unwrap();
    assert_eq!(code, Some(0), "a clean stop");
    // A stop gives connections two seconds to send what is queued; this one reads nothing.
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("stopped in {took:?} with a subscriber reading nothing");
    drop(s);
}
