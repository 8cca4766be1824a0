//! Protocol conformance across shards, on the real evringd with two shards and four
//! partitions: every request type, sent to either shard's own port, is served for partitions
//! of either shard with the reply docs/PROTOCOL.md gives it. Partition p belongs to shard
//! p mod 2, so each connection asks about two partitions of its own shard and two of the other.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{ev, hello, raw_connect, recv, send, Server};
use evring::protocol::{
    self, code, expected, AppendResult, Direction, RecordedEvent, Request, Response, StreamInfo,
    SubscribeTarget, TrimBy,
};

const PARTITIONS: u32 = 4;

/// A name of partition `p` (streams and keys share the routing hash).
fn name_in(prefix: &str, p: u32) -> String {
    (0..)
        .map(|k| format!("{prefix}-{k}"))
        .find(|s| protocol::partition_of(s, PARTITIONS) == p)
        .unwrap()
}

/// One request, one reply with the same request id.
fn call(s: &mut TcpStream, id: u64, req: &Request) -> Response {
    send(s, id, req);
    match recv(s) {
        Some((got, reply)) => {
            assert_eq!(got, id, "the reply carries the request's id: {reply:?}");
            reply
        }
        None => panic!("the connection closed on {req:?}"),
    }
}

fn valued(i: u64) -> protocol::Event {
    let mut e = ev("T", format!("{i}").as_bytes());
    e.value = i as f64;
    e.timestamp_ns = 1_000 + i;
    e
}

/// The events pushed for subscription `id` until `n` have arrived.
fn pushed(s: &mut TcpStream, id: u64, n: usize) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        match recv(s) {
            Some((rid, Response::Pushed { events })) => {
                assert_eq!(rid, id, "a push carries its SUBSCRIBE's request id");
                got.extend(events);
            }
            other => panic!("waiting for pushes of {id}: {other:?}"),
        }
    }
    assert_eq!(got.len(), n, "no more than asked for");
    got
}

/// Every request type for partition `p`, on a connection to shard `shard`.
fn exercise(s: &mut TcpStream, shard: usize, p: u32) {
    let stream = name_in(&format!("conf{shard}"), p);
    let tag = format!("shard {shard}, partition {p} ({stream})");

    assert_eq!(call(s, 10, &Request::Ping), Response::Pong, "{tag}");

    // APPEND: a new stream, then a batch at the right expected version, then a wrong one.
    let appended = call(
        s,
        11,
        &Request::Append {
            stream: stream.clone(),
            expected_version: expected::NO_STREAM,
            events: vec![valued(0)],
        },
    );
    let Response::Appended(AppendResult {
        first_version: 0,
        last_version: 0,
        partition,
        lsn: first_lsn,
    }) = appended
    else {
        panic!("{tag}: {appended:?}")
    };
    assert_eq!(partition, p, "{tag}");
    let appended = call(
        s,
        12,
        &Request::Append {
            stream: stream.clone(),
            expected_version: 0,
            events: vec![valued(1), valued(2)],
        },
    );
    assert!(
        matches!(
            appended,
            Response::Appended(AppendResult { first_version: 1, last_version: 2, partition: got, .. }) if got == p
        ),
        "{tag}: {appended:?}"
    );
    match call(
        s,
        13,
        &Request::Append {
            stream: stream.clone(),
            expected_version: 0,
            events: vec![valued(9)],
        },
    ) {
        Response::Error {
            code: code::WRONG_EXPECTED_VERSION,
            current_version: Some(2),
            ..
        } => {}
        other => panic!("{tag}: a wrong expected version: {other:?}"),
    }

    // READ both ways.
    let read = |s: &mut TcpStream, id, from_version, direction| match call(
        s,
        id,
        &Request::Read {
            stream: stream.clone(),
            from_version,
            max_count: 10,
            direction,
        },
    ) {
        Response::Events { events, .. } => events
            .iter()
            .map(|e| (e.stream_version, e.partition, e.event.data.clone()))
            .collect::<Vec<_>>(),
        other => panic!("{tag}: READ: {other:?}"),
    };
    let want: Vec<_> = (0..3u64)
        .map(|v| (v, p, format!("{v}").into_bytes()))
        .collect();
    assert_eq!(read(s, 14, 0, Direction::Forward), want, "{tag}");
    let mut back = want.clone();
    back.reverse();
    assert_eq!(read(s, 15, 2, Direction::Backward), back, "{tag}");

    // STREAM_INFO.
    match call(
        s,
        16,
        &Request::StreamInfo {
            stream: stream.clone(),
        },
    ) {
        Response::StreamInfo(StreamInfo {
            next_version: 3,
            first_lsn: stream_first_lsn,
            last_lsn,
        }) => {
            assert_eq!(first_lsn, stream_first_lsn, "{tag}");
            assert!(last_lsn > first_lsn, "{tag}");
        }
        other => panic!("{tag}: STREAM_INFO: {other:?}"),
    }

    // AGGREGATE of the stream: one bucket over the whole window, then 1 ns buckets.
    match call(
        s,
        17,
        &Request::Aggregate {
            stream: stream.clone(),
            type_prefix: String::new(),
            from_ns: 0,
            to_ns: u64::MAX,
            bucket_ns: 0,
        },
    ) {
        Response::Aggregated { buckets } => {
            assert_eq!(buckets.len(), 1, "{tag}");
            let b = buckets[0];
            assert_eq!((b.count, b.sum, b.min, b.max), (3, 3.0, 0.0, 2.0), "{tag}");
        }
        other => panic!("{tag}: AGGREGATE: {other:?}"),
    }
    match call(
        s,
        18,
        &Request::Aggregate {
            stream: stream.clone(),
            type_prefix: "T".into(),
            from_ns: 1_000,
            to_ns: 1_003,
            bucket_ns: 1,
        },
    ) {
        Response::Aggregated { buckets } => {
            let counts: Vec<_> = buckets.iter().map(|b| (b.start_ns, b.count)).collect();
            assert_eq!(counts, [(1_000, 1), (1_001, 1), (1_002, 1)], "{tag}");
        }
        other => panic!("{tag}: AGGREGATE in buckets: {other:?}"),
    }
    // AGGREGATE_GROUPS of the stream by prefix, grouped by type, the top one by sum.
    let q = protocol::GroupedAggregate {
        stream: stream.clone(),
        stream_match: protocol::NameMatch::Prefix,
        group_by: "type".into(),
        order: protocol::GroupOrder::Sum,
        top_k: 1,
        ..protocol::GroupedAggregate::window(0, u64::MAX)
    };
    match call(s, 40, &Request::AggregateGroups(Box::new(q))) {
        Response::Groups(g) => {
            assert_eq!(
                (g.matched, g.groups_total, g.groups.len()),
                (3, 1, 1),
                "{tag}"
            );
            let b = g.groups[0].buckets[0];
            assert_eq!((b.count, b.sum), (3, 3.0), "{tag}");
        }
        other => panic!("{tag}: AGGREGATE_GROUPS: {other:?}"),
    }

    // SUBSCRIBE to the stream from version 1: catch-up, then a live event, then UNSUBSCRIBE.
    assert_eq!(
        call(
            s,
            19,
            &Request::Subscribe {
                target: SubscribeTarget::Stream,
                name: stream.clone(),
                from: 1,
                type_prefix: String::new(),
                positions: Vec::new(),
            },
        ),
        Response::Subscribed,
        "{tag}"
    );
    let caught: Vec<_> = pushed(s, 19, 2)
        .iter()
        .map(|e| (e.stream.clone(), e.stream_version))
        .collect();
    assert_eq!(caught, [(stream.clone(), 1), (stream.clone(), 2)], "{tag}");
    send(
        s,
        20,
        &Request::Append {
            stream: stream.clone(),
            expected_version: 2,
            events: vec![valued(3)],
        },
    );
    // The live push and the append's reply may come in either order.
    let mut live = None;
    let mut acked = false;
    while live.is_none() || !acked {
        match recv(s) {
            Some((19, Response::Pushed { events })) => {
                assert_eq!(events.len(), 1, "{tag}");
                live = Some(events[0].stream_version);
            }
            Some((20, Response::Appended(AppendResult { first_version, .. }))) => {
                assert_eq!(first_version, 3, "{tag}");
                acked = true;
            }
            other => panic!("{tag}: live push or reply: {other:?}"),
        }
    }
    assert_eq!(live, Some(3), "{tag}");
    assert_eq!(
        call(
            s,
            21,
            &Request::Unsubscribe {
                subscription_id: 19
            }
        ),
        Response::Subscribed,
        "{tag}"
    );

    // SUBSCRIBE to the partition from its first LSN of this stream: this stream's 4 events
    // are what it delivers, in LSN order.
    assert_eq!(
        call(
            s,
            22,
            &Request::Subscribe {
                target: SubscribeTarget::Partition,
                name: p.to_string(),
                from: first_lsn,
                type_prefix: String::new(),
                positions: Vec::new(),
            },
        ),
        Response::Subscribed,
        "{tag}"
    );
    // Nothing else was appended to the partition since: exactly this stream's 4 events.
    let mut mine = Vec::new();
    let mut last_lsn = first_lsn;
    for e in pushed(s, 22, 4) {
        assert_eq!((e.partition, &e.stream), (p, &stream), "{tag}");
        assert!(e.lsn >= last_lsn, "{tag}: LSN order");
        last_lsn = e.lsn + 1;
        mine.push(e.stream_version);
    }
    assert_eq!(mine, [0, 1, 2, 3], "{tag}");
    assert_eq!(
        call(
            s,
            23,
            &Request::Unsubscribe {
                subscription_id: 22
            }
        ),
        Response::Subscribed,
        "{tag}"
    );

    // EXECUTE and QUERY on the key-value model, a key of the same partition.
    let key = name_in(&format!("key{shard}"), p);
    let set = format!(r#"{{"op":"set","key":"{key}","value":"v{p}"}}"#);
    match call(
        s,
        24,
        &Request::Execute {
            model: "kv".into(),
            command: set.into_bytes(),
        },
    ) {
        Response::Executed { result } => {
            let v: serde_json::Value = serde_json::from_slice(&result).unwrap();
            assert_eq!(v["version"], 1, "{tag}: {v}");
        }
        other => panic!("{tag}: EXECUTE: {other:?}"),
    }
    let get = format!(r#"{{"op":"get","key":"{key}"}}"#);
    match call(
        s,
        25,
        &Request::Query {
            model: "kv".into(),
            query: get.into_bytes(),
        },
    ) {
        Response::Queried { result } => {
            let v: serde_json::Value = serde_json::from_slice(&result).unwrap();
            assert_eq!(v["value"], format!("v{p}"), "{tag}: {v}");
            assert_eq!(v["version"], 1, "{tag}: {v}");
        }
        other => panic!("{tag}: QUERY: {other:?}"),
    }

    // TRIM and DELETE_STREAM, on a stream of their own (of type "G": the totals after
    // `exercise` count type "T").
    let gone = name_in(&format!("gone{shard}"), p);
    let append = Request::Append {
        stream: gone.clone(),
        expected_version: expected::NO_STREAM,
        events: (0..4).map(|i| ev("G", format!("{i}").as_bytes())).collect(),
    };
    assert!(
        matches!(call(s, 26, &append), Response::Appended(_)),
        "{tag}"
    );
    let trim = Request::Trim {
        stream: gone.clone(),
        by: TrimBy::KeepLast(1),
    };
    assert_eq!(
        call(s, 27, &trim),
        Response::Deleted { deleted: 3 },
        "{tag}"
    );
    let delete = Request::DeleteStream {
        stream: gone.clone(),
    };
    assert_eq!(
        call(s, 28, &delete),
        Response::Deleted { deleted: 1 },
        "{tag}"
    );
    match call(s, 29, &delete) {
        Response::Error {
            code: code::STREAM_NOT_FOUND,
            ..
        } => {}
        other => panic!("{tag}: DELETE_STREAM of a deleted stream: {other:?}"),
    }
}

#[test]
fn every_request_type_is_served_for_partitions_of_either_shard_on_either_shards_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--partitions",
            "4",
            "--set",
            "shards=2",
            "--set",
            "pin_cpus=false",
            "--set",
            "shard_ports=\"auto\"",
        ],
    );
    for shard in 0..2 {
        let mut s = raw_connect(&server.shard_addr(shard));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        match call(&mut s, 1, &hello()) {
            Response::Hello {
                partition_addresses,
                ..
            } => {
                assert_eq!(partition_addresses.len(), PARTITIONS as usize);
                for (p, a) in partition_addresses.iter().enumerate() {
                    assert_eq!(a, &server.shard_addr(p % 2), "partition {p}'s owner");
                }
            }
            other => panic!("HELLO: {other:?}"),
        }
        for p in 0..PARTITIONS {
            exercise(&mut s, shard, p);
        }
        // The whole: STATS lists every partition, an AGGREGATE over all streams and a
        // SUBSCRIBE all from 0 see what both connections so far appended (4 events per
        // (shard, partition) of the connections up to this one).
        let events = 4 * PARTITIONS as u64 * (shard as u64 + 1);
        match call(&mut s, 2, &Request::Stats) {
            Response::Stats { json } => {
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                assert_eq!(v["partitions"].as_array().unwrap().len(), 4, "{v}");
            }
            other => panic!("STATS: {other:?}"),
        }
        match call(
            &mut s,
            3,
            &Request::Aggregate {
                stream: String::new(),
                type_prefix: "T".into(),
                from_ns: 0,
                to_ns: u64::MAX,
                bucket_ns: 0,
            },
        ) {
            Response::Aggregated { buckets } => assert_eq!(buckets[0].count, events),
            other => panic!("AGGREGATE all: {other:?}"),
        }
        let q = protocol::GroupedAggregate {
            event_type: "T".into(),
            type_match: protocol::NameMatch::Prefix,
            ..protocol::GroupedAggregate::window(0, u64::MAX)
        };
        match call(&mut s, 30, &Request::AggregateGroups(Box::new(q))) {
            Response::Groups(g) => assert_eq!(g.groups[0].buckets[0].count, events),
            other => panic!("AGGREGATE_GROUPS all: {other:?}"),
        }
        assert_eq!(
            call(
                &mut s,
                4,
                &Request::Subscribe {
                    target: SubscribeTarget::All,
                    name: String::new(),
                    from: 0,
                    type_prefix: "T".into(),
                    positions: Vec::new(),
                },
            ),
            Response::Subscribed
        );
        let all = pushed(&mut s, 4, events as usize);
        let mut per_stream = std::collections::BTreeMap::<String, Vec<u64>>::new();
        for e in all {
            assert_eq!(
                protocol::partition_of(&e.stream, PARTITIONS),
                e.partition,
                "a pushed event names its stream and partition"
            );
            per_stream
                .entry(e.stream)
                .or_default()
                .push(e.stream_version);
        }
        assert_eq!(per_stream.len(), PARTITIONS as usize * (shard + 1));
        for (stream, versions) in per_stream {
            assert_eq!(versions, [0, 1, 2, 3], "{stream}");
        }
        // The key-value model's domain events (SUBSCRIBE target 3): one per set so far.
        assert_eq!(
            call(
                &mut s,
                5,
                &Request::Subscribe {
                    target: SubscribeTarget::Model,
                    name: "kv".into(),
                    from: 0,
                    type_prefix: String::new(),
                    positions: Vec::new(),
                },
            ),
            Response::Subscribed
        );
        assert_eq!(
            pushed(&mut s, 5, PARTITIONS as usize * (shard + 1)).len(),
            PARTITIONS as usize * (shard + 1)
        );
    }
}
