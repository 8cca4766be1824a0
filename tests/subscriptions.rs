//! Subscriptions on the real evringd: a subscriber that does not read is cut off with error 30
//! and resubscribes without a gap, the per-connection subscription limit, UNSUBSCRIBE, and
//! partition subscriptions (catch-up then live, in LSN order).

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{ev, hello, raw_connect, recv, send, Server};
use evring::client::SubscriptionItem;
use evring::protocol::partition_of;
use evring::protocol::{code, expected, RecordedEvent, Request, Response, SubscribeTarget};

fn subscribe(target: SubscribeTarget, name: &str, from: u64) -> Request {
    Request::Subscribe {
        target,
        name: name.into(),
        from,
        type_prefix: String::new(),
        positions: Vec::new(),
    }
}

/// A raw connection that has said HELLO.
fn raw_client(addr: &str) -> TcpStream {
    let mut s = raw_connect(addr);
    send(&mut s, 1, &hello());
    assert!(matches!(recv(&mut s), Some((1, Response::Hello { .. }))));
    s
}

/// The next frame, which must come (the socket's read timeout is 10 s).
fn next(s: &mut TcpStream) -> (u64, Response) {
    recv(s).expect("a frame before the connection closed or the read timed out")
}

/// Event `i` of the feed: 4 KiB, its number first.
fn feed_data(i: u64) -> Vec<u8> {
    let mut d = format!("feed event {i} ").into_bytes();
    d.resize(4096, b'f' + (i % 7) as u8);
    d
}

/// Receives events from a client subscription until `n` arrived.
fn take(sub: &evring::client::Subscription, n: usize) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        match sub.next_timeout(Duration::from_secs(10)) {
            Some(SubscriptionItem::Events(events)) => got.extend(events),
            other => panic!(
                "subscription ended or stalled after {} events: {other:?}",
                got.len()
            ),
        }
    }
    assert_eq!(got.len(), n, "more events than expected");
    got
}

#[test]
fn a_subscriber_that_does_not_read_is_cut_off_with_error_30_and_resubscribing_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--partitions",
            "1",
            "--set",
            "connection_buffer_bytes=65536",
        ],
    );
    // The slow subscriber: a raw connection that reads nothing. Until it reads, the kernel
    // holds at most the server's send buffer (net.ipv4.tcp_wmem, 4 MiB at most here) and the
    // receive window it opened at the start (about 64 KiB).
    let mut slow = raw_client(&server.addr);
    send(&mut slow, 2, &subscribe(SubscribeTarget::Stream, "feed", 0));
    assert!(matches!(next(&mut slow), (2, Response::Subscribed)));
    // A subscriber that reads, and a writer: 16 MiB of events, far more than the kernel's
    // socket buffers and connection_buffer_bytes hold for the slow one.
    let reader = server.client();
    let fast = reader
        .subscribe(SubscribeTarget::Stream, "feed", 0, "")
        .unwrap();
    let writer = server.client();
    let total = 4096u64;
    for batch in 0..total / 16 {
        let events = (batch * 16..batch * 16 + 16)
            .map(|i| ev("Fed", &feed_data(i)))
            .collect();
        let a = writer.append("feed", expected::ANY, events).unwrap();
        assert_eq!(a.first_version, batch * 16);
    }
    // Other clients went on: the reading subscriber has every event, in order.
    let got = take(&fast, total as usize);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.stream_version, i as u64);
        assert_eq!(e.event.data, feed_data(i as u64));
    }
    // The slow one starts reading: a gap-free prefix of the stream, then error 30 for its
    // subscription.
    let mut received = 0u64;
    let message = loop {
        match next(&mut slow) {
            (2, Response::Pushed { events }) => {
                for e in events {
                    assert_eq!(e.stream_version, received);
                    assert_eq!(e.event.data, feed_data(received));
                    received += 1;
                }
            }
            (2, Response::Error { code, message, .. }) => {
                assert_eq!(code, code::OVERLOADED, "{message}");
                break message;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    };
    assert!(message.contains("too slowly"), "{message}");
    assert!(received < total, "the subscriber was not cut off");
    // The subscription ended: events appended now are not pushed to it.
    for i in total..total + 5 {
        writer
            .append("feed", expected::ANY, vec![ev("Fed", &feed_data(i))])
            .unwrap();
    }
    send(&mut slow, 3, &Request::Ping);
    match next(&mut slow) {
        (3, Response::Pong) => {}
        other => panic!("a push after the subscription ended: {other:?}"),
    }
    // Resubscribing from the last position received gets every later event, no gap. (A
    // catch-up pushes history faster than a client may read it: cut off again, the client
    // resubscribes from where it is, as the protocol says.)
    let started = std::time::Instant::now();
    let mut id = 4;
    let mut resubscriptions = 0;
    send(
        &mut slow,
        id,
        &subscribe(SubscribeTarget::Stream, "feed", received),
    );
    while received < total + 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "caught up to {received} of {} in 60 s",
            total + 5
        );
        match next(&mut slow) {
            (r, Response::Subscribed) if r == id => resubscriptions += 1,
            (r, Response::Pushed { events }) if r == id => {
                for e in events {
                    assert_eq!(e.stream_version, received);
                    assert_eq!(e.event.data, feed_data(received));
                    received += 1;
                }
            }
            (r, Response::Error { code, .. }) if r == id && code == code::OVERLOADED => {
                id += 1;
                send(
                    &mut slow,
                    id,
                    &subscribe(SubscribeTarget::Stream, "feed", received),
                );
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    eprintln!("caught up after {resubscriptions} subscriptions");
    send(&mut slow, 100, &Request::Ping);
    match next(&mut slow) {
        (100, Response::Pong) => {}
        (r, Response::Pushed { events }) if r == id => {
            panic!("events beyond the last appended: {events:?}")
        }
        other => panic!("unexpected frame {other:?}"),
    }
}

#[test]
fn one_subscription_more_than_max_subscriptions_per_connection_gets_error_30() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", "max_subscriptions_per_connection=3"],
    );
    let c = server.client();
    let subs: Vec<_> = ["s-a", "s-b", "s-c"]
        .iter()
        .map(|s| c.subscribe(SubscribeTarget::Stream, s, 0, "").unwrap())
        .collect();
    let err = c
        .subscribe(SubscribeTarget::Stream, "s-d", 0, "")
        .err()
        .expect("a fourth subscription on the connection is refused");
    assert_eq!(err.code(), Some(code::OVERLOADED), "{err}");
    assert!(err.to_string().contains("max 3"), "{err}");
    // The connection and its three subscriptions go on.
    c.ping().unwrap();
    for s in ["s-a", "s-b", "s-c"] {
        c.append(s, expected::ANY, vec![ev("E", s.as_bytes())])
            .unwrap();
    }
    for (sub, s) in subs.iter().zip(["s-a", "s-b", "s-c"]) {
        let got = take(sub, 1);
        assert_eq!(got[0].event.data, s.as_bytes());
    }
    // The limit is per connection: another connection subscribes.
    let other = server.client();
    let d = other
        .subscribe(SubscribeTarget::Stream, "s-d", 0, "")
        .unwrap();
    // Ending one makes room for another on the first connection.
    let mut subs = subs.into_iter();
    let first = subs.next().unwrap();
    futures_lite::future::block_on(first.unsubscribe()).unwrap();
    let e = c.subscribe(SubscribeTarget::Stream, "s-d", 0, "").unwrap();
    c.append("s-d", expected::ANY, vec![ev("E", b"d")]).unwrap();
    assert_eq!(take(&e, 1)[0].event.data, b"d");
    assert_eq!(take(&d, 1)[0].event.data, b"d");
}

#[test]
fn unsubscribe_stops_that_subscription_only_and_an_unknown_id_is_error_12() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let writer = server.client();
    let mut s = raw_client(&server.addr);
    // Two subscriptions on one connection, both on stream "u".
    send(&mut s, 10, &subscribe(SubscribeTarget::Stream, "u", 0));
    assert!(matches!(next(&mut s), (10, Response::Subscribed)));
    send(&mut s, 11, &subscribe(SubscribeTarget::Stream, "u", 0));
    assert!(matches!(next(&mut s), (11, Response::Subscribed)));
    for i in 0..3u8 {
        writer
            .append("u", expected::ANY, vec![ev("E", &[i])])
            .unwrap();
    }
    let mut seen = [0u64; 2];
    while seen != [3, 3] {
        match next(&mut s) {
            (id @ (10 | 11), Response::Pushed { events }) => {
                for e in events {
                    assert_eq!(e.stream_version, seen[(id - 10) as usize]);
                    seen[(id - 10) as usize] += 1;
                }
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    // UNSUBSCRIBE 10: its reply, then no more pushes for 10; 11 goes on.
    send(
        &mut s,
        12,
        &Request::Unsubscribe {
            subscription_id: 10,
        },
    );
    assert!(matches!(next(&mut s), (12, Response::Subscribed)));
    for i in 3..7u8 {
        writer
            .append("u", expected::ANY, vec![ev("E", &[i])])
            .unwrap();
    }
    // Every push of those acknowledged appends was queued before this PING's reply.
    send(&mut s, 13, &Request::Ping);
    let mut versions = Vec::new();
    loop {
        match next(&mut s) {
            (11, Response::Pushed { events }) => {
                versions.extend(events.iter().map(|e| e.stream_version))
            }
            (13, Response::Pong) => break,
            other => panic!("unexpected frame after UNSUBSCRIBE: {other:?}"),
        }
    }
    assert_eq!(versions, [3, 4, 5, 6]);
    // Unknown (or already ended) subscription ids: error 12, the connection stays open.
    for (req, id) in [(14, 999), (15, 10)] {
        send(
            &mut s,
            req,
            &Request::Unsubscribe {
                subscription_id: id,
            },
        );
        match next(&mut s) {
            (r, Response::Error { code, message, .. }) if r == req => {
                assert_eq!(code, code::INVALID_ARGUMENT, "{message}");
                assert!(message.contains(&id.to_string()), "{message}");
            }
            other => panic!("expected error 12, got {other:?}"),
        }
    }
    send(&mut s, 16, &Request::Ping);
    assert!(matches!(next(&mut s), (16, Response::Pong)));
}

#[test]
fn a_partition_subscription_gets_every_stream_of_its_partition_in_lsn_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--partitions", "2"]);
    let c = server.client();
    // Three streams in partition 0, two in partition 1.
    let mut mine = Vec::new();
    let mut others = Vec::new();
    for k in 0.. {
        let name = format!("ps-{k}");
        match partition_of(&name, 2) {
            0 if mine.len() < 3 => mine.push(name),
            1 if others.len() < 2 => others.push(name),
            _ => {}
        }
        if mine.len() == 3 && others.len() == 2 {
            break;
        }
    }
    // (lsn, version, data) of every event appended to partition 0; the data names the
    // stream.
    let mut expected_p0 = Vec::new();
    let append_round = |round: usize, expected_p0: &mut Vec<(u64, u64, Vec<u8>)>| {
        for s in mine.iter().chain(&others) {
            let data = format!("{s} round {round}").into_bytes();
            let a = c
                .append(s, expected::ANY, vec![ev("T", &data), ev("T", &data)])
                .unwrap();
            assert_eq!(a.partition, partition_of(s, 2));
            if a.partition == 0 {
                expected_p0.push((a.lsn, a.first_version, data.clone()));
                expected_p0.push((a.lsn + 1, a.first_version + 1, data));
            }
        }
    };
    for round in 0..10 {
        append_round(round, &mut expected_p0);
    }
    let history = expected_p0.len();
    // Catch-up from LSN 0, and from an LSN in the middle.
    let sub = c.subscribe(SubscribeTarget::Partition, "0", 0, "").unwrap();
    let middle = expected_p0[history / 2].0;
    let late = c
        .subscribe(SubscribeTarget::Partition, "0", middle, "")
        .unwrap();
    // Then live.
    for round in 10..20 {
        append_round(round, &mut expected_p0);
    }
    let seen = |events: Vec<RecordedEvent>| -> Vec<(u64, u64, Vec<u8>)> {
        events
            .into_iter()
            .map(|e| {
                assert_eq!(e.partition, 0);
                (e.lsn, e.stream_version, e.event.data)
            })
            .collect()
    };
    let got = seen(take(&sub, expected_p0.len()));
    assert_eq!(
        got, expected_p0,
        "partition 0, in LSN order, catch-up then live"
    );
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (0..expected_p0.len() as u64).collect::<Vec<_>>()
    );
    let from_middle = seen(take(&late, expected_p0.len() - history / 2));
    assert_eq!(from_middle, expected_p0[history / 2..]);
    // Partition 1's events never arrive: after one to each partition, the next is partition
    // 0's.
    c.append(&others[0], expected::ANY, vec![ev("T", b"p1")])
        .unwrap();
    let a = c
        .append(&mine[0], expected::ANY, vec![ev("T", b"p0")])
        .unwrap();
    let next = take(&sub, 1);
    assert_eq!((next[0].lsn, &next[0].event.data[..]), (a.lsn, &b"p0"[..]));
    // Not a partition number: error 12.
    for name in ["2", "zero"] {
        let err = c
            .subscribe(SubscribeTarget::Partition, name, 0, "")
            .err()
            .unwrap_or_else(|| panic!("partition {name:?} accepted"));
        assert_eq!(err.code(), Some(code::INVALID_ARGUMENT), "{err}");
    }
}
