//! The consume-and-ack workload (`kind = "groups-consume"`) for the RESP targets
//! (`evring-resp`, `redis-always`, `redis-nopersist`): the same code drives every one.
//!
//! 1. **Pre-fill** (not timed): `prefill` entries of `payload_bytes` bytes (field `d`) over
//!    the `streams` streams `s0`, `s1`, …, as `MULTI` + 100 × `XADD s<b % streams> * d …` +
//!    `EXEC` blocks `b`, 8 connections × 4 blocks in flight. Entry `i` carries
//!    `codecs::payload(stream, i, 0, payload_bytes)`, so its data names it. The ID of every
//!    entry is kept from the `EXEC` replies.
//! 2. `XGROUP CREATE s<j> g 0` on every stream: every entry is new to the group.
//! 3. **The run**: `connections` consumers, one connection each, driven by one thread through
//!    non-blocking sockets and `ppoll(2)` (as `driver.rs`). Consumer `i` loops
//!    `XREADGROUP GROUP g c<i> COUNT <count> STREAMS s<i % streams> >`, then
//!    `XACK s<i % streams> g <the IDs it got>`, then the next read. A *round* is one read and
//!    its ack, timed from sending the XREADGROUP to the XACK's reply. Rounds begun after the
//!    warm-up and answered before the end of `duration` count, with their entries; then
//!    every consumer finishes its round in flight and stops.
//! 4. **Checks** (every round of every target; a failure fails the run, so no figure comes
//!    from a broken run): no error reply; every XACK answers the number of IDs it was given
//!    (each newly acknowledged); no stream runs dry before the end (an empty read there would
//!    measure polling, not consuming: raise `prefill`); every delivered entry's data is the
//!    data written for its ID; per stream, the entries delivered across all consumers are
//!    exactly the oldest M entries of the stream, each delivered once (no duplicate, no gap:
//!    one group reading `>` hands out entries in ID order); afterwards `XPENDING s g` counts
//!    0 on every stream and `XLEN` is the pre-filled count.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;

use crate::codecs::{payload, resp_command, stream_name};
use crate::report;
use crate::workload::Workload;

/// A stream entry ID, `ms-seq`.
pub type Id = (u64, u64);

pub fn parse_id(b: &[u8]) -> anyhow::Result<Id> {
    let s = std::str::from_utf8(b)?;
    let (ms, seq) = s
        .split_once('-')
        .ok_or_else(|| anyhow!("bad entry ID {s:?}"))?;
    Ok((ms.parse()?, seq.parse()?))
}

fn id_text(id: Id) -> String {
    format!("{}-{}", id.0, id.1)
}

/// A RESP2 value borrowed from the input.
#[derive(Debug, PartialEq)]
pub enum V<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    Bulk(Option<&'a [u8]>),
    Array(Option<Vec<V<'a>>>),
}

impl V<'_> {
    fn error(&self) -> Option<String> {
        match self {
            V::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            V::Array(Some(items)) => items.iter().find_map(V::error),
            _ => None,
        }
    }
}

/// One complete value at the front of `buf` and the bytes it takes; `None` if incomplete.
pub fn parse(buf: &[u8]) -> anyhow::Result<Option<(V<'_>, usize)>> {
    let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[1..nl];
    let after = nl + 2;
    let int = || -> anyhow::Result<i64> { Ok(std::str::from_utf8(line)?.parse()?) };
    Ok(match buf[0] {
        b'+' => Some((V::Simple(line), after)),
        b'-' => Some((V::Error(line), after)),
        b':' => Some((V::Int(int()?), after)),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((V::Bulk(None), after)));
            }
            let end = after + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Some((V::Bulk(Some(&buf[after..end])), end + 2))
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((V::Array(None), after)));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = after;
            for _ in 0..n {
                let Some((v, used)) = parse(&buf[at..])? else {
                    return Ok(None);
                };
                items.push(v);
                at += used;
            }
            Some((V::Array(Some(items)), at))
        }
        other => bail!("bad RESP type byte {other:#x}"),
    })
}

/// An entry an XREADGROUP delivered: its ID and its `d` field.
type Delivered<'a> = (Id, &'a [u8]);

/// The entries of an XREADGROUP reply on one stream (none: a nil or empty reply).
pub fn read_entries<'a>(v: &V<'a>) -> anyhow::Result<Vec<Delivered<'a>>> {
    let streams = match v {
        V::Array(None) => return Ok(Vec::new()),
        V::Array(Some(s)) => s,
        other => bail!("XREADGROUP answered {other:?}"),
    };
    let mut out = Vec::new();
    for s in streams {
        let V::Array(Some(kv)) = s else {
            bail!("XREADGROUP: a stream is {s:?}");
        };
        let [_, V::Array(Some(entries))] = kv.as_slice() else {
            bail!("XREADGROUP: a stream is {kv:?}");
        };
        for e in entries {
            let V::Array(Some(pair)) = e else {
                bail!("XREADGROUP: an entry is {e:?}");
            };
            let [V::Bulk(Some(id)), V::Array(Some(fields))] = pair.as_slice() else {
                bail!("XREADGROUP: an entry is {pair:?} (deleted while pending?)");
            };
            let data = match fields.as_slice() {
                [V::Bulk(Some(b"d")), V::Bulk(Some(d))] => *d,
                other => bail!("XREADGROUP: entry fields {other:?}, not d <data>"),
            };
            out.push((parse_id(id)?, data));
        }
    }
    Ok(out)
}

/// A blocking connection for the steps around the run.
struct Blocking {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Blocking {
    fn connect(addr: &str) -> anyhow::Result<Blocking> {
        let s = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Blocking { s, buf: Vec::new() })
    }

    /// Waits for the next reply and hands it to `f`.
    fn reply<T>(&mut self, f: impl FnOnce(&V<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some((v, used)) = parse(&self.buf)? {
                let r = f(&v);
                self.buf.drain(..used);
                return r;
            }
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call<T>(
        &mut self,
        args: &[&[u8]],
        f: impl FnOnce(&V<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut out = Vec::new();
        resp_command(&mut out, args);
        self.s.write_all(&out)?;
        self.reply(f)
    }
}

const BLOCK: u64 = 100;
const FILL_CONNS: u64 = 8;
const FILL_IN_FLIGHT: usize = 4;

/// Every stream's pre-filled entries (ID, index), in ID order.
pub type Filled = Vec<Vec<(Id, u64)>>;

/// Pre-fills the streams; returns every entry's ID and index, per stream in ID order.
pub fn prefill(w: &Workload, addr: &str) -> anyhow::Result<Filled> {
    let blocks = w.prefill.div_ceil(BLOCK);
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..FILL_CONNS)
            .map(|c| {
                scope.spawn(move || -> anyhow::Result<Vec<(usize, Id, u64)>> {
                    let mut conn = Blocking::connect(addr)?;
                    let mine: Vec<u64> = (c..blocks).step_by(FILL_CONNS as usize).collect();
                    let mut got = Vec::new();
                    for group in mine.chunks(FILL_IN_FLIGHT) {
                        let mut out = Vec::new();
                        for &b in group {
                            let stream = (b % w.streams as u64) as usize;
                            let name = stream_name(stream);
                            resp_command(&mut out, &[b"MULTI"]);
                            for i in b * BLOCK..((b + 1) * BLOCK).min(w.prefill) {
                                let data = payload(stream as u32, i, 0, w.payload_bytes);
                                resp_command(
                                    &mut out,
                                    &[b"XADD", name.as_bytes(), b"*", b"d", &data],
                                );
                            }
                            resp_command(&mut out, &[b"EXEC"]);
                        }
                        conn.s.write_all(&out)?;
                        for &b in group {
                            let stream = (b % w.streams as u64) as usize;
                            let first = b * BLOCK;
                            let n = ((b + 1) * BLOCK).min(w.prefill) - first;
                            for _ in 0..=n {
                                // +OK, then one +QUEUED per XADD.
                                conn.reply(|v| match v {
                                    V::Simple(_) => Ok(()),
                                    other => bail!("pre-fill: {other:?}"),
                                })?;
                            }
                            conn.reply(|v| {
                                let V::Array(Some(ids)) = v else {
                                    bail!("pre-fill: EXEC answered {v:?}");
                                };
                                if ids.len() as u64 != n {
                                    bail!(
                                        "pre-fill: EXEC answered {} IDs for {n} XADDs",
                                        ids.len()
                                    );
                                }
                                for (k, id) in ids.iter().enumerate() {
                                    let V::Bulk(Some(id)) = id else {
                                        bail!("pre-fill: XADD answered {id:?}");
                                    };
                                    got.push((stream, parse_id(id)?, first + k as u64));
                                }
                                Ok(())
                            })?;
                        }
                    }
                    Ok(got)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a pre-fill thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut filled: Filled = vec![Vec::new(); w.streams];
    for (stream, id, i) in parts.into_iter().flatten() {
        filled[stream].push((id, i));
    }
    for f in &mut filled {
        f.sort_unstable();
    }
    Ok(filled)
}

/// What one run measured.
pub struct ConsumeResult {
    /// Counted rounds (read + ack) and the entries they acknowledged.
    pub rounds: u64,
    pub entries: u64,
    pub latency: Histogram<u64>,
    /// Entries consumed and acknowledged in all (warm-up and the last rounds included).
    pub total: u64,
}

enum State {
    Reading(Instant),
    Acking(Instant, usize),
    Done,
}

struct Consumer {
    id: usize,
    stream: usize,
    s: TcpStream,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    state: State,
    /// Every entry delivered to this consumer: ID, the index its data names, and whether
    /// the data is the data written for that index.
    delivered: Vec<(Id, u64, bool)>,
    ack: Vec<Vec<u8>>,
}

impl Consumer {
    fn read(&mut self, w: &Workload, now: Instant) {
        let count = w.count.to_string();
        let name = format!("c{}", self.id);
        resp_command(
            &mut self.out,
            &[
                b"XREADGROUP",
                b"GROUP",
                b"g",
                name.as_bytes(),
                b"COUNT",
                count.as_bytes(),
                b"STREAMS",
                stream_name(self.stream).as_bytes(),
                b">",
            ],
        );
        self.state = State::Reading(now);
    }
}

/// Runs pre-fill, groups, consumers and checks against a RESP server at `addr`.
pub fn run(w: &Workload, addr: &str) -> anyhow::Result<ConsumeResult> {
    let t = Instant::now();
    let filled = prefill(w, addr)?;
    eprintln!(
        "  pre-filled {} entries in {:.1} s",
        w.prefill,
        t.elapsed().as_secs_f64()
    );
    let mut admin = Blocking::connect(addr)?;
    for j in 0..w.streams {
        admin.call(
            &[b"XGROUP", b"CREATE", stream_name(j).as_bytes(), b"g", b"0"],
            |v| match v {
                V::Simple(b"OK") => Ok(()),
                other => bail!("XGROUP CREATE: {other:?}"),
            },
        )?;
    }
    let (result, consumers) = consume(w, addr)?;
    check(&mut admin, &filled, &consumers)?;
    eprintln!(
        "  checked: {} entries consumed exactly once by {} consumers, pending 0",
        result.total, w.connections
    );
    Ok(result)
}

fn consume(w: &Workload, addr: &str) -> anyhow::Result<(ConsumeResult, Vec<Consumer>)> {
    let start = Instant::now();
    let mut cs = Vec::new();
    for i in 0..w.connections {
        let s = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut c = Consumer {
            id: i,
            stream: i % w.streams,
            s,
            out: Vec::new(),
            inbuf: Vec::with_capacity(64 * 1024),
            state: State::Done,
            delivered: Vec::new(),
            ack: Vec::new(),
        };
        c.read(w, start);
        cs.push(c);
    }
    let measure_from = start + w.warmup;
    let deadline = measure_from + w.duration;
    let give_up = deadline + Duration::from_secs(30);
    let mut r = ConsumeResult {
        rounds: 0,
        entries: 0,
        latency: report::histogram(),
        total: 0,
    };
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(cs.len());
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        if Instant::now() > give_up {
            bail!("replies still missing 30 s after the run ended");
        }
        let mut open = 0;
        for c in cs.iter_mut() {
            if !c.out.is_empty() {
                match c.s.write(&c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => bail!("write: {e}"),
                }
            }
            if !matches!(c.state, State::Done) {
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
                fd: c.s.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        if !crate::driver::poll(&mut fds, Duration::from_millis(100))? {
            continue;
        }
        for (c, fd) in cs.iter_mut().zip(&fds) {
            if fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
                continue;
            }
            loop {
                match c.s.read(&mut chunk) {
                    Ok(0) => bail!("the server closed consumer c{}'s connection", c.id),
                    Ok(k) => c.inbuf.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => bail!("read: {e}"),
                }
            }
            let now = Instant::now();
            let mut inbuf = std::mem::take(&mut c.inbuf);
            let mut at = 0;
            while let Some((v, used)) = parse(&inbuf[at..])? {
                at += used;
                if let Some(e) = v.error() {
                    bail!("consumer c{}: {e}", c.id);
                }
                match c.state {
                    State::Reading(t0) => {
                        let entries = read_entries(&v)?;
                        if entries.is_empty() {
                            if now < deadline {
                                bail!(
                                    "stream {} ran dry before the run's end ({} entries consumed): raise prefill",
                                    stream_name(c.stream),
                                    r.total
                                );
                            }
                            c.state = State::Done;
                            continue;
                        }
                        c.ack.clear();
                        for &(id, data) in &entries {
                            let index = data
                                .get(4..12)
                                .map_or(u64::MAX, |b| u64::from_le_bytes(b.try_into().expect("8")));
                            let ok = data == payload(c.stream as u32, index, 0, w.payload_bytes);
                            c.delivered.push((id, index, ok));
                            c.ack.push(id_text(id).into_bytes());
                        }
                        let name = stream_name(c.stream);
                        let mut args: Vec<&[u8]> = vec![b"XACK", name.as_bytes(), b"g"];
                        args.extend(c.ack.iter().map(Vec::as_slice));
                        resp_command(&mut c.out, &args);
                        c.state = State::Acking(t0, entries.len());
                    }
                    State::Acking(t0, n) => {
                        match v {
                            V::Int(k) if k == n as i64 => {}
                            other => bail!(
                                "consumer c{}: XACK of {n} delivered IDs answered {other:?}",
                                c.id
                            ),
                        }
                        r.total += n as u64;
                        if t0 >= measure_from && now <= deadline {
                            r.rounds += 1;
                            r.entries += n as u64;
                            report::record(&mut r.latency, now - t0);
                        }
                        if now < deadline {
                            c.read(w, now);
                        } else {
                            c.state = State::Done;
                        }
                    }
                    State::Done => bail!("consumer c{}: a reply nobody asked for", c.id),
                }
            }
            inbuf.drain(..at);
            c.inbuf = inbuf;
        }
    }
    Ok((r, cs))
}

/// Exactly once, in order, no gap, data intact, nothing pending, nothing lost.
fn check(admin: &mut Blocking, filled: &Filled, consumers: &[Consumer]) -> anyhow::Result<()> {
    for (j, want) in filled.iter().enumerate() {
        let name = stream_name(j);
        let mut got: Vec<(Id, u64, bool)> = consumers
            .iter()
            .filter(|c| c.stream == j)
            .flat_map(|c| c.delivered.iter().copied())
            .collect();
        got.sort_unstable();
        if let Some(d) = got.windows(2).find(|p| p[0].0 == p[1].0) {
            bail!("{name}: entry {} delivered twice", id_text(d[0].0));
        }
        if got.len() > want.len() {
            bail!(
                "{name}: {} entries delivered, {} written",
                got.len(),
                want.len()
            );
        }
        for (k, (&(id, index, ok), &(want_id, want_index))) in got.iter().zip(want).enumerate() {
            if id != want_id {
                bail!(
                    "{name}: delivery {k} in ID order is {}, the stream's entry {k} is {} (a gap or a foreign entry)",
                    id_text(id),
                    id_text(want_id)
                );
            }
            if index != want_index || !ok {
                bail!(
                    "{name}: entry {} carried data other than what was written",
                    id_text(id)
                );
            }
        }
        admin.call(&[b"XPENDING", name.as_bytes(), b"g"], |v| match v {
            V::Array(Some(items)) if items.first() == Some(&V::Int(0)) => Ok(()),
            other => {
                bail!("{name}: XPENDING answered {other:?} after every delivery was acknowledged")
            }
        })?;
        admin.call(&[b"XLEN", name.as_bytes()], |v| match v {
            V::Int(n) if *n as usize == want.len() => Ok(()),
            other => bail!("{name}: XLEN {other:?}, {} written", want.len()),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xreadgroup_replies_give_their_entries() {
        let reply =
            b"*1\r\n*2\r\n$2\r\ns0\r\n*2\r\n*2\r\n$3\r\n5-0\r\n*2\r\n$1\r\nd\r\n$2\r\nab\r\n\
                      *2\r\n$3\r\n5-1\r\n*2\r\n$1\r\nd\r\n$1\r\nc\r\n";
        let (v, used) = parse(reply).unwrap().unwrap();
        assert_eq!(used, reply.len());
        let e = read_entries(&v).unwrap();
        assert_eq!(e, vec![((5, 0), &b"ab"[..]), ((5, 1), &b"c"[..])]);
        assert!(parse(&reply[..reply.len() - 1]).unwrap().is_none());
        let (nil, _) = parse(b"*-1\r\n").unwrap().unwrap();
        assert!(read_entries(&nil).unwrap().is_empty());
        let (err, _) = parse(b"-NOGROUP no\r\n").unwrap().unwrap();
        assert_eq!(err.error().as_deref(), Some("NOGROUP no"));
        // A pending entry deleted from the stream comes back without fields.
        let (gone, _) = parse(b"*1\r\n*2\r\n$2\r\ns0\r\n*1\r\n*2\r\n$3\r\n5-0\r\n*-1\r\n")
            .unwrap()
            .unwrap();
        assert!(read_entries(&gone).is_err());
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(
            parse_id(b"1700000000000-7").unwrap(),
            (1_700_000_000_000, 7)
        );
        assert_eq!(id_text((3, 4)), "3-4");
        assert!(parse_id(b"12").is_err());
    }
}
