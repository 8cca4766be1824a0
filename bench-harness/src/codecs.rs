//! The wire protocols the load driver speaks: evring's own, RESP (Redis Streams) and the
//! PostgreSQL frontend/backend protocol (simple queries). Each turns an [`Op`] into request
//! bytes and reply bytes back into completions, so one driver (`driver.rs`) measures every
//! target the same way: non-blocking sockets, pipelined requests, bulk reads.
//!
//! evring replies carry the request id; Redis and PostgreSQL answer in order, so their codecs
//! keep a FIFO of the keys they encoded.

use std::collections::VecDeque;

use anyhow::{anyhow, bail};

use evring::protocol::{
    decode_response, encode_request, AppendResult, Direction, FrameHeader, Request, Response,
    FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};

/// One operation of the load.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `events` events to stream `stream`; `expected` = the stream's last version (-2: none).
    Append {
        stream: usize,
        events: usize,
        expected: Option<i64>,
        conn: u32,
        seq: u64,
    },
    /// The 10 newest events of `stream`.
    Read { stream: usize },
    /// A PING: the server's network path alone (evring's PING frame, RESP `PING`).
    Ping,
}

/// What one reply (or message) meant.
#[derive(Debug)]
pub enum Decoded {
    /// The connection's handshake completed.
    Ready,
    /// The request with this key completed.
    Done {
        key: u64,
        error: Option<String>,
        /// evring: the first version the append got.
        first_version: Option<u64>,
    },
    /// A message that completes nothing by itself (PostgreSQL rows, Redis QUEUED).
    Nothing,
}

pub trait Codec: Send {
    /// Bytes to send on connect; false if the connection is ready without a reply.
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool;
    /// Encodes `op`; returns the key its completion will carry.
    fn encode(&mut self, out: &mut Vec<u8>, op: &Op, payload_bytes: usize) -> u64;
    /// Decodes one message from the front of `buf`: `None` if incomplete, else the bytes it
    /// used and what it meant.
    fn decode(&mut self, buf: &[u8]) -> anyhow::Result<Option<(usize, Decoded)>>;
}

pub fn stream_name(i: usize) -> String {
    format!("s{i}")
}

/// Deterministic event data: connection, sequence and index in the request, then filler, so
/// `--verify` can recompute what each acknowledged event must hold.
pub fn payload(conn: u32, seq: u64, j: usize, len: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(len.max(16));
    d.extend_from_slice(&conn.to_le_bytes());
    d.extend_from_slice(&seq.to_le_bytes());
    d.extend_from_slice(&(j as u32).to_le_bytes());
    let fill = (conn as u64 ^ seq ^ j as u64) as u8;
    while d.len() < len {
        d.push(fill.wrapping_add(d.len() as u8));
    }
    d.truncate(len.max(16));
    d
}

// ---- evring -------------------------------------------------------------------------------

#[derive(Default)]
pub struct EvringCodec {
    next_id: u64,
}

impl Codec for EvringCodec {
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool {
        let hello = Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "evring-bench".into(),
            auth_token: String::new(),
        };
        encode_request(out, 0, &hello);
        true
    }

    fn encode(&mut self, out: &mut Vec<u8>, op: &Op, payload_bytes: usize) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let req = match *op {
            Op::Ping => Request::Ping,
            Op::Append {
                stream,
                events,
                expected,
                conn,
                seq,
            } => Request::Append {
                stream: stream_name(stream),
                expected_version: expected.unwrap_or(evring::protocol::expected::ANY),
                events: (0..events)
                    .map(|j| evring::client::event("bench", payload(conn, seq, j, payload_bytes)))
                    .collect(),
            },
            Op::Read { stream } => Request::Read {
                stream: stream_name(stream),
                from_version: u64::MAX,
                max_count: 10,
                direction: Direction::Backward,
            },
        };
        encode_request(out, id, &req);
        id
    }

    fn decode(&mut self, buf: &[u8]) -> anyhow::Result<Option<(usize, Decoded)>> {
        if buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let head: &[u8; FRAME_HEADER_BYTES] = buf[..FRAME_HEADER_BYTES]
            .try_into()
            .expect("length checked");
        let h = FrameHeader::parse(head).map_err(|e| anyhow!("bad evring reply: {e}"))?;
        let end = FRAME_HEADER_BYTES + h.body_len();
        if buf.len() < end {
            return Ok(None);
        }
        let resp = decode_response(h.opcode, &buf[FRAME_HEADER_BYTES..end])
            .map_err(|e| anyhow!("bad evring reply: {e}"))?;
        let d = match resp {
            Response::Hello { .. } if h.request_id == 0 => Decoded::Ready,
            Response::Appended(AppendResult { first_version, .. }) => Decoded::Done {
                key: h.request_id,
                error: None,
                first_version: Some(first_version),
            },
            Response::Events { .. } | Response::Pong => Decoded::Done {
                key: h.request_id,
                error: None,
                first_version: None,
            },
            // Reading a stream nobody appended to yet is a normal outcome of a read mix.
            Response::Error { code, .. } if code == evring::protocol::code::STREAM_NOT_FOUND => {
                Decoded::Done {
                    key: h.request_id,
                    error: None,
                    first_version: None,
                }
            }
            Response::Error { code, message, .. } => Decoded::Done {
                key: h.request_id,
                error: Some(format!("error {code}: {message}")),
                first_version: None,
            },
            other => bail!("unexpected evring reply {other:?}"),
        };
        Ok(Some((end, d)))
    }
}

// ---- Redis (RESP2) ------------------------------------------------------------------------

/// XADD per event; a request of several events is one MULTI … EXEC transaction (atomic, as
/// an evring APPEND is). Reads are XREVRANGE … COUNT 10.
#[derive(Default)]
pub struct RespCodec {
    next_key: u64,
    /// (key, replies still expected, error seen) per request, in order.
    fifo: VecDeque<(u64, usize, Option<String>)>,
}

/// `PING` as a RESP array, as redis-benchmark sends it; answered `+PONG\r\n`.
pub const RESP_PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

pub fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Length of one complete RESP value at the front of `buf` and whether it is an error (and
/// its text); `None` if incomplete.
pub fn resp_value(buf: &[u8]) -> anyhow::Result<Option<(usize, Option<String>)>> {
    let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[1..nl];
    let after = nl + 2;
    match buf[0] {
        b'+' | b':' => Ok(Some((after, None))),
        b'-' => Ok(Some((
            after,
            Some(String::from_utf8_lossy(line).into_owned()),
        ))),
        b'$' => {
            let n: i64 = std::str::from_utf8(line)?.parse()?;
            if n < 0 {
                return Ok(Some((after, None)));
            }
            let end = after + n as usize + 2;
            Ok((buf.len() >= end).then_some((end, None)))
        }
        b'*' => {
            let n: i64 = std::str::from_utf8(line)?.parse()?;
            let mut at = after;
            let mut error = None;
            for _ in 0..n.max(0) {
                match resp_value(&buf[at..])? {
                    Some((len, e)) => {
                        at += len;
                        error = error.or(e);
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((at, error)))
        }
        other => bail!("bad RESP type byte {other:#x}"),
    }
}

impl Codec for RespCodec {
    fn handshake(&mut self, _out: &mut Vec<u8>) -> bool {
        false
    }

    fn encode(&mut self, out: &mut Vec<u8>, op: &Op, payload_bytes: usize) -> u64 {
        self.next_key += 1;
        let key = self.next_key;
        let replies = match *op {
            Op::Append {
                stream,
                events,
                conn,
                seq,
                ..
            } => {
                let name = stream_name(stream);
                let xadd = |out: &mut Vec<u8>, j| {
                    let data = payload(conn, seq, j, payload_bytes);
                    resp_command(out, &[b"XADD", name.as_bytes(), b"*", b"d", &data]);
                };
                if events == 1 {
                    xadd(out, 0);
                    1
                } else {
                    resp_command(out, &[b"MULTI"]);
                    for j in 0..events {
                        xadd(out, j);
                    }
                    resp_command(out, &[b"EXEC"]);
                    events + 2
                }
            }
            Op::Read { stream } => {
                let name = stream_name(stream);
                resp_command(
                    out,
                    &[b"XREVRANGE", name.as_bytes(), b"+", b"-", b"COUNT", b"10"],
                );
                1
            }
            Op::Ping => {
                out.extend_from_slice(RESP_PING);
                1
            }
        };
        self.fifo.push_back((key, replies, None));
        key
    }

    fn decode(&mut self, buf: &[u8]) -> anyhow::Result<Option<(usize, Decoded)>> {
        if buf.is_empty() {
            return Ok(None);
        }
        let Some((len, error)) = resp_value(buf)? else {
            return Ok(None);
        };
        let front = self
            .fifo
            .front_mut()
            .ok_or_else(|| anyhow!("a Redis reply nobody asked for"))?;
        front.1 -= 1;
        if front.2.is_none() {
            front.2 = error;
        }
        if front.1 > 0 {
            return Ok(Some((len, Decoded::Nothing)));
        }
        let (key, _, error) = self.fifo.pop_front().expect("front exists");
        Ok(Some((
            len,
            Decoded::Done {
                key,
                error,
                first_version: None,
            },
        )))
    }
}

// ---- PostgreSQL ---------------------------------------------------------------------------

/// The table every PostgreSQL run writes to: a common "events table" design, with the
/// (stream, version) uniqueness an event store's optimistic concurrency needs.
pub const PG_SCHEMA: &str = "DROP TABLE IF EXISTS events; \
    CREATE TABLE events (id bigserial PRIMARY KEY, stream text NOT NULL, version bigint, \
    type text NOT NULL, data bytea NOT NULL, created timestamptz NOT NULL DEFAULT now(), \
    UNIQUE (stream, version)); \
    CREATE INDEX events_stream_id ON events (stream, id);";

/// Simple-query protocol: one INSERT (all the request's rows) or SELECT per request, in
/// autocommit (so every INSERT commits, durably with `synchronous_commit = on`).
#[derive(Default)]
pub struct PgCodec {
    next_key: u64,
    ready: bool,
    fifo: VecDeque<(u64, Option<String>)>,
}

impl PgCodec {
    /// Encodes `sql` as one simple query; its completion will carry the returned key.
    pub fn encode_sql(&mut self, out: &mut Vec<u8>, sql: &str) -> u64 {
        self.next_key += 1;
        out.push(b'Q');
        out.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        out.extend_from_slice(sql.as_bytes());
        out.push(0);
        self.fifo.push_back((self.next_key, None));
        self.next_key
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

impl Codec for PgCodec {
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool {
        let mut body = Vec::new();
        body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
        for s in ["user", "postgres", "database", "postgres", ""] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        true
    }

    fn encode(&mut self, out: &mut Vec<u8>, op: &Op, payload_bytes: usize) -> u64 {
        let sql = match *op {
            Op::Append {
                stream,
                events,
                expected,
                conn,
                seq,
            } => {
                let name = stream_name(stream);
                let mut sql =
                    String::from("INSERT INTO events (stream, version, type, data) VALUES ");
                for j in 0..events {
                    if j > 0 {
                        sql.push(',');
                    }
                    // expected: the stream's last version, or negative for "no stream yet".
                    let version = match expected {
                        Some(e) => (e.max(-1) + 1 + j as i64).to_string(),
                        None => "NULL".into(),
                    };
                    let data = hex(&payload(conn, seq, j, payload_bytes));
                    sql.push_str(&format!("('{name}',{version},'bench','\\x{data}')"));
                }
                sql
            }
            Op::Read { stream } => format!(
                "SELECT id, data FROM events WHERE stream = '{}' ORDER BY id DESC LIMIT 10",
                stream_name(stream)
            ),
            Op::Ping => unreachable!("compare refuses ping workloads for postgres"),
        };
        self.encode_sql(out, &sql)
    }

    fn decode(&mut self, buf: &[u8]) -> anyhow::Result<Option<(usize, Decoded)>> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(buf[1..5].try_into().expect("4 bytes")) as usize;
        if buf.len() < 1 + len {
            return Ok(None);
        }
        let body = &buf[5..1 + len];
        let used = 1 + len;
        let d = match buf[0] {
            b'R' => {
                let code = u32::from_be_bytes(body[..4].try_into()?);
                if code != 0 {
                    bail!("PostgreSQL asks for authentication method {code}; the harness's server uses trust");
                }
                Decoded::Nothing
            }
            b'E' => {
                // Fields: type byte, text, NUL … ; keep the message ('M').
                let text = body
                    .split(|&b| b == 0)
                    .find(|f| f.first() == Some(&b'M'))
                    .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                    .unwrap_or_else(|| "PostgreSQL error".into());
                if !self.ready {
                    bail!("PostgreSQL refused the connection: {text}");
                }
                if let Some(front) = self.fifo.front_mut() {
                    front.1.get_or_insert(text);
                }
                Decoded::Nothing
            }
            b'Z' => {
                if !self.ready {
                    self.ready = true;
                    Decoded::Ready
                } else {
                    let (key, error) = self
                        .fifo
                        .pop_front()
                        .ok_or_else(|| anyhow!("a PostgreSQL reply nobody asked for"))?;
                    Decoded::Done {
                        key,
                        error,
                        first_version: None,
                    }
                }
            }
            _ => Decoded::Nothing,
        };
        Ok(Some((used, d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_values_are_framed_whole_or_not_at_all() {
        assert_eq!(resp_value(b"+OK\r\n").unwrap(), Some((5, None)));
        assert_eq!(resp_value(b"$5\r\nhel").unwrap(), None);
        assert_eq!(resp_value(b"$3\r\nabc\r\n").unwrap(), Some((9, None)));
        let arr = b"*2\r\n$1\r\na\r\n*1\r\n:5\r\n";
        assert_eq!(resp_value(arr).unwrap(), Some((arr.len(), None)));
        assert_eq!(resp_value(&arr[..arr.len() - 1]).unwrap(), None);
        let (_, e) = resp_value(b"-ERR no\r\n").unwrap().unwrap();
        assert_eq!(e.as_deref(), Some("ERR no"));
    }

    #[test]
    fn a_ping_is_the_resp_array_redis_benchmark_sends() {
        let mut out = Vec::new();
        resp_command(&mut out, &[b"PING"]);
        assert_eq!(out, RESP_PING);
        let mut c = RespCodec::default();
        let mut out = Vec::new();
        let key = c.encode(&mut out, &Op::Ping, 100);
        assert_eq!(out, RESP_PING);
        match c.decode(b"+PONG\r\n").unwrap() {
            Some((7, Decoded::Done { key: k, error, .. })) => {
                assert_eq!((k, error), (key, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_redis_batch_completes_at_its_exec_reply() {
        let mut c = RespCodec::default();
        let mut out = Vec::new();
        let op = Op::Append {
            stream: 1,
            events: 2,
            expected: None,
            conn: 0,
            seq: 0,
        };
        let key = c.encode(&mut out, &op, 20);
        let replies = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$3\r\n1-0\r\n$3\r\n1-1\r\n";
        let mut at = 0;
        let mut done = None;
        while let Some((n, d)) = c.decode(&replies[at..]).unwrap() {
            at += n;
            if let Decoded::Done { key, error, .. } = d {
                assert!(error.is_none());
                done = Some(key);
            }
        }
        assert_eq!(done, Some(key));
        assert_eq!(at, replies.len());
    }

    #[test]
    fn postgres_queries_complete_at_ready_for_query_with_their_error() {
        let mut c = PgCodec::default();
        let mut out = Vec::new();
        assert!(c.handshake(&mut out));
        let msg = |t: u8, body: &[u8]| {
            let mut m = vec![t];
            m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            m.extend_from_slice(body);
            m
        };
        let mut replies = msg(b'R', &0u32.to_be_bytes());
        replies.extend(msg(b'Z', b"I"));
        let k1 = c.encode(&mut out, &Op::Read { stream: 3 }, 10);
        let k2 = c.encode(&mut out, &Op::Read { stream: 4 }, 10);
        replies.extend(msg(b'C', b"SELECT 0\0"));
        replies.extend(msg(b'Z', b"I"));
        replies.extend(msg(b'E', b"SERROR\0Mduplicate key\0\0"));
        replies.extend(msg(b'Z', b"I"));
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((n, d)) = c.decode(&replies[at..]).unwrap() {
            at += n;
            match d {
                Decoded::Ready => seen.push((0, None)),
                Decoded::Done { key, error, .. } => seen.push((key, error)),
                Decoded::Nothing => {}
            }
        }
        assert_eq!(
            seen,
            vec![(0, None), (k1, None), (k2, Some("duplicate key".into()))]
        );
    }

    #[test]
    fn payloads_are_deterministic_and_sized() {
        assert_eq!(payload(3, 9, 1, 100), payload(3, 9, 1, 100));
        assert_ne!(payload(3, 9, 1, 100), payload(3, 9, 2, 100));
        assert_eq!(payload(1, 2, 3, 100).len(), 100);
    }
}
