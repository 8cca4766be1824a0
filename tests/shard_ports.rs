//! Shard ports against the real evringd: with `shard_ports` on, every shard listens on its
//! own port, HELLO names each partition's owner's port, the Rust client opens a connection
//! per shard and routes each stream's requests to its owner (STATS `cross_shard_calls` stays
//! flat while appends to every partition pour in), and any port still serves any partition.
//! With the setting off, HELLO names the client port and the same appends cross shards.

mod common;

use std::path::Path;

use common::{ev, raw_connect, recv, send, Server};
use evring::protocol::{expected, AppendResult, Direction, Request, Response};

const PARTITIONS: u32 = 4;

fn start(data: &Path, shard_ports: &str) -> Server {
    Server::start(
        data,
        &[
            "--partitions",
            "4",
            "--set",
            "shards=2",
            "--set",
            "pin_cpus=false",
            "--set",
            &format!("shard_ports=\"{shard_ports}\""),
        ],
    )
}

/// The shard addresses the addresses file lists, by shard.
fn shard_lines(data: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(data.with_extension("addr")).unwrap();
    let mut v: Vec<(usize, String)> = text
        .lines()
        .filter_map(|l| {
            let (k, a) = l.split_once('=')?;
            Some((k.strip_prefix("shard")?.parse().ok()?, a.to_string()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, a)| a).collect()
}

fn hello_addresses(addr: &str) -> Vec<String> {
    let mut s = raw_connect(addr);
    send(&mut s, 1, &common::hello());
    match recv(&mut s) {
        Some((
            1,
            Response::Hello {
                partition_addresses,
                ..
            },
        )) => partition_addresses,
        other => panic!("HELLO reply: {other:?}"),
    }
}

fn cross_shard_calls(c: &evring::client::BlockingClient) -> u64 {
    let json: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
    json["cross_shard_calls"]
        .as_u64()
        .expect("cross_shard_calls")
}

/// Appends one event to each of 40 streams (spread over all partitions); returns how many
/// partition calls crossed shards meanwhile, less the 2 of the closing STATS itself (it asks
/// every partition from whichever shard its connection landed on).
fn crossings_for_appends(c: &evring::client::BlockingClient) -> u64 {
    let before = cross_shard_calls(c);
    let mut partitions_hit = std::collections::HashSet::new();
    for i in 0..40 {
        let stream = format!("s-{i}");
        let r = c
            .append(&stream, expected::ANY, vec![ev("t", b"x")])
            .unwrap();
        partitions_hit.insert(r.partition);
    }
    assert_eq!(partitions_hit.len(), PARTITIONS as usize);
    let after = cross_shard_calls(c);
    after - before - 2
}

#[test]
fn shard_aware_clients_reach_each_streams_owner_directly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, "auto");
    let shards = shard_lines(&data);
    assert_eq!(shards.len(), 2, "{shards:?}");
    assert_ne!(shards[0], shards[1]);
    assert!(!shards.contains(&server.addr));

    // HELLO on any port names partition p's owner (shard p % 2) for every p.
    for port in [&server.addr, &shards[0], &shards[1]] {
        let addrs = hello_addresses(port);
        let want: Vec<String> = (0..PARTITIONS as usize)
            .map(|p| shards[p % 2].clone())
            .collect();
        assert_eq!(addrs, want, "HELLO on {port}");
    }

    let c = server.client();
    assert_eq!(c.client.connections(), 3);
    assert_eq!(
        crossings_for_appends(&c),
        0,
        "routed appends crossed shards"
    );
    // Reads and stream info go the same way, and see the appends.
    let before = cross_shard_calls(&c);
    for i in 0..40 {
        let stream = format!("s-{i}");
        let (events, _) = c.read(&stream, 0, 10, Direction::Forward).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(c.stream_info(&stream).unwrap().next_version, 1);
    }
    assert_eq!(cross_shard_calls(&c) - before - 2, 0);

    // A shard port serves another shard's partitions too (forwarded).
    let foreign = (0..100)
        .map(|i| format!("f-{i}"))
        .find(|s| evring::protocol::partition_of(s, PARTITIONS) % 2 == 1)
        .unwrap();
    let mut raw = raw_connect(&shards[0]);
    send(&mut raw, 1, &common::hello());
    assert!(matches!(recv(&mut raw), Some((1, Response::Hello { .. }))));
    send(
        &mut raw,
        2,
        &Request::Append {
            stream: foreign.clone(),
            expected_version: expected::NO_STREAM,
            events: vec![ev("t", b"y")],
        },
    );
    match recv(&mut raw) {
        Some((2, Response::Appended(AppendResult { partition, .. }))) => {
            assert_eq!(partition % 2, 1)
        }
        other => panic!("append on shard 0's port: {other:?}"),
    }
    let (events, _) = c.read(&foreign, 0, 10, Direction::Forward).unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn without_shard_ports_hello_names_the_client_port_and_appends_cross_shards() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, "off");
    assert!(shard_lines(&data).is_empty());
    let addrs = hello_addresses(&server.addr);
    assert_eq!(addrs, vec![server.addr.clone(); PARTITIONS as usize]);
    let c = server.client();
    assert_eq!(c.client.connections(), 1);
    // One connection lands on one shard; the other shard's partitions are a hop away.
    assert!(crossings_for_appends(&c) > 0);
}

/// Starts evringd with `settings` expecting a refusal; returns its error output.
fn refused(data: &str, settings: &[&str]) -> String {
    let mut args = vec!["--data-dir", data, "--listen", "127.0.0.1:0"];
    for s in settings {
        args.extend(["--set", s]);
    }
    let (ok, err) = common::start_failure(&args, |_| {});
    assert!(!ok, "evringd accepted {settings:?}");
    err
}

#[test]
fn bad_shard_ports_settings_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let err = refused(data, &["shard_ports=\"some\""]);
    assert!(err.contains("shard_ports must be"), "{err}");
    // A base port whose range is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = refused(data, &["shards=1", &format!("shard_ports=\"{port}\"")]);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (shard 0's port)"
        )),
        "{err}"
    );
}

#[test]
fn dropping_a_client_closes_every_connection_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, "auto");
    let watcher = server.client(); // 3 connections
    let connections = || -> u64 {
        let json: serde_json::Value = serde_json::from_str(&watcher.stats().unwrap()).unwrap();
        json["connections"].as_u64().unwrap()
    };
    assert_eq!(connections(), 3);
    let c = server.client();
    c.append("s", expected::ANY, vec![ev("t", b"x")]).unwrap();
    assert_eq!(connections(), 6);
    drop(c);
    let started = std::time::Instant::now();
    while connections() != 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the dropped client's connections stay open: {}",
            connections()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
