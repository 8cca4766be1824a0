//! Protocol abuse and overload against the real evringd: clients that drip bytes, clients that
//! never read their replies, connection floods, and more appends in flight than the pipeline
//! holds. In every case the abusive connection is bounded or refused, the server's memory
//! stays under the budget docs/OPERATIONS.md states for its configuration, and other clients
//! go on with nothing acknowledged lost.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ev, expect_error_then_close, hello, raw_connect, recv, send, Server};
use evring::protocol::{
    code, encode_request, expected, AppendResult, Direction, Request, Response,
};

const MIB: u64 = 1024 * 1024;

/// Flags for a small server whose memory budget is easy to exceed if a bound is missing.
const SMALL: [&str; 22] = [
    "--partitions",
    "1",
    "--set",
    "ring_capacity_bytes=16777216",
    "--set",
    "ring_capacity_events=65536",
    "--set",
    "connection_buffer_bytes=1048576",
    "--set",
    "max_read_bytes=262144",
    "--set",
    "request_frame_bytes_max=1048576",
    "--set",
    "max_in_flight_per_connection=64",
    "--set",
    "max_connections=64",
    "--set",
    "idempotency_window=10000",
    "--set",
    "segment_bytes=16777216",
    "--set",
    "journal_frame_bytes_max=1048576",
];

/// docs/OPERATIONS.md's memory budget for the SMALL configuration (one shard), with `c`
/// connections and `e` events written:
/// 30 MiB + shards × (8 × frame_bytes_max + NET_RING + KEPT_FOR_REUSE)
/// + P × (2 × (in_flight_frames + 2) × frame_bytes_max + JOURNAL_READ_WINDOW_BYTES
///   + 72 × ring_capacity_events + ring_capacity_bytes + 100 × idempotency_window)
/// + C × CONNECTION_WORST + 24 × E.
fn small_budget(c: u64, e: u64) -> u64 {
    // (No snapshot is written in these runs: fewer events than snapshot_every_events.)
    let read_window = evring::constants::JOURNAL_READ_WINDOW_BYTES as u64;
    let partition = 2 * 6 * MIB + read_window + 72 * 65536 + 16 * MIB + 100 * 10_000;
    let connection = CONNECTION_WORST;
    let frame_buffer_pool = 8 * MIB;
    30 * MIB + frame_buffer_pool + NET_RING + KEPT_FOR_REUSE + partition + c * connection + 24 * e
}

/// What a shard keeps of finished requests for the next ones: a spare task box per
/// protocol's request future (two protocols) and RESP argument lists.
const KEPT_FOR_REUSE: u64 =
    (2 * evring::shard::task_box::SPARE_BOXES_MAX * evring::shard::task_box::TASK_BOX_BYTES_MAX
        + evring::server::ARG_LISTS_KEPT * evring::server::ARG_LIST_BYTES_KEPT) as u64;

/// A shard's network ring: its provided receive buffers and its queues (1,024 submission
/// entries of 64 bytes, 4,096 completion entries of 16 bytes).
const NET_RING: u64 = evring::net::NET_RECV_BUFFERS as u64
    * evring::net::NET_RECV_BUFFER_BYTES as u64
    + 1024 * 64
    + 4096 * 16;

/// What one connection may make the server hold, by docs/OPERATIONS.md's formula, for the
/// SMALL configuration: twice (`connection_buffer_bytes`, plus the larger of it and 24 MiB,
/// plus `max_in_flight_per_connection` KiB), plus one frame per READ being built
/// (`connection_buffer_bytes / max_read_bytes × journal_frame_bytes_max`), plus `request_frame_bytes_max`
/// and 64 KiB.
const CONNECTION_WORST: u64 = 2 * (MIB + 24 * MIB + 64 * 1024) + 4 * MIB + MIB + 64 * 1024;

/// What an idle connection (past HELLO, nothing in flight) holds, by docs/OPERATIONS.md: its
/// 64 KiB read buffer, a 4 KiB outbound buffer, and task state, under 80 KiB.
const CONNECTION_IDLE: u64 = 80 * 1024;

/// Slack for the allocator and the kernel's rounding in an RSS comparison.
const SLACK: u64 = 4 * MIB;

/// (VmRSS, VmHWM) of a process in bytes.
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

fn pid(server: &Server) -> u32 {
    server.child.as_ref().unwrap().id()
}

#[test]
fn a_client_dripping_bytes_is_served_in_time_and_cut_off_after_frame_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--set", "frame_timeout_ms=400"]);
    let bystander = server.client();
    let mut s = raw_connect(&server.addr);
    send(&mut s, 1, &hello());
    assert!(matches!(recv(&mut s), Some((1, Response::Hello { .. }))));
    // A whole APPEND, one byte at a time, well within the timeout: served normally.
    let mut frame = Vec::new();
    encode_request(
        &mut frame,
        2,
        &Request::Append {
            stream: "drip".into(),
            expected_version: expected::ANY,
            events: vec![ev("Dripped", b"one byte at a time")],
        },
    );
    for b in &frame {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    match recv(&mut s) {
        Some((2, Response::Appended(_))) => {}
        other => panic!("expected the dripped append to succeed, got {other:?}"),
    }
    // A frame begun and never finished: error 1 after frame_timeout_ms, connection closed,
    // while the bystander is served all along.
    let mut frame = Vec::new();
    encode_request(&mut frame, 3, &Request::Ping);
    s.write_all(&frame[..5]).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(200) {
        bystander.ping().unwrap();
    }
    let _ = s.write_all(&frame[5..6]);
    expect_error_then_close(&mut s, code::MALFORMED_FRAME);
    bystander.ping().unwrap();
    let (events, _) = bystander.read("drip", 0, 10, Direction::Forward).unwrap();
    assert_eq!(events.len(), 1);
    // An idle connection (no frame begun) is not timed out.
    let mut idle = raw_connect(&server.addr);
    send(&mut idle, 1, &hello());
    assert!(recv(&mut idle).is_some());
    std::thread::sleep(Duration::from_millis(900));
    send(&mut idle, 2, &Request::Ping);
    assert!(matches!(recv(&mut idle), Some((2, Response::Pong))));
}

#[test]
fn a_client_that_never_reads_its_replies_is_not_read_either_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &SMALL);
    let writer = server.client();
    // 1,000 events of 2 KiB: a READ of all of them is cut at max_read_bytes (256 KiB).
    for batch in 0..100 {
        let events = (0..10)
            .map(|i| {
                ev(
                    "Big",
                    format!("{batch}-{i}-{}", "b".repeat(2048)).as_bytes(),
                )
            })
            .collect();
        writer.append("big", expected::ANY, events).unwrap();
    }
    let (before, _) = rss(pid(&server));
    // The abuser: 20,000 READs of 256 KiB replies each (5 GB if the server kept reading and
    // answering), never reading a byte back.
    let mut s = raw_connect(&server.addr);
    send(&mut s, 1, &hello());
    assert!(recv(&mut s).is_some());
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut frame = Vec::new();
    encode_request(
        &mut frame,
        7,
        &Request::Read {
            stream: "big".into(),
            from_version: 0,
            max_count: 1000,
            direction: Direction::Forward,
        },
    );
    let mut sent = 0;
    for _ in 0..20_000 {
        if s.write_all(&frame).is_err() {
            break; // the server stopped reading: our send buffer is full
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_millis(500));
    let (now, peak) = rss(pid(&server));
    let budget = small_budget(3, 1100);
    eprintln!(
        "never-reading client: {sent} READs sent; server RSS {} MiB before, {} MiB now, peak {} \
         MiB, budget {} MiB",
        before / MIB,
        now / MIB,
        peak / MIB,
        budget / MIB
    );
    assert!(
        peak <= budget,
        "server peak RSS {peak} exceeds the budget {budget}"
    );
    // And what the abuse added is within the one connection's term of the formula (without
    // the back-pressure it grew by hundreds of MiB).
    assert!(
        peak.saturating_sub(before) <= CONNECTION_WORST + SLACK,
        "the never-reading connection grew peak RSS by {} bytes; its term is {CONNECTION_WORST}",
        peak.saturating_sub(before)
    );
    // Everyone else goes on.
    let r = writer
        .append("big", expected::ANY, vec![ev("After", b"x")])
        .unwrap();
    assert_eq!(r.first_version, 1000);
    // The abuser's replies are intact once it reads: each a valid READ reply.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..3 {
        match recv(&mut s) {
            Some((7, Response::Events { events, .. })) => {
                assert!(!events.is_empty());
                let bytes: usize = events.iter().map(|e| e.event.data.len()).sum();
                assert!(bytes <= 262_144 + 4096, "reply of {bytes} bytes");
            }
            other => panic!("expected a READ reply, got {other:?}"),
        }
    }
}

#[test]
fn ten_thousand_connections_are_bounded_by_max_connections_with_a_clear_refusal() {
    // Room for 10,000 sockets in this process.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct owned by this frame.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let attempts = 10_000usize.min((lim.rlim_cur as usize).saturating_sub(200));
    if attempts < 10_000 {
        eprintln!(
            "RLIMIT_NOFILE hard limit {}: {attempts} connection attempts",
            lim.rlim_max
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &SMALL);
    let bystander = server.client();
    let (before, _) = rss(pid(&server));
    let mut socks = Vec::with_capacity(attempts);
    for _ in 0..attempts {
        socks.push(TcpStream::connect(&server.addr).unwrap());
    }
    // max_connections = 64, one of them the bystander's: the server may hold 63 of these. A
    // refused socket has bytes (error 30) or EOF to read; a held one, like one still waiting
    // in the listen backlog, has nothing. Wait until all but 63 are refused.
    let mut refused = vec![false; attempts];
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let started = Instant::now();
    loop {
        for (s, refused) in socks.iter().zip(refused.iter_mut()) {
            if *refused {
                continue;
            }
            let mut b = [0u8; 1];
            match s.peek(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => *refused = true, // bytes, EOF or a reset
            }
        }
        let count = refused.iter().filter(|r| **r).count();
        if count >= attempts - 63 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "after 60 s only {count} of {attempts} connection attempts were refused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let held: Vec<usize> = (0..attempts).filter(|&i| !refused[i]).collect();
    eprintln!(
        "{attempts} connection attempts: {} held, {} refused",
        held.len(),
        attempts - held.len()
    );
    assert_eq!(held.len(), 63);
    // The ones not refused are connections the server serves.
    for &i in &held {
        let s = &mut socks[i];
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        send(s, 1, &hello());
        assert!(
            matches!(recv(s), Some((1, Response::Hello { .. }))),
            "a held connection is served"
        );
    }
    // A refused connection got error 30 naming the limit, then EOF.
    let refused_sock = &mut socks[refused.iter().position(|r| *r).unwrap()];
    refused_sock.set_nonblocking(false).unwrap();
    refused_sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match recv(refused_sock) {
        Some((_, Response::Error { code, message, .. })) => {
            assert_eq!(code, code::OVERLOADED);
            assert!(message.contains("max_connections"), "{message}");
        }
        other => panic!("expected error 30, got {other:?}"),
    }
    let mut rest = Vec::new();
    assert_eq!(refused_sock.read_to_end(&mut rest).unwrap(), 0);
    bystander.ping().unwrap();
    let (_, peak) = rss(pid(&server));
    assert!(peak <= small_budget(64, 0), "peak RSS {peak}");
    // The 63 held connections are idle: each within the idle connection's share.
    let grown = peak.saturating_sub(before);
    eprintln!("connection flood: peak RSS grew by {} KiB", grown / 1024);
    assert!(
        grown <= 63 * CONNECTION_IDLE + SLACK,
        "63 idle connections grew peak RSS by {grown} bytes"
    );
    // Once the flood goes away, new clients get in again.
    drop(socks);
    let started = Instant::now();
    loop {
        match evring::client::BlockingClient::connect(&server.addr, "after", "") {
            Ok(c) if c.ping().is_ok() => break,
            _ => {
                assert!(started.elapsed() < Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn more_appends_in_flight_than_the_pipeline_holds_are_all_acknowledged_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &SMALL);
    let (before, _) = rss(pid(&server));
    // 32 connections × 1,000 appends written back to back without waiting (32,000 in flight
    // from the clients' side; the server holds 64 per connection and 4 journal frames).
    let conns = 32;
    let per_conn = 1000u64;
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let client = evring::client::Client::connect(&server.addr, "flood", "").unwrap();
            std::thread::spawn(move || {
                let futures: Vec<_> = (0..per_conn)
                    .map(|i| {
                        client.request(&Request::Append {
                            stream: format!("flood-{c}"),
                            expected_version: expected::ANY,
                            events: vec![ev(
                                "F",
                                format!("{c}:{i}:{}", "f".repeat(200)).as_bytes(),
                            )],
                        })
                    })
                    .collect();
                let mut versions = Vec::new();
                for f in futures {
                    match futures_lite::future::block_on(f).unwrap() {
                        Response::Appended(AppendResult { first_version, .. }) => {
                            versions.push(first_version)
                        }
                        other => panic!("append: {other:?}"),
                    }
                }
                versions
            })
        })
        .collect();
    for t in threads {
        let versions = t.join().unwrap();
        assert_eq!(versions, (0..per_conn).collect::<Vec<_>>());
    }
    let (_, peak) = rss(pid(&server));
    let budget = small_budget(conns, conns * per_conn);
    eprintln!(
        "overload: {} appends acknowledged; server peak RSS {} MiB, budget {} MiB",
        conns * per_conn,
        peak / MIB,
        budget / MIB
    );
    assert!(peak <= budget, "peak RSS {peak} over budget {budget}");
    let c = server.client();
    for s in 0..conns {
        let info = c.stream_info(&format!("flood-{s}")).unwrap();
        assert_eq!(info.next_version, per_conn);
    }
    // What the load added, against the formula's terms it touches: the journal's frame
    // buffers (open, in flight, pooled), the ring's slots and payloads of the events written,
    // the stream index, and per connection its read buffer and requests in flight.
    let events = conns * per_conn;
    let journal = 2 * 5 * MIB + 8 * MIB;
    let ring = events * (72 + 28 + 220);
    let connections = conns * (64 * 1024 + 64 * 2 * 1024);
    let bound = journal + ring + 8 * events + connections + SLACK;
    let grown = peak.saturating_sub(before);
    eprintln!(
        "overload: peak RSS grew by {} MiB; bound {} MiB",
        grown / MIB,
        bound / MIB
    );
    assert!(
        grown <= bound,
        "the load grew peak RSS by {grown} bytes, bound {bound}"
    );
}
