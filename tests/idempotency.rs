//! The idempotency rule (docs/PROTOCOL.md, APPEND) against the real evringd: ids enter the
//! window when the append is accepted, not when it is durable, so a duplicate sent while the
//! original is in flight is answered with the original's result and written once; an append
//! whose ids only partly match earlier events is refused with error 12 and writes nothing.

mod common;

use std::net::TcpStream;

use common::{ev, hello, raw_connect, recv, send, Server};
use evring::protocol::{code, expected, AppendResult, Direction, Event, Request, Response};

fn with_id(id: u8, data: &str) -> Event {
    let mut e = ev("Paid", data.as_bytes());
    e.id = [id; 16];
    e
}

fn append(stream: &str, events: Vec<Event>) -> Request {
    Request::Append {
        stream: stream.into(),
        expected_version: expected::ANY,
        events,
    }
}

fn connect(addr: &str) -> TcpStream {
    let mut s = raw_connect(addr);
    send(&mut s, 0, &hello());
    assert!(matches!(recv(&mut s), Some((0, Response::Hello { .. }))));
    s
}

/// Reads replies until every id in `ids` has one; returns them by id.
fn replies(s: &mut TcpStream, ids: &[u64]) -> Vec<Response> {
    let mut got: Vec<Option<Response>> = vec![None; ids.len()];
    while got.iter().any(Option::is_none) {
        let (id, resp) = recv(s).expect("a reply");
        let at = ids
            .iter()
            .position(|x| *x == id)
            .expect("a reply to a request sent");
        got[at] = Some(resp);
    }
    got.into_iter().map(Option::unwrap).collect()
}

fn stream_len(server: &Server, stream: &str) -> usize {
    let (events, end) = server
        .client()
        .read(stream, 0, 1000, Direction::Forward)
        .unwrap();
    assert!(end);
    events.len()
}

fn appended(r: &Response) -> (u64, u64) {
    match r {
        Response::Appended(AppendResult {
            first_version,
            last_version,
            ..
        }) => (*first_version, *last_version),
        other => panic!("expected an append result, got {other:?}"),
    }
}

#[test]
fn duplicates_sent_back_to_back_on_one_connection_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut s = connect(&server.addr);
    // Pipelined in one write: the second arrives while the first is in flight.
    let mut buf = Vec::new();
    for id in 1..=4u64 {
        evring::protocol::encode_request(&mut buf, id, &append("pay-1", vec![with_id(7, "x")]));
    }
    std::io::Write::write_all(&mut s, &buf).unwrap();
    let got = replies(&mut s, &[1, 2, 3, 4]);
    for r in &got {
        assert_eq!(
            appended(r),
            (0, 0),
            "every copy answered with the original's result"
        );
    }
    assert_eq!(stream_len(&server, "pay-1"), 1, "written once");
}

#[test]
fn duplicates_sent_at_once_on_two_connections_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut a = connect(&server.addr);
    let mut b = connect(&server.addr);
    let mut buf = Vec::new();
    // A batch of 3 with ids 1, 2, 3, on both connections, several times over.
    let batch = || vec![with_id(1, "a"), with_id(2, "b"), with_id(3, "c")];
    for id in 1..=8u64 {
        evring::protocol::encode_request(&mut buf, id, &append("pay-2", batch()));
    }
    std::io::Write::write_all(&mut a, &buf).unwrap();
    std::io::Write::write_all(&mut b, &buf).unwrap();
    let ids: Vec<u64> = (1..=8).collect();
    for r in replies(&mut a, &ids).iter().chain(&replies(&mut b, &ids)) {
        assert_eq!(appended(r), (0, 2));
    }
    assert_eq!(stream_len(&server, "pay-2"), 3);
}

#[test]
fn an_append_whose_ids_only_partly_match_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let c = server.client();
    let first = c
        .append("pay-3", expected::ANY, vec![with_id(9, "one")])
        .unwrap();
    assert_eq!((first.first_version, first.last_version), (0, 0));
    let refused = |events: Vec<Event>| {
        let e = c.append("pay-3", expected::ANY, events).unwrap_err();
        assert_eq!(e.code(), Some(code::INVALID_ARGUMENT), "{e}");
    };
    // The known id first, then four new events: not a retry of one event.
    refused(vec![
        with_id(9, "one"),
        with_id(10, "two"),
        with_id(11, "three"),
        with_id(12, "four"),
        with_id(13, "five"),
    ]);
    // A new id first, the known one after it.
    refused(vec![with_id(20, "new"), with_id(9, "one")]);
    // The known id and an event without an id.
    refused(vec![with_id(9, "one"), ev("Paid", b"no id")]);
    // The known id on another stream of the same partition or not: not this stream's retry.
    let e = c
        .append("pay-3-other", expected::ANY, vec![with_id(9, "one")])
        .unwrap_err();
    assert_eq!(e.code(), Some(code::INVALID_ARGUMENT));
    // One id twice in one append.
    refused(vec![with_id(30, "x"), with_id(30, "y")]);
    assert_eq!(stream_len(&server, "pay-3"), 1, "nothing more was written");

    // A true retry still gets the original's result; new ids append.
    let retry = c
        .append("pay-3", expected::ANY, vec![with_id(9, "one")])
        .unwrap();
    assert_eq!(retry, first);
    let next = c
        .append(
            "pay-3",
            expected::ANY,
            vec![with_id(40, "a"), with_id(41, "b")],
        )
        .unwrap();
    assert_eq!((next.first_version, next.last_version), (1, 2));
    // Resending that batch, or its first event alone, answers with their versions.
    let again = c
        .append(
            "pay-3",
            expected::ANY,
            vec![with_id(40, "a"), with_id(41, "b")],
        )
        .unwrap();
    assert_eq!(again, next);
    let prefix = c
        .append("pay-3", expected::ANY, vec![with_id(40, "a")])
        .unwrap();
    assert_eq!((prefix.first_version, prefix.last_version), (1, 1));
    assert_eq!(stream_len(&server, "pay-3"), 3);
}

#[test]
fn a_retry_after_a_restart_is_answered_from_the_recovered_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_fixed(&dir.path().join("data"), &[]);
    let c = server.client();
    let first = c
        .append(
            "pay-4",
            expected::ANY,
            vec![with_id(5, "a"), with_id(6, "b")],
        )
        .unwrap();
    drop(c);
    server.kill_and_restart();
    let c = server.client();
    let retry = c
        .append(
            "pay-4",
            expected::ANY,
            vec![with_id(5, "a"), with_id(6, "b")],
        )
        .unwrap();
    assert_eq!(retry, first);
    let e = c
        .append(
            "pay-4",
            expected::ANY,
            vec![with_id(5, "a"), with_id(7, "c")],
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(code::INVALID_ARGUMENT));
    assert_eq!(stream_len(&server, "pay-4"), 2);
}
