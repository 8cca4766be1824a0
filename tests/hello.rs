//! What a connection may do before its HELLO is accepted: finish it within
//! `hello_timeout_ms`, and send no frame larger than the largest HELLO. Connections that never
//! authenticate neither hold connection slots for ever nor make the server buffer megabytes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{send, Server};
use evring::constants::HELLO_FRAME_BYTES_MAX;
use evring::protocol::{self, code, FrameHeader, Request, Response, FRAME_HEADER_BYTES};

/// Reads one reply within `within`; panics on a timeout (a timeout is not an answer).
fn reply_within(s: &mut TcpStream, within: Duration) -> (u64, Response) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut header = [0u8; FRAME_HEADER_BYTES];
    s.read_exact(&mut header)
        .unwrap_or_else(|e| panic!("no reply within {within:?}: {e}"));
    let h = FrameHeader::parse(&header).unwrap();
    let mut body = vec![0u8; h.body_len()];
    s.read_exact(&mut body).unwrap();
    (
        h.request_id,
        protocol::decode_response(h.opcode, &body).unwrap(),
    )
}

/// The server closed the connection: a read returns end-of-file (or a reset), not a timeout.
fn assert_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

fn error_code(r: &Response) -> u16 {
    match r {
        Response::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn connections_that_never_send_hello_are_closed_after_hello_timeout_and_free_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--set",
            "auth_token=\"s3cret\"",
            "--set",
            "max_connections=20",
            "--set",
            "hello_timeout_ms=300",
        ],
    );
    // Every slot taken by a connection that says nothing (or begins a HELLO and stops).
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    silent[0].write_all(&[40, 0, 0]).unwrap();
    let started = Instant::now();
    for s in &mut silent {
        let (_, r) = reply_within(s, Duration::from_secs(10));
        assert_eq!(error_code(&r), code::NOT_AUTHENTICATED);
        assert_closed(s);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The slots are free again: a client with the token gets in.
    let c = evring::client::BlockingClient::connect(&server.addr, "t", "s3cret").unwrap();
    c.ping().unwrap();
    // An authenticated connection is not timed between requests.
    std::thread::sleep(Duration::from_millis(600));
    c.ping().unwrap();
}

#[test]
fn a_frame_larger_than_any_hello_before_hello_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // The header of a 4 MiB "HELLO" (within request_frame_bytes_max), and some of its body.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&(4u32 * 1024 * 1024 - 5).to_le_bytes());
    frame.extend_from_slice(&[0x01, 0, 0, 0]);
    frame.extend_from_slice(&9u64.to_le_bytes());
    frame.resize(64 * 1024, b'x');
    s.write_all(&frame).unwrap();
    let (id, r) = reply_within(&mut s, Duration::from_secs(5));
    assert_eq!((id, error_code(&r)), (9, code::FRAME_TOO_LARGE));
    assert_closed(&mut s);

    // The largest real HELLO fits.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let name = "n".repeat(u16::MAX as usize);
    let token = "t".repeat(u16::MAX as usize);
    let mut buf = Vec::new();
    protocol::encode_request(
        &mut buf,
        1,
        &Request::Hello {
            protocol_version: protocol::PROTOCOL_VERSION,
            client_name: name,
            auth_token: token,
        },
    );
    assert_eq!(buf.len() as u32, HELLO_FRAME_BYTES_MAX);
    s.write_all(&buf).unwrap();
    let (_, r) = reply_within(&mut s, Duration::from_secs(5));
    assert!(matches!(r, Response::Hello { .. }), "{r:?}");
    send(&mut s, 2, &Request::Ping);
    assert!(matches!(
        reply_within(&mut s, Duration::from_secs(5)).1,
        Response::Pong
    ));
}
