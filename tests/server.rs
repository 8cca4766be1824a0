//! The real evringd binary on an ephemeral loopback port, driven by the Rust client and by
//! raw sockets.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ev, expect_error_then_close, hello, raw_connect, recv, send, Server};
use evring::client::{BlockingClient, ClientError, SubscriptionItem};
use evring::protocol::{
    self, code, encode_request, expected, Direction, Request, Response, SubscribeTarget,
};

#[test]
fn append_read_and_info_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let c = server.client();
    c.ping().unwrap();
    let a = c
        .append(
            "orders-1",
            expected::NO_STREAM,
            vec![ev("Created", b"a"), ev("Paid", b"b")],
        )
        .unwrap();
    assert_eq!((a.first_version, a.last_version), (0, 1));
    let b = c.append("orders-1", 1, vec![ev("Shipped", b"c")]).unwrap();
    assert_eq!(b.first_version, 2);
    assert_eq!(b.lsn, a.lsn + 2);
    let (events, end) = c.read("orders-1", 0, 100, Direction::Forward).unwrap();
    assert!(end);
    let types: Vec<_> = events.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(types, ["Created", "Paid", "Shipped"]);
    assert_eq!(events[1].event.data, b"b");
    assert!(events.iter().all(|e| e.event.timestamp_ns > 0));
    let (back, end) = c
        .read("orders-1", u64::MAX, 2, Direction::Backward)
        .unwrap();
    assert_eq!(
        back.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert!(!end);
    let info = c.stream_info("orders-1").unwrap();
    assert_eq!(info.next_version, 3);
    assert_eq!(info.first_lsn, a.lsn);
    let err = c.read("nope", 0, 10, Direction::Forward).unwrap_err();
    assert_eq!(err.code(), Some(code::STREAM_NOT_FOUND));
    let stats: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
    assert!(!stats["partitions"].as_array().unwrap().is_empty());
}

#[test]
fn expected_version_conflicts_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let won = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for w in 0..6 {
        let addr = server.addr.clone();
        let won = won.clone();
        threads.push(std::thread::spawn(move || {
            let c = BlockingClient::connect(&addr, "w", "").unwrap();
            let mut last: i64 = -1;
            let mut conflicts = 0;
            while last < 60 {
                let e = ev("Step", format!("writer {w}").as_bytes());
                match c.append("contended", last, vec![e]) {
                    Ok(a) => {
                        won.lock().unwrap().push(a.first_version);
                        last = a.first_version as i64;
                    }
                    Err(ClientError::WrongExpectedVersion { current, .. }) => {
                        conflicts += 1;
                        last = current;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            conflicts
        }));
    }
    let conflicts: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let mut won = won.lock().unwrap().clone();
    won.sort_unstable();
    let unique: HashSet<_> = won.iter().collect();
    assert_eq!(unique.len(), won.len(), "a version was granted twice");
    assert_eq!(won, (0..won.len() as u64).collect::<Vec<_>>());
    assert!(conflicts > 0, "six writers never conflicted");
    let c = server.client();
    let (events, _) = c.read("contended", 0, 1000, Direction::Forward).unwrap();
    assert_eq!(events.len(), won.len());
}

#[test]
fn retried_append_with_the_same_event_id_is_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let c = server.client();
    let mut e = ev("Paid", b"x");
    e.id = [7; 16];
    let first = c
        .append("payments", expected::ANY, vec![e.clone()])
        .unwrap();
    c.append("payments", expected::ANY, vec![ev("Other", b"y")])
        .unwrap();
    let retry = c.append("payments", expected::ANY, vec![e]).unwrap();
    assert_eq!(retry, first);
    let (events, _) = c.read("payments", 0, 10, Direction::Forward).unwrap();
    assert_eq!(events.len(), 2);
}

#[test]
fn subscription_catches_up_then_goes_live_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let c = server.client();
    for i in 0..50 {
        c.append("feed", expected::ANY, vec![ev("Tick", &[i])])
            .unwrap();
        c.append("other", expected::ANY, vec![ev("Noise", &[i])])
            .unwrap();
    }
    let sub = c
        .subscribe(SubscribeTarget::Stream, "feed", 10, "")
        .unwrap();
    let all = c.subscribe(SubscribeTarget::All, "", 0, "Tick").unwrap();
    let writer = {
        let addr = server.addr.clone();
        std::thread::spawn(move || {
            let w = BlockingClient::connect(&addr, "w", "").unwrap();
            for i in 50..100u8 {
                w.append("feed", expected::ANY, vec![ev("Tick", &[i])])
                    .unwrap();
            }
        })
    };
    let mut versions = Vec::new();
    while versions.len() < 90 {
        match sub.next_timeout(Duration::from_secs(10)) {
            Some(SubscriptionItem::Events(events)) => {
                versions.extend(events.iter().map(|e| e.stream_version))
            }
            other => panic!("subscription ended: {other:?}"),
        }
    }
    assert_eq!(versions, (10..100).collect::<Vec<u64>>());
    let mut ticks = 0;
    while ticks < 100 {
        match all.next_timeout(Duration::from_secs(10)) {
            Some(SubscriptionItem::Events(events)) => {
                assert!(events.iter().all(|e| e.event.event_type == "Tick"));
                ticks += events.len();
            }
            other => panic!("all-subscription ended: {other:?}"),
        }
    }
    assert_eq!(ticks, 100);
    writer.join().unwrap();
}

#[test]
fn restart_after_sigterm_preserves_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let c = server.client();
    for i in 0..200u32 {
        c.append(
            &format!("s{}", i % 7),
            expected::ANY,
            vec![ev("E", &i.to_le_bytes())],
        )
        .unwrap();
    }
    drop(c);
    assert_eq!(server.terminate(), Some(0), "SIGTERM must exit 0");
    server.restart();
    let c = server.client();
    let mut total = 0;
    for s in 0..7 {
        let (events, _) = c
            .read(&format!("s{s}"), 0, 1000, Direction::Forward)
            .unwrap();
        for (v, e) in events.iter().enumerate() {
            assert_eq!(e.stream_version, v as u64);
            let i = u32::from_le_bytes(e.event.data[..4].try_into().unwrap());
            assert_eq!(i % 7, s);
        }
        total += events.len();
    }
    assert_eq!(total, 200);
    // Versions continue after the restart.
    let a = c
        .append("s0", expected::ANY, vec![ev("E", b"after")])
        .unwrap();
    assert_eq!(a.first_version, 29);
}

#[test]
fn sigkill_during_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let acked = Arc::new(Mutex::new(Vec::<(String, u64, Vec<u8>)>::new()));
    for round in 0..3 {
        let mut threads = Vec::new();
        for w in 0..4 {
            let addr = server.addr.clone();
            let acked = acked.clone();
            threads.push(std::thread::spawn(move || {
                let c = BlockingClient::connect(&addr, "load", "").unwrap();
                for i in 0.. {
                    let stream = format!("load-{w}");
                    let data = format!("round {round} writer {w} item {i}").into_bytes();
                    match c.append(&stream, expected::ANY, vec![ev("L", &data)]) {
                        Ok(a) => acked.lock().unwrap().push((stream, a.first_version, data)),
                        // The server was killed: the connection fails, no error reply.
                        Err(e) => {
                            assert_eq!(e.code(), None, "{e}");
                            break;
                        }
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(400));
        server.kill_and_restart();
        for t in threads {
            t.join().unwrap();
        }
    }
    let c = server.client();
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 50, "too little load: {}", acked.len());
    for (stream, version, data) in acked.iter() {
        let (events, _) = c.read(stream, *version, 1, Direction::Forward).unwrap();
        assert_eq!(events.len(), 1, "{stream} v{version} lost");
        assert_eq!(&events[0].event.data, data, "{stream} v{version} differs");
    }
}

#[test]
fn malformed_frames_get_an_error_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", "request_frame_bytes_max=65536"],
    );
    let bystander = server.client();
    bystander
        .append("keep", expected::ANY, vec![ev("A", b"1")])
        .unwrap();

    // Request before HELLO.
    let mut s = raw_connect(&server.addr);
    send(&mut s, 1, &Request::Ping);
    expect_error_then_close(&mut s, code::NOT_AUTHENTICATED);

    // Unknown opcode.
    let mut s = raw_connect(&server.addr);
    send(&mut s, 1, &hello());
    assert!(matches!(recv(&mut s), Some((1, Response::Hello { .. }))));
    let mut frame = Vec::new();
    encode_request(&mut frame, 2, &Request::Ping);
    frame[4] = 0x7e;
    s.write_all(&frame).unwrap();
    expect_error_then_close(&mut s, code::UNKNOWN_OPCODE);

    // Length shorter than the header.
    let mut s = raw_connect(&server.addr);
    s.write_all(&[3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    expect_error_then_close(&mut s, code::MALFORMED_FRAME);

    // Declared length over the limit (huge).
    let mut s = raw_connect(&server.addr);
    send(&mut s, 1, &hello());
    recv(&mut s).unwrap();
    let mut frame = Vec::new();
    encode_request(&mut frame, 3, &Request::Ping);
    frame[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    s.write_all(&frame).unwrap();
    expect_error_then_close(&mut s, code::FRAME_TOO_LARGE);

    // Body that does not decode (APPEND with a truncated event).
    let mut s = raw_connect(&server.addr);
    send(&mut s, 1, &hello());
    recv(&mut s).unwrap();
    let mut frame = Vec::new();
    encode_request(
        &mut frame,
        4,
        &Request::Append {
            stream: "x".into(),
            expected_version: -1,
            events: vec![ev("A", b"abc")],
        },
    );
    let cut = frame.len() - 5;
    frame.truncate(cut);
    let len = (frame.len() - 4) as u32;
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    s.write_all(&frame).unwrap();
    expect_error_then_close(&mut s, code::MALFORMED_FRAME);

    // Garbage bytes.
    let mut s = raw_connect(&server.addr);
    s.write_all(&[0xde; 64]).unwrap();
    expect_error_then_close(&mut s, code::MALFORMED_FRAME);

    // Truncated frame, then the client goes away.
    let mut s = raw_connect(&server.addr);
    send(&mut s, 1, &hello());
    recv(&mut s).unwrap();
    s.write_all(&[40, 0, 0, 0, 0x02]).unwrap();
    drop(s);

    // Wrong protocol version.
    let mut s = raw_connect(&server.addr);
    send(
        &mut s,
        1,
        &Request::Hello {
            protocol_version: 99,
            client_name: "x".into(),
            auth_token: "".into(),
        },
    );
    expect_error_then_close(&mut s, code::UNSUPPORTED_VERSION);

    // The server and the other connection go on; nothing acknowledged was lost.
    bystander.ping().unwrap();
    let (events, _) = bystander.read("keep", 0, 10, Direction::Forward).unwrap();
    assert_eq!(events.len(), 1);
    let fresh = server.client();
    fresh.append("keep", 0, vec![ev("B", b"2")]).unwrap();
}

#[test]
fn auth_token_is_checked_in_hello() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", "auth_token=\"s3cret\""],
    );
    let err = BlockingClient::connect(&server.addr, "t", "wrong")
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(code::NOT_AUTHENTICATED));
    let ok = BlockingClient::connect(&server.addr, "t", "s3cret").unwrap();
    ok.ping().unwrap();
}

#[test]
fn fdatasync_write_mode_serves_and_restarts_and_bad_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &dir.path().join("data"),
        &["--set", "journal_write_mode=\"fdatasync\""],
    );
    let c = server.client();
    for i in 0..20 {
        c.append("w", expected::ANY, vec![ev("E", format!("{i}").as_bytes())])
            .unwrap();
    }
    drop(c);
    server.kill_and_restart();
    let (events, _) = server
        .client()
        .read("w", 0, 100, Direction::Forward)
        .unwrap();
    assert_eq!(events.len(), 20);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evringd"))
        .args([
            "--set",
            "journal_write_mode=\"sometimes\"",
            "--print-config",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("journal_write_mode"));
}

/// The log's lines from byte `from` on.
fn log_from(log: &std::path::Path, from: usize) -> String {
    std::fs::read_to_string(log).unwrap()[from..].to_string()
}

/// Whether evringd (`server`) has an io_uring worker thread kept off CPU 0, where its only
/// shard runs: what the journal's workers are once the kernel took their CPU set (io-wq
/// workers start on demand and stay a few seconds idle, so right after writes).
fn has_worker_off_cpu0(server: &Server) -> bool {
    let pid = server.child.as_ref().expect("running").id();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks.filter_map(Result::ok).any(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        // A list such as "1", "1-3" or "0,2": CPU 0 is in it when a range starts at 0.
        let has_cpu0 = allowed.split(',').any(|r| r.split('-').next() == Some("0"));
        comm.starts_with("iou-wrk-") && !allowed.is_empty() && !has_cpu0
    })
}

#[test]
fn journal_writes_go_to_io_urings_workers_or_inline_and_every_acknowledged_event_survives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log");
    let one_cpu = std::thread::available_parallelism().unwrap().get() == 1;
    let workers_line = "journal writes issued by io_uring workers";
    let refused_line = "the kernel refused IORING_REGISTER_IOWQ_AFF";
    let mut server = Server::start_logged(&data, &log, &[]);
    let mut appended = 0u64;
    let mut append_some = |server: &Server| {
        let c = server.client();
        for _ in 0..50 {
            let a = c
                .append(
                    "w",
                    appended as i64 - 1,
                    vec![ev("E", &appended.to_le_bytes())],
                )
                .unwrap();
            assert_eq!(a.first_version, appended);
            appended += 1;
        }
    };
    // The default: the workers, on the CPU no shard runs on — they issued the writes.
    append_some(&server);
    assert_eq!(has_worker_off_cpu0(&server), !one_cpu);
    server.kill();
    let mut seen = 0;
    let text = log_from(&log, seen);
    assert_eq!(text.contains(workers_line), !one_cpu, "{text}");
    assert!(!text.contains(refused_line), "{text}");
    seen += text.len();
    // A kernel that refuses the workers' CPU set: inline, said once.
    server.env = vec![(
        evring::journal::uring::TEST_ENV.to_string(),
        "no-iowq-aff".to_string(),
    )];
    server.restart();
    append_some(&server);
    assert!(!has_worker_off_cpu0(&server), "the shard issued the writes");
    server.kill();
    let text = log_from(&log, seen);
    assert_eq!(
        text.matches(refused_line).count(),
        usize::from(!one_cpu),
        "{text}"
    );
    assert!(!text.contains(workers_line), "{text}");
    seen += text.len();
    // Inline by choice: neither line.
    server.env.clear();
    server.extra = vec!["--set".into(), "journal_submit=\"inline\"".into()];
    server.restart();
    append_some(&server);
    assert!(!has_worker_off_cpu0(&server), "the shard issued the writes");
    server.kill();
    let text = log_from(&log, seen);
    assert!(
        !text.contains(workers_line) && !text.contains(refused_line),
        "{text}"
    );
    // Every event acknowledged before the three SIGKILLs is back, in order.
    server.extra.clear();
    server.restart();
    let (events, _) = server
        .client()
        .read("w", 0, 1000, Direction::Forward)
        .unwrap();
    assert_eq!(events.len(), 150);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event.data, (i as u64).to_le_bytes(), "event {i}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evringd"))
        .args(["--set", "journal_submit=\"later\"", "--print-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("journal_submit must be \"workers\" or \"inline\""),
        "{err}"
    );
}

#[test]
fn print_config_shows_the_merged_configuration() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evringd"))
        .args(["--print-config", "--listen", "127.0.0.1:9999"])
        .env("EVRING_MAX_CONNECTIONS", "77")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:9999\""), "{text}");
    assert!(text.contains("max_connections = 77"), "{text}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_evringd"))
        .args(["--print-config", "--set", "no_such_key=1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown setting"));
}

#[test]
fn prometheus_endpoint_reports_appends_and_flush_latency() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", "metrics_listen=\"127.0.0.1:0\""],
    );
    let text = std::fs::read_to_string(dir.path().join("data.addr")).unwrap();
    let metrics = text
        .lines()
        .find_map(|l| l.strip_prefix("metrics="))
        .expect("metrics address in the addresses file")
        .to_string();
    let c = server.client();
    for _ in 0..5 {
        c.append("m", expected::ANY, vec![ev("E", b"x")]).unwrap();
    }
    let mut s = TcpStream::connect(&metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let total: f64 = body
        .lines()
        .filter(|l| l.starts_with("evring_appends_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 5.0);
    let ring_events: f64 = body
        .lines()
        .filter(|l| l.starts_with("evring_ring_events{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(ring_events, 5.0);
    assert!(body.contains("evring_ring_bytes{"));
    assert!(body.contains("evring_flush_latency_seconds_bucket{"));
    assert!(body.contains("evring_frames_written_total{"));
}

fn valued(event_type: &str, value: f64, timestamp_ns: u64) -> protocol::Event {
    let mut e = ev(event_type, format!("{value}").as_bytes());
    e.value = value;
    e.timestamp_ns = timestamp_ns;
    e
}

#[test]
fn aggregate_of_a_stream_counts_its_events_only_when_another_name_has_the_same_hash() {
    // FNV-1a 64 of both names is 0x0f6296f490d1665d: one partition, one ring stream id.
    let (a, b) = ("oPxgeduSyVJ", "6oPwYOOB18L");
    assert_eq!(
        evring::protocol::stream_hash(a.as_bytes()),
        0x0f62_96f4_90d1_665d
    );
    assert_eq!(
        evring::protocol::stream_hash(b.as_bytes()),
        0x0f62_96f4_90d1_665d
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--partitions", "4"]);
    let c = server.client();
    for v in [1000.0, 1000.0, 1000.0] {
        c.append(a, expected::ANY, vec![valued("m", v, 0)]).unwrap();
    }
    for v in [1.0, 1.0] {
        c.append(b, expected::ANY, vec![valued("m", v, 0)]).unwrap();
    }
    let of_b = c.aggregate(b, "", 0, u64::MAX, 0).unwrap();
    assert_eq!((of_b[0].count, of_b[0].sum), (2, 2.0));
    let of_a = c.aggregate(a, "", 0, u64::MAX, 0).unwrap();
    assert_eq!((of_a[0].count, of_a[0].sum), (3, 3000.0));
    let all = c.aggregate("", "", 0, u64::MAX, 0).unwrap();
    assert_eq!((all[0].count, all[0].sum), (5, 3002.0));
}

#[test]
fn aggregate_over_in_memory_events_by_stream_type_and_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let c = server.client();
    let base = 1_000_000_000u64;
    // Stream a: prices 1..=10 at base + i seconds; stream b: 100 once; type filter by prefix.
    for i in 1..=10u64 {
        let kind = if i % 2 == 0 {
            "price.even"
        } else {
            "price.odd"
        };
        c.append(
            "a",
            expected::ANY,
            vec![valued(kind, i as f64, base + i * 1_000_000_000)],
        )
        .unwrap();
    }
    c.append(
        "b",
        expected::ANY,
        vec![valued("price.odd", 100.0, base + 1_000_000_000)],
    )
    .unwrap();
    c.append("b", expected::ANY, vec![ev("note", b"no value")])
        .unwrap();
    let check = |c: &BlockingClient| {
        let all = c.aggregate("", "", 0, u64::MAX, 0).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].count, 11, "the valueless event is not counted");
        assert_eq!(all[0].sum, 155.0);
        assert_eq!((all[0].min, all[0].max), (1.0, 100.0));
        let a = c.aggregate("a", "", 0, u64::MAX, 0).unwrap();
        assert_eq!((a[0].count, a[0].sum), (10, 55.0));
        let even = c.aggregate("a", "price.even", 0, u64::MAX, 0).unwrap();
        assert_eq!((even[0].count, even[0].sum), (5, 30.0));
        let odd_all = c.aggregate("", "price.o", 0, u64::MAX, 0).unwrap();
        assert_eq!((odd_all[0].count, odd_all[0].sum), (6, 125.0));
        // Buckets of 5 s over [base+1s, base+11s): values 1..=5 and 6..=10.
        let from = base + 1_000_000_000;
        let series = c
            .aggregate("a", "", from, from + 10_000_000_000, 5_000_000_000)
            .unwrap();
        let got: Vec<(u64, u64, f64)> = series
            .iter()
            .map(|b| (b.start_ns, b.count, b.sum))
            .collect();
        assert_eq!(got, [(from, 5, 15.0), (from + 5_000_000_000, 5, 40.0)]);
        let err = c.aggregate("a", "", 10, 5, 0).unwrap_err();
        assert_eq!(err.code(), Some(code::INVALID_ARGUMENT));
        let err = c.aggregate("a", "", 0, u64::MAX, 1).unwrap_err();
        assert_eq!(err.code(), Some(code::INVALID_ARGUMENT), "too many buckets");
    };
    check(&c);
    drop(c);
    // The ring is rebuilt from the journal at start-up: the same answers after a crash.
    server.kill_and_restart();
    check(&server.client());
}

#[test]
fn reads_span_the_ring_and_the_journal_when_the_ring_has_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &dir.path().join("data"),
        &["--set", "ring_capacity_events=16", "--set", "partitions=1"],
    );
    let c = server.client();
    for i in 0..200u64 {
        c.append(
            "s",
            if i == 0 {
                expected::NO_STREAM
            } else {
                i as i64 - 1
            },
            vec![valued("t", i as f64, 0)],
        )
        .unwrap();
    }
    let verify = |c: &BlockingClient| {
        let (events, end) = c.read("s", 0, 1000, Direction::Forward).unwrap();
        assert!(end);
        assert_eq!(events.len(), 200);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.stream_version, i as u64);
            assert_eq!(e.event.data, format!("{}", i as f64).as_bytes());
            assert_eq!(e.event.value, i as f64);
        }
        let (back, _) = c.read("s", u64::MAX, 20, Direction::Backward).unwrap();
        let versions: Vec<u64> = back.iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (180..200).rev().collect::<Vec<_>>());
        // The ring holds only the newest 16 events: a window reaching back before them is
        // refused, one from the time the ring covers whole is answered from memory.
        let err = c.aggregate("s", "", 0, u64::MAX, 0).unwrap_err();
        assert_eq!(err.code(), Some(code::INVALID_ARGUMENT));
        let stats: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
        let from = stats["partitions"][0]["ring"]["complete_from_ns"]
            .as_u64()
            .unwrap();
        assert!(err
            .to_string()
            .contains(&format!("aggregate from {from} or later")));
        let agg = c.aggregate("s", "", from, u64::MAX, 0).unwrap();
        assert_eq!(agg[0].count, 16);
        assert_eq!(agg[0].min, 184.0);
        let held: u64 = stats["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["ring"]["count"].as_u64().unwrap())
            .sum();
        assert_eq!(held, 16);
    };
    verify(&c);
    drop(c);
    server.kill_and_restart();
    verify(&server.client());
}

#[test]
fn two_shards_route_requests_to_the_owning_shard_and_merge_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &dir.path().join("data"),
        &[
            "--set",
            "shards=2",
            "--set",
            "partitions=4",
            "--set",
            "pin_cpus=false",
        ],
    );
    let c = server.client();
    let stats: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
    assert_eq!(stats["partitions"].as_array().unwrap().len(), 4);
    let all = c.subscribe(SubscribeTarget::All, "", 0, "").unwrap();
    // 40 streams spread over 4 partitions on 2 shards; one connection reaches them all.
    for s in 0..40 {
        let stream = format!("s-{s}");
        for v in 0..3u64 {
            let mut e = ev("T", format!("{s}/{v}").as_bytes());
            e.value = 1.0;
            e.timestamp_ns = 1_000 + v;
            let want = if v == 0 {
                expected::NO_STREAM
            } else {
                v as i64 - 1
            };
            let a = c.append(&stream, want, vec![e]);
            assert_eq!(a.unwrap().first_version, v);
        }
    }
    let stats: serde_json::Value = serde_json::from_str(&c.stats().unwrap()).unwrap();
    let used = stats["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["streams"].as_u64().unwrap() > 0)
        .count();
    assert_eq!(used, 4, "the streams landed on every partition");
    let agg = c.aggregate("", "", 0, u64::MAX, 0).unwrap();
    assert_eq!(
        (agg[0].count, agg[0].sum),
        (120, 120.0),
        "merged over partitions"
    );
    let mut seen = HashSet::new();
    while seen.len() < 120 {
        match all.next_timeout(Duration::from_secs(10)) {
            Some(SubscriptionItem::Events(events)) => {
                for e in events {
                    assert!(seen.insert(e.event.data.clone()), "no duplicates");
                }
            }
            other => panic!("subscription ended early: {:?}", other.is_some()),
        }
    }
    drop(c);
    server.kill_and_restart();
    let c = server.client();
    for s in 0..40 {
        let (events, _) = c
            .read(&format!("s-{s}"), 0, 10, Direction::Forward)
            .unwrap();
        let data: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8(e.event.data.clone()).unwrap())
            .collect();
        assert_eq!(data, [format!("{s}/0"), format!("{s}/1"), format!("{s}/2")]);
    }
}

#[test]
fn a_second_evringd_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let c = server.client();
    c.append("locked", expected::ANY, vec![ev("E", b"1")])
        .unwrap();
    let (ok, err) = common::start_failure(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        |_| {},
    );
    assert!(!ok);
    assert!(err.contains("in use by another evringd"), "{err}");
    // The first server is unharmed, and the lock goes with its process.
    c.append("locked", expected::ANY, vec![ev("E", b"2")])
        .unwrap();
    drop(c);
    server.kill_and_restart();
    let (events, _) = server
        .client()
        .read("locked", 0, 10, Direction::Forward)
        .unwrap();
    assert_eq!(events.len(), 2);
}

#[test]
fn a_second_evringd_on_a_port_in_use_is_refused() {
    // The shards share their port with SO_REUSEPORT; another server must not join it.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("a"), &[]);
    let other = dir.path().join("b");
    let (ok, err) = common::start_failure(
        &[
            "--data-dir",
            other.to_str().unwrap(),
            "--listen",
            &server.addr,
        ],
        |_| {},
    );
    assert!(!ok);
    assert!(err.contains("address is in use"), "{err}");
    server.client().ping().unwrap();
}

/// Installs a seccomp filter that makes io_uring_setup fail with EPERM and allows every other
/// system call. Runs in a forked child before exec (prctl is async-signal-safe).
fn deny_io_uring_setup() -> std::io::Result<()> {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut program = [
        // seccomp_data.nr is the first u32.
        ins(BPF_LD_W_ABS, 0, 0, 0),
        ins(BPF_JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `prog` points to `program`, alive across the call, and the
    // kernel copies the filter.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn start_up_failures_exit_non_zero_with_one_clear_line() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // Locked memory below what io_uring needs: the message names the fix.
    let (ok, err) =
        common::start_failure(&["--data-dir", data, "--listen", "127.0.0.1:0"], |cmd| {
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    let lim = libc::rlimit {
                        rlim_cur: 256 * 1024,
                        rlim_max: 256 * 1024,
                    };
                    if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        });
    assert!(!ok);
    // The minimum named is the one evringd enforces (and runs at): 512 KiB.
    assert!(
        err.contains("RLIMIT_MEMLOCK")
            && err.contains("needs at least 512 KiB")
            && err.contains("ulimit -l"),
        "{err}"
    );
    // A data directory that cannot be created.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("data");
    let (ok, err) = common::start_failure(
        &[
            "--data-dir",
            under_file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        |_| {},
    );
    assert!(!ok);
    assert!(err.contains("cannot create data directory"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // A filesystem without O_DIRECT (injected: every filesystem here supports it).
    let (ok, err) =
        common::start_failure(&["--data-dir", data, "--listen", "127.0.0.1:0"], |cmd| {
            cmd.env("EVRINGD_INJECT_ODIRECT_FAILURE", "1");
        });
    assert!(!ok);
    assert!(err.contains("does not support direct I/O"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // io_uring denied by a seccomp filter (what `SystemCallFilter=~io_uring_setup` or a
    // container runtime's default profile does): io_uring_setup fails with EPERM.
    let (ok, err) =
        common::start_failure(&["--data-dir", data, "--listen", "127.0.0.1:0"], |cmd| {
            // SAFETY: the closure runs in the forked child before exec and only calls prctl with a
            // filter program that lives on its stack for the duration of the call.
            unsafe {
                cmd.pre_exec(deny_io_uring_setup);
            }
        });
    assert!(!ok);
    assert!(
        err.contains("io_uring is unavailable") && err.contains("io_uring_disabled"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // A listen address that is not host:port.
    let (ok, err) = common::start_failure(&["--data-dir", data, "--listen", "nowhere"], |_| {});
    assert!(!ok);
    assert!(err.contains("not host:port"), "{err}");
}

/// The network ring on a kernel without a feature it needs: provided-buffer rings (5.19)
/// refused is a start-up error naming the feature; COOP_TASKRUN missing falls back to a
/// plain ring that serves both protocols the same. Injected through the tests' switch.
#[test]
fn the_network_ring_names_a_missing_kernel_feature_and_serves_on_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, err) = common::start_failure(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        |cmd| {
            cmd.env(evring::net::TEST_ENV, "no-buf-ring");
        },
    );
    assert!(!ok);
    assert!(
        err.contains("IORING_REGISTER_PBUF_RING") && err.contains("newer kernel"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let log = dir.path().join("log");
    let mut server = Server::start_logged(&data, &log, &["--set", "resp_listen=\"127.0.0.1:0\""]);
    server.kill();
    let first = std::fs::read_to_string(&log).unwrap();
    assert!(!first.contains("without COOP_TASKRUN"), "{first}");
    server.env = vec![(evring::net::TEST_ENV.to_string(), "plain".to_string())];
    server.restart();
    let c = server.client();
    for i in 0..200u64 {
        let a = c
            .append("fallback", i as i64 - 1, vec![ev("E", &i.to_le_bytes())])
            .unwrap();
        assert_eq!(a.first_version, i);
    }
    let (events, _) = c.read("fallback", 0, 1000, Direction::Forward).unwrap();
    assert_eq!(events.len(), 200);
    let mut r = server.redis();
    let id: String = redis::cmd("XADD")
        .arg("fallback-resp")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut r)
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("fallback-resp")
        .query(&mut r)
        .unwrap();
    assert_eq!(len, 1, "{id}");
    assert_eq!(server.terminate(), Some(0));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged[first.len()..].contains("without COOP_TASKRUN"),
        "the restart with the switch ran on the fallback: {logged}"
    );
}

#[test]
fn a_failed_first_start_does_not_fix_the_partition_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    // A bad listen address, then a port in use: both refused before anything is written.
    let (ok, err) = common::start_failure(
        &[
            "--data-dir",
            data_s,
            "--listen",
            "nowhere",
            "--partitions",
            "2",
        ],
        |_| {},
    );
    assert!(!ok && err.contains("not host:port"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let (ok, err) = common::start_failure(
        &[
            "--data-dir",
            data_s,
            "--listen",
            &busy_addr,
            "--partitions",
            "2",
        ],
        |_| {},
    );
    assert!(!ok && err.contains("in use"), "{err}");
    assert!(
        !data.join("MANIFEST").exists(),
        "a start that failed wrote the MANIFEST"
    );
    // The first start that succeeds fixes the count it was given.
    let server = Server::start(&data, &["--partitions", "3"]);
    server.client().ping().unwrap();
    let manifest = std::fs::read_to_string(data.join("MANIFEST")).unwrap();
    assert!(manifest.contains("partitions=3"), "{manifest}");
}

/// Bytes of the regular files under `dir`, recursively.
fn bytes_under(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                bytes_under(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn a_new_store_takes_a_few_mib_per_partition_not_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The default segment size (256 MiB), two partitions.
    let server = Server::start(
        &data,
        &["--partitions", "2", "--set", "segment_bytes=268435456"],
    );
    let c = server.client();
    for i in 0..6 {
        c.append(&format!("s{i}"), expected::ANY, vec![ev("E", b"x")])
            .unwrap();
    }
    let bytes = bytes_under(&data);
    // Per partition: the stream journal's and the key-value journal's first segments (4 MiB
    // each). It was 320 MiB per partition.
    assert!(
        bytes <= 2 * 2 * 4 * 1024 * 1024 + 1024 * 1024,
        "a new two-partition store holding 6 events takes {bytes} bytes"
    );
}
