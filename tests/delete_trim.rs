//! DELETE_STREAM and TRIM over the native protocol, on the real evringd: each rule deletes
//! what docs/PROTOCOL.md says and replies with the count; reads and subscriptions pass over
//! what was deleted; a deleted stream's name starts again at version 0; the deletions hold
//! after kill -9 (recovered from the journal) and after a restart from snapshots; errors name
//! what is wrong.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ev, expect_error_then_close, hello, raw_connect, recv, send, Server};
use evring::client::{BlockingClient, SubscriptionItem, TrimBy};
use evring::protocol::{code, expected, Direction, Request, Response, SubscribeTarget};

const PARTITIONS: u32 = 4;

fn start(dir: &std::path::Path) -> Server {
    Server::start(
        &dir.join("data"),
        &[
            "--partitions",
            &PARTITIONS.to_string(),
            "--set",
            "snapshot_every_events=60",
        ],
    )
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Appends `n` events to `stream`, one APPEND each, data "0", "1", ….
fn append_n(c: &BlockingClient, stream: &str, n: u64) {
    for i in 0..n {
        c.append(
            stream,
            expected::ANY,
            vec![ev("T", i.to_string().as_bytes())],
        )
        .unwrap();
    }
}

/// The versions READ returns of `stream`, forward from 0.
fn versions(c: &BlockingClient, stream: &str) -> Vec<u64> {
    let (events, end) = c.read(stream, 0, 1000, Direction::Forward).unwrap();
    assert!(end, "{stream}: one reply holds it all");
    events.iter().map(|e| e.stream_version).collect()
}

/// The error code of a failed request.
fn code_of<T: std::fmt::Debug>(r: Result<T, evring::client::ClientError>) -> (u16, String) {
    let e = r.expect_err("the request fails");
    (e.code().expect("a server error"), e.to_string())
}

/// What every test of this file leaves behind, as READ shows it; checked before and after
/// each restart.
fn check(c: &BlockingClient, x_len: usize) {
    assert_eq!(versions(c, "s"), (8..20).collect::<Vec<_>>());
    assert_eq!(versions(c, "t"), [3, 4]);
    assert_eq!(versions(c, "gone"), [0], "the name began again");
    let (events, _) = c.read("gone", 0, 10, Direction::Forward).unwrap();
    assert_eq!(events[0].event.data, b"new");
    assert_eq!(versions(c, "x").len(), x_len);
    assert_eq!(code_of(c.read("never", 0, 10, Direction::Forward)).0, 11);
}

#[test]
fn deletions_and_trims_are_durable_and_deleted_events_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let c = server.client();

    // keep_last, then before_version; a rule that matches nothing deletes nothing.
    append_n(&c, "s", 20);
    assert_eq!(c.trim("s", TrimBy::KeepLast(15)).unwrap(), 5);
    assert_eq!(versions(&c, "s"), (5..20).collect::<Vec<_>>());
    assert_eq!(c.trim("s", TrimBy::BeforeVersion(8)).unwrap(), 3);
    assert_eq!(c.trim("s", TrimBy::BeforeVersion(8)).unwrap(), 0);
    assert_eq!(c.trim("s", TrimBy::BeforeVersion(3)).unwrap(), 0);
    assert_eq!(c.trim("s", TrimBy::KeepLast(100)).unwrap(), 0);
    assert_eq!(versions(&c, "s"), (8..20).collect::<Vec<_>>());
    let (back, _) = c.read("s", u64::MAX, 100, Direction::Backward).unwrap();
    assert_eq!(back.len(), 12, "backward reads stop at the trim too");
    assert_eq!(back.last().unwrap().stream_version, 8);
    // A subscription's catch-up passes over the deleted versions.
    let sub = c.subscribe(SubscribeTarget::Stream, "s", 0, "").unwrap();
    let mut seen = Vec::new();
    while seen.len() < 12 {
        match sub.next_timeout(Duration::from_secs(10)) {
            Some(SubscriptionItem::Events(events)) => {
                seen.extend(events.iter().map(|e| e.stream_version))
            }
            other => panic!("catch-up: {other:?}"),
        }
    }
    assert_eq!(seen, (8..20).collect::<Vec<_>>());
    drop(sub);

    // older_than_ns: by the stream IDs' milliseconds, the server's clock for native appends.
    append_n(&c, "t", 3);
    std::thread::sleep(Duration::from_millis(5));
    let cut = now_ns();
    std::thread::sleep(Duration::from_millis(5));
    append_n(&c, "t", 2);
    assert_eq!(c.trim("t", TrimBy::OlderThanNs(cut)).unwrap(), 3);
    assert_eq!(c.trim("t", TrimBy::OlderThanNs(cut)).unwrap(), 0);
    assert_eq!(versions(&c, "t"), [3, 4]);

    // Entries added over RESP with explicit IDs: their milliseconds are the writer's. The cut
    // is exclusive: 2000 ms keeps 2000-0.
    let mut redis = server.redis();
    for id in ["1000-0", "2000-0", "2000-1", "3000-0"] {
        let _: String = redis::cmd("XADD")
            .arg("x")
            .arg(id)
            .arg("f")
            .arg("v")
            .query(&mut redis)
            .unwrap();
    }
    assert_eq!(c.trim("x", TrimBy::OlderThanNs(2_000_000_000)).unwrap(), 1);
    assert_eq!(c.trim("x", TrimBy::OlderThanNs(2_999_999_999)).unwrap(), 2);
    assert_eq!(versions(&c, "x"), [3]);
    let xlen: u64 = redis::cmd("XLEN").arg("x").query(&mut redis).unwrap();
    assert_eq!(xlen, 1, "the RESP port sees the native trim");

    // DELETE_STREAM: the live events it held; then the stream is gone and its name free.
    append_n(&c, "gone", 5);
    assert_eq!(c.trim("gone", TrimBy::KeepLast(3)).unwrap(), 2);
    assert_eq!(c.delete_stream("gone").unwrap(), 3);
    let (code, message) = code_of(c.read("gone", 0, 10, Direction::Forward));
    assert_eq!(code, 11, "{message}");
    assert_eq!(code_of(c.stream_info("gone")).0, 11);
    let (code, message) = code_of(c.delete_stream("gone"));
    assert_eq!(code, 11);
    assert!(message.contains("\"gone\" not found"), "{message}");
    assert_eq!(code_of(c.trim("gone", TrimBy::KeepLast(0))).0, 11);
    let a = c
        .append("gone", expected::NO_STREAM, vec![ev("T", b"new")])
        .unwrap();
    assert_eq!((a.first_version, a.last_version), (0, 0));
    check(&c, 1);
    drop((c, redis));

    // From the journal after kill -9.
    server.kill_and_restart();
    let c = server.client();
    check(&c, 1);
    let a = c.append("s", 19, vec![ev("T", b"after")]).unwrap();
    assert_eq!(a.first_version, 20, "a trimmed stream keeps its versions");
    assert_eq!(c.trim("s", TrimBy::BeforeVersion(20)).unwrap(), 12);
    assert_eq!(c.trim("x", TrimBy::KeepLast(0)).unwrap(), 1);

    // From snapshots (every partition writes one), then the journal after them.
    for p in 0..PARTITIONS {
        let key = (0..)
            .map(|k| format!("filler-{k}"))
            .find(|k| evring::protocol::partition_of(k, PARTITIONS) == p)
            .unwrap();
        c.append(
            &key,
            expected::ANY,
            (0..80).map(|i| ev("F", i.to_string().as_bytes())).collect(),
        )
        .unwrap();
    }
    let snapshots = || (0..PARTITIONS).filter(|&p| server.has_snapshot(p)).count() as u32;
    let started = Instant::now();
    while snapshots() < PARTITIONS {
        assert!(started.elapsed() < Duration::from_secs(20), "no snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.delete_stream("t").unwrap(), 2);
    drop(c);
    server.kill_and_restart();
    let c = server.client();
    assert_eq!(versions(&c, "s"), [20]);
    assert_eq!(versions(&c, "x"), Vec::<u64>::new(), "trimmed to nothing");
    assert_eq!(code_of(c.read("t", 0, 10, Direction::Forward)).0, 11);
    assert_eq!(versions(&c, "gone"), [0]);
}

#[test]
fn bad_deletions_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = server.client();
    let (code, message) = code_of(c.delete_stream("nope"));
    assert_eq!(code, code::STREAM_NOT_FOUND);
    assert!(message.contains("check the name"), "{message}");
    let (code, _) = code_of(c.trim("nope", TrimBy::OlderThanNs(u64::MAX)));
    assert_eq!(code, code::STREAM_NOT_FOUND);
    assert_eq!(code_of(c.delete_stream("")).0, code::INVALID_ARGUMENT);
    assert_eq!(
        code_of(c.trim("", TrimBy::KeepLast(1))).0,
        code::INVALID_ARGUMENT
    );

    // A TRIM rule the protocol does not have: error 1, and the connection closes.
    let mut s = raw_connect(&server.addr);
    send(&mut s, 1, &hello());
    assert!(matches!(recv(&mut s), Some((1, Response::Hello { .. }))));
    send(
        &mut s,
        2,
        &Request::Trim {
            stream: "nope".into(),
            by: TrimBy::KeepLast(1),
        },
    );
    assert!(matches!(
        recv(&mut s),
        Some((2, Response::Error { code: 11, .. }))
    ));
    let mut frame = Vec::new();
    evring::protocol::encode_request(
        &mut frame,
        3,
        &Request::Trim {
            stream: "nope".into(),
            by: TrimBy::KeepLast(1),
        },
    );
    let rule_at = 16 + 2 + 4;
    frame[rule_at] = 7;
    std::io::Write::write_all(&mut s, &frame).unwrap();
    expect_error_then_close(&mut s, code::MALFORMED_FRAME);
}
