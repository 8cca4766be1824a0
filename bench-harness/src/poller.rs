//! The light load driver of `evring-bench network --driver poll`: one thread (or a few)
//! driving many connections through non-blocking sockets and `poll(2)`, speaking the wire
//! protocol directly. Requests of one connection leave in batches (one `write` for all the
//! requests that fit the pipeline), replies are read in bulk and matched by request id. On a
//! machine where client and server share the cores, this leaves most of the CPU to the server,
//! as `redis-benchmark` does for Redis.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;

use evring::protocol::{
    decode_response, encode_request, FrameHeader, Request, Response, FRAME_HEADER_BYTES,
    PROTOCOL_VERSION,
};

use crate::report;

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// (request id, sent at) of requests awaiting a reply.
    waiting: Vec<(u64, Instant)>,
    next_id: u64,
    ready: bool,
}

pub struct DriverResult {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

/// Drives `conns` connections to `addr` with `pipeline` requests in flight each, until
/// `start + warmup + duration`; counts replies to requests sent after `start + warmup`.
pub fn drive(
    addr: &str,
    conns: usize,
    pipeline: usize,
    start: Instant,
    warmup: Duration,
    duration: Duration,
    mut request: impl FnMut() -> Request,
) -> anyhow::Result<DriverResult> {
    let mut cs = Vec::with_capacity(conns);
    for _ in 0..conns {
        let stream = TcpStream::connect(addr).map_err(|e| anyhow!("connect to {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut c = Conn {
            stream,
            out: Vec::new(),
            inbuf: Vec::with_capacity(64 * 1024),
            waiting: Vec::new(),
            next_id: 1,
            ready: false,
        };
        let hello = Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "evring-bench".into(),
            auth_token: String::new(),
        };
        encode_request(&mut c.out, 0, &hello);
        cs.push(c);
    }
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let mut latency = report::histogram();
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(conns);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        let mut open = 0;
        for c in cs.iter_mut() {
            if c.ready && sending {
                while c.waiting.len() < pipeline {
                    let id = c.next_id;
                    c.next_id += 1;
                    encode_request(&mut c.out, id, &request());
                    c.waiting.push((id, now));
                }
            }
            if !c.out.is_empty() {
                match c.stream.write(&c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => bail!("write: {e}"),
                }
            }
            if !c.ready || !c.waiting.is_empty() || !c.out.is_empty() {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        fds.clear();
        for c in &cs {
            let mut events = libc::POLLIN;
            if !c.out.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid, initialized array of `fds.len()` pollfd structs that
        // lives across the call; the descriptors belong to streams kept open in `cs`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            bail!("poll: {e}");
        }
        for (c, fd) in cs.iter_mut().zip(&fds) {
            if fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
                continue;
            }
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => bail!("the server closed a connection"),
                    Ok(k) => c.inbuf.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => bail!("read: {e}"),
                }
            }
            let done = Instant::now();
            let mut at = 0;
            while c.inbuf.len() - at >= FRAME_HEADER_BYTES {
                let head: &[u8; FRAME_HEADER_BYTES] = c.inbuf[at..at + FRAME_HEADER_BYTES]
                    .try_into()
                    .expect("length checked");
                let h = FrameHeader::parse(head).map_err(|e| anyhow!("bad reply: {e}"))?;
                let end = at + FRAME_HEADER_BYTES + h.body_len();
                if c.inbuf.len() < end {
                    break;
                }
                let resp = decode_response(h.opcode, &c.inbuf[at + FRAME_HEADER_BYTES..end])
                    .map_err(|e| anyhow!("bad reply: {e}"))?;
                at = end;
                if h.request_id == 0 {
                    match resp {
                        Response::Hello { .. } => c.ready = true,
                        other => bail!("HELLO refused: {other:?}"),
                    }
                    continue;
                }
                let Some(i) = c.waiting.iter().position(|(id, _)| *id == h.request_id) else {
                    bail!("reply to an unknown request {}", h.request_id);
                };
                let (_, sent) = c.waiting.swap_remove(i);
                match resp {
                    Response::Appended { .. } | Response::Pong => {
                        if sent >= measure_from && done <= deadline {
                            requests += 1;
                            report::record(&mut latency, done - sent);
                        }
                    }
                    Response::Error { code, message, .. } => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("error {code}: {message}");
                        }
                    }
                    other => bail!("unexpected reply {other:?}"),
                }
            }
            c.inbuf.drain(..at);
        }
    }
    Ok(DriverResult {
        requests,
        errors,
        latency,
    })
}
