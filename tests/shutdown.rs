//! A clean stop (SIGTERM) seen from the clients of the real evringd: requests the server read
//! are answered (appends whose frames were written are acknowledged, the rest get error 31),
//! subscriptions end with error 31 after every event acknowledged before the stop, the
//! connections close, and after a restart everything acknowledged is there.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ev, hello, raw_connect, recv, recv_or_closed, send, Server};
use evring::client::SubscriptionItem;
use evring::protocol::{
    code, encode_request, expected, AppendResult, Request, Response, SubscribeTarget,
};

#[test]
fn sigterm_answers_what_was_read_ends_subscriptions_with_error_31_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &["--partitions", "1"]);
    // A subscriber on a raw connection, read by its own thread until the server closes it.
    let mut sub = raw_connect(&server.addr);
    send(&mut sub, 1, &hello());
    assert!(matches!(recv(&mut sub), Some((1, Response::Hello { .. }))));
    send(
        &mut sub,
        7,
        &Request::Subscribe {
            target: SubscribeTarget::Stream,
            name: "load".into(),
            from: 0,
            type_prefix: String::new(),
            positions: Vec::new(),
        },
    );
    assert!(matches!(recv(&mut sub), Some((7, Response::Subscribed))));
    let subscriber = std::thread::spawn(move || {
        let mut versions = Vec::new();
        let mut ended = None;
        while let Some(frame) = recv_or_closed(&mut sub) {
            assert!(
                ended.is_none(),
                "a frame after the subscription ended: {frame:?}"
            );
            match frame {
                (7, Response::Pushed { events }) => {
                    versions.extend(events.iter().map(|e| e.stream_version))
                }
                (7, Response::Error { code, message, .. }) => ended = Some((code, message)),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        (versions, ended)
    });
    // A client pipelining appends back to back (request id n appends event n), its replies
    // read here.
    let mut conn = raw_connect(&server.addr);
    send(&mut conn, 0, &hello());
    assert!(matches!(recv(&mut conn), Some((0, Response::Hello { .. }))));
    let mut out = conn.try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writing = done.clone();
    let writer = std::thread::spawn(move || {
        let mut frames = Vec::new();
        for n in 1..=200_000u64 {
            if writing.load(Ordering::Relaxed) {
                return n - 1;
            }
            frames.clear();
            encode_request(
                &mut frames,
                n,
                &Request::Append {
                    stream: "load".into(),
                    expected_version: expected::ANY,
                    events: vec![ev("E", &n.to_le_bytes())],
                },
            );
            if out.write_all(&frames).is_err() {
                return n - 1; // the server closed the connection
            }
        }
        200_000
    });
    let mut replies: Vec<(u64, Result<u64, u16>)> = Vec::new();
    let mut signalled = false;
    while let Some((id, resp)) = recv_or_closed(&mut conn) {
        match resp {
            Response::Appended(AppendResult { first_version, .. }) => {
                replies.push((id, Ok(first_version)))
            }
            Response::Error { code, message, .. } => {
                assert_eq!(code, code::SHUTTING_DOWN, "request {id}: {message}");
                replies.push((id, Err(code)));
            }
            other => panic!("request {id}: {other:?}"),
        }
        if !signalled && replies.len() >= 500 {
            // SAFETY: sending a signal to our own child process by pid.
            unsafe {
                libc::kill(server.child.as_ref().unwrap().id() as i32, libc::SIGTERM);
            }
            signalled = true;
        }
    }
    assert!(signalled, "the connection closed before the stop");
    done.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    drop(conn);
    let status = server.child.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
    // Every request the server read was answered: the replies are for requests 1..=k.
    replies.sort_unstable_by_key(|r| r.0);
    let k = replies.len() as u64;
    assert!(
        replies.iter().map(|r| r.0).eq(1..=k),
        "a request was left unanswered"
    );
    assert!(k <= sent);
    // The acknowledged ones come first (version = request id - 1), error 31 after them.
    let acked = replies.iter().take_while(|r| r.1.is_ok()).count() as u64;
    for (id, r) in &replies[..acked as usize] {
        assert_eq!(*r, Ok(id - 1));
    }
    assert!(
        replies[acked as usize..].iter().all(|r| r.1 == Err(31)),
        "an acknowledgement after an error 31"
    );
    assert!(acked >= 500, "{acked} acknowledged");
    assert!(
        k > acked,
        "no request got error 31 ({k} answered, all acknowledged)"
    );
    // The subscriber: a gap-free prefix of what was acknowledged, then error 31, then EOF.
    let (versions, ended) = subscriber.join().unwrap();
    let (code, message) = ended.expect("the subscription ended with an error before EOF");
    assert_eq!(code, code::SHUTTING_DOWN, "{message}");
    assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
    assert!(versions.len() as u64 <= acked);
    eprintln!(
        "{k} requests answered before the stop closed the connection: {acked} acknowledged, \
         {} error 31; the subscriber had {} events",
        k - acked,
        versions.len()
    );
    // After a restart: exactly the acknowledged appends, and a subscriber resuming from the
    // last version it received gets the rest.
    server.restart();
    let c = server.client();
    assert_eq!(c.stream_info("load").unwrap().next_version, acked);
    let resumed = c
        .subscribe(SubscribeTarget::Stream, "load", versions.len() as u64, "")
        .unwrap();
    let mut next = versions.len() as u64;
    let started = Instant::now();
    while next < acked {
        assert!(started.elapsed() < Duration::from_secs(30));
        match resumed.next_timeout(Duration::from_secs(10)) {
            Some(SubscriptionItem::Events(events)) => {
                for e in events {
                    assert_eq!(e.stream_version, next);
                    assert_eq!(e.event.data, (next + 1).to_le_bytes());
                    next += 1;
                }
            }
            other => panic!("resumed subscription: {other:?}"),
        }
    }
}
