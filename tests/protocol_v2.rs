//! Protocol v2 against the real evringd: events pushed by `all` and partition subscriptions
//! name their stream (0x96); an `all` subscription resumes from a checkpoint (one position
//! per partition) with no gap and no duplicate, across a restart; a v1 client still gets
//! the v1 protocol (0x93 pushes, no names); the CLI prints stream names and keeps a
//! checkpoint file.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{ev, raw_connect, recv, send, Server};
use evring::client::{Checkpoint, SubscriptionItem};
use evring::protocol::{self, code, expected, Request, Response, SubscribeTarget};

/// Receives `n` events from a subscription.
fn take(sub: &evring::client::Subscription, n: usize) -> Vec<evring::protocol::RecordedEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        match sub.next_timeout(Duration::from_secs(10)) {
            Some(SubscriptionItem::Events(events)) => got.extend(events),
            other => panic!(
                "subscription ended or stalled after {}: {other:?}",
                got.len()
            ),
        }
    }
    assert_eq!(got.len(), n);
    got
}

/// Streams named so that they land in every one of 4 partitions.
fn streams() -> Vec<String> {
    let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for k in 0.. {
        let name = format!("acct-{k}");
        let p = protocol::partition_of(&name, 4);
        let list = by_partition.entry(p).or_default();
        if list.len() < 2 {
            list.push(name);
        }
        if by_partition.len() == 4 && by_partition.values().all(|l| l.len() == 2) {
            break;
        }
    }
    by_partition.into_values().flatten().collect()
}

#[test]
fn all_subscriptions_name_each_events_stream_and_resume_from_a_checkpoint_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_fixed(&dir.path().join("data"), &["--partitions", "4"]);
    let streams = streams();
    let c = server.client();
    // Two rounds of one event per stream: the data says which stream and round.
    let append_round = |c: &evring::client::BlockingClient, round: u32| {
        for s in &streams {
            c.append(
                s,
                expected::ANY,
                vec![ev("T", format!("{s}/{round}").as_bytes())],
            )
            .unwrap();
        }
    };
    append_round(&c, 0);
    append_round(&c, 1);
    let mut checkpoint = Checkpoint::beginning(c.partitions());
    let sub = c.subscribe_all_from(&checkpoint, "").unwrap();
    let first = take(&sub, streams.len());
    for e in &first {
        let data = String::from_utf8(e.event.data.clone()).unwrap();
        assert_eq!(
            data.split('/').next().unwrap(),
            e.stream,
            "the pushed event names its stream"
        );
        assert_eq!(protocol::partition_of(&e.stream, 4), e.partition);
    }
    checkpoint.advance(&first);
    let saved = checkpoint.to_string();
    drop(sub);
    drop(c);

    // The server restarts; the subscriber resumes from its stored checkpoint.
    server.kill_and_restart();
    let c = server.client();
    append_round(&c, 2);
    let resumed: Checkpoint = saved.parse().unwrap();
    let sub = c.subscribe_all_from(&resumed, "").unwrap();
    // Everything not yet delivered: the other half of rounds 0–1, and round 2.
    let rest = take(&sub, 2 * streams.len());
    let mut delivered: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|e| String::from_utf8(e.event.data.clone()).unwrap())
        .collect();
    delivered.sort();
    let mut want: Vec<String> = (0..3)
        .flat_map(|r| streams.iter().map(move |s| format!("{s}/{r}")))
        .collect();
    want.sort();
    assert_eq!(delivered, want, "every event once: no gap, no duplicate");
    // Nothing more.
    assert!(sub.next_timeout(Duration::from_millis(300)).is_none());

    // A checkpoint of the wrong length is refused.
    let err = c
        .subscribe_all_from(&Checkpoint::beginning(3), "")
        .err()
        .expect("a 3-position checkpoint for 4 partitions");
    assert_eq!(err.code(), Some(code::INVALID_ARGUMENT), "{err}");
}

/// A raw connection that said HELLO with `version`.
fn raw_hello(addr: &str, version: u16) -> (TcpStream, Response) {
    let mut s = raw_connect(addr);
    send(
        &mut s,
        1,
        &Request::Hello {
            protocol_version: version,
            client_name: "raw".into(),
            auth_token: "".into(),
        },
    );
    let (_, r) = recv(&mut s).expect("a HELLO reply");
    (s, r)
}

#[test]
fn a_v1_client_gets_v1_pushes_and_an_unknown_version_is_error_4() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let subscribe_all = Request::Subscribe {
        target: SubscribeTarget::All,
        name: String::new(),
        from: 0,
        type_prefix: String::new(),
        positions: Vec::new(),
    };
    server
        .client()
        .append("v-1", expected::ANY, vec![ev("T", b"x")])
        .unwrap();
    for (version, named) in [(1u16, false), (2, true)] {
        let (mut s, hello) = raw_hello(&server.addr, version);
        match hello {
            Response::Hello {
                protocol_version, ..
            } => assert_eq!(
                protocol_version, version,
                "answered in the version asked for"
            ),
            other => panic!("{other:?}"),
        }
        send(&mut s, 5, &subscribe_all);
        assert!(matches!(recv(&mut s), Some((5, Response::Subscribed))));
        match recv(&mut s) {
            Some((5, Response::Pushed { events })) if named => {
                assert_eq!(events[0].stream, "v-1");
            }
            Some((5, Response::PushedV1 { events })) if !named => {
                assert_eq!(events[0].stream, "", "v1 pushes carry no name");
                assert_eq!(events[0].event.data, b"x");
            }
            other => panic!("version {version}: {other:?}"),
        }
    }
    for version in [0u16, 3] {
        let (mut s, r) = raw_hello(&server.addr, version);
        match r {
            Response::Error { code, message, .. } => {
                assert_eq!(code, code::UNSUPPORTED_VERSION);
                assert!(message.contains("1 to 2"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        common::expect_closed(&mut s);
    }
}

#[test]
fn the_cli_prints_stream_names_and_keeps_a_checkpoint_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--partitions", "2"]);
    let c = server.client();
    for s in ["cli-a", "cli-b", "cli-c"] {
        c.append(s, expected::ANY, vec![ev("T", s.as_bytes())])
            .unwrap();
    }
    let evring = std::path::Path::new(env!("CARGO_BIN_EXE_evringd")).with_file_name("evring");
    let file = dir.path().join("all.checkpoint");
    let run = |count: &str| {
        let out = std::process::Command::new(&evring)
            .args([
                "--addr",
                &server.addr,
                "--json",
                "subscribe",
                "all",
                "--from",
                "0",
            ])
            .args(["--checkpoint", file.to_str().unwrap(), "--count", count])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run("2");
    let names: Vec<String> = first
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["stream"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(names.len(), 2);
    // The second run resumes where the first stopped: the third stream, once.
    c.append("cli-d", expected::ANY, vec![ev("T", b"cli-d")])
        .unwrap();
    let second = run("2");
    let mut all: Vec<String> = names;
    all.extend(second.lines().map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["stream"].as_str().unwrap().to_string()
    }));
    all.sort();
    assert_eq!(all, ["cli-a", "cli-b", "cli-c", "cli-d"]);
    let saved = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        saved.trim().split(',').count(),
        2,
        "one position per partition: {saved}"
    );
    let _ = std::io::stdout().flush();
}
