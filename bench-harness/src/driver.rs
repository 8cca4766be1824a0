//! The load driver every target shares: one thread (or a few) driving many connections
//! through non-blocking sockets and `ppoll(2)`, speaking each target's protocol through a
//! [`Codec`]. Requests of one connection leave in batches (one `write` for all that are due),
//! replies are read in bulk. On a machine where client and server share the cores this leaves
//! most of the CPU to the server, as `redis-benchmark` does for Redis.
//!
//! Two modes:
//! - **closed loop**: each connection keeps `pipeline` requests in flight; latency is send →
//!   reply.
//! - **open loop**: requests are due at a fixed total rate, spread evenly over connections;
//!   a request that cannot leave at its due time (its connection has `pipeline` waiting)
//!   leaves as soon as it can, and its latency still counts from the *intended* send time, so
//!   a stalled server cannot hide its stall by slowing the client down (no coordinated
//!   omission).
//!
//! Only requests intended after the warm-up and completed before the deadline are counted.
//! After the deadline the driver stops sending and waits (up to 30 s) for what is in flight,
//! so every acknowledgement is known to `--verify`.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;

use crate::codecs::{Codec, Decoded, Op};
use crate::report;
use crate::workload::Workload;

/// A small xorshift generator: enough for picking streams and operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Stream popularity: uniform, or Zipf (s = 0.99) through a cumulative table.
pub enum Picker {
    Uniform(usize),
    Zipf(Vec<f64>),
}

impl Picker {
    pub fn new(n: usize, distribution: &str) -> anyhow::Result<Picker> {
        match distribution {
            "uniform" => Ok(Picker::Uniform(n)),
            "zipf" => {
                let mut cdf = Vec::with_capacity(n);
                let mut sum = 0.0;
                for k in 1..=n {
                    sum += 1.0 / (k as f64).powf(0.99);
                    cdf.push(sum);
                }
                for c in &mut cdf {
                    *c /= sum;
                }
                Ok(Picker::Zipf(cdf))
            }
            other => bail!("unknown distribution {other:?} (uniform, zipf)"),
        }
    }
    pub fn pick(&self, rng: &mut Rng) -> usize {
        match self {
            Picker::Uniform(n) => (rng.next() % *n as u64) as usize,
            Picker::Zipf(cdf) => {
                let u = rng.unit();
                cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
            }
        }
    }
}

/// An acknowledged append, for `--verify`.
#[derive(Clone, Copy, Debug)]
pub struct Acked {
    pub stream: u32,
    pub first_version: u64,
    pub conn: u32,
    pub seq: u64,
    pub events: u32,
}

#[derive(Debug)]
pub struct DriverResult {
    pub appends: u64,
    pub reads: u64,
    pub pings: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
    pub acked: Vec<Acked>,
    /// Events of every append answered without error, warm-up and tail included (what
    /// the server must hold afterwards).
    pub acked_events: u64,
}

impl DriverResult {
    pub fn empty() -> DriverResult {
        DriverResult {
            appends: 0,
            reads: 0,
            pings: 0,
            errors: 0,
            latency: report::histogram(),
            acked: Vec::new(),
            acked_events: 0,
        }
    }
    pub fn merge(&mut self, other: DriverResult) {
        self.appends += other.appends;
        self.reads += other.reads;
        self.pings += other.pings;
        self.errors += other.errors;
        self.latency.add(&other.latency).expect("same bounds");
        self.acked.extend(other.acked);
        self.acked_events += other.acked_events;
    }
}

struct Waiting {
    /// Send time (closed loop) or intended send time (open loop).
    at: Instant,
    op: Op,
}

struct Conn<C: Codec> {
    id: u32,
    stream: TcpStream,
    codec: C,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    waiting: HashMap<u64, Waiting>,
    ready: bool,
    /// Open loop: when the next request is due, and due requests not yet sent.
    next_due: Instant,
    backlog: VecDeque<Instant>,
    seq: u64,
    rng: Rng,
    /// expected_version: the streams this connection owns and their next versions.
    versions: HashMap<usize, i64>,
}

/// What the driver needs besides the workload.
pub struct DriverParams<'a> {
    pub addr: &'a str,
    /// Global ids of the connections this thread drives.
    pub conn_ids: std::ops::Range<u32>,
    pub start: Instant,
    pub verify: bool,
}

/// Drives the workload's connections `p.conn_ids` against `p.addr`.
pub fn drive<C: Codec>(
    w: &Workload,
    picker: &Picker,
    p: &DriverParams<'_>,
    mut new_codec: impl FnMut() -> C,
) -> anyhow::Result<DriverResult> {
    let total_conns = w.connections as f64;
    let interval = if w.open_loop() {
        Duration::from_secs_f64(total_conns / w.rate)
    } else {
        Duration::ZERO
    };
    let mut cs = Vec::new();
    for id in p.conn_ids.clone() {
        let stream =
            TcpStream::connect(p.addr).map_err(|e| anyhow!("connect to {}: {e}", p.addr))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut codec = new_codec();
        let mut out = Vec::new();
        let wait = codec.handshake(&mut out);
        cs.push(Conn {
            id,
            stream,
            codec,
            out,
            inbuf: Vec::with_capacity(64 * 1024),
            waiting: HashMap::new(),
            ready: !wait,
            // Stagger the connections' schedules over one interval.
            next_due: p.start + interval.mul_f64(f64::from(id) / total_conns),
            backlog: VecDeque::new(),
            seq: 0,
            rng: Rng::new(u64::from(id) + 1),
            versions: HashMap::new(),
        });
    }
    let measure_from = p.start + w.warmup;
    let deadline = measure_from + w.duration;
    let give_up = deadline + Duration::from_secs(30);
    let mut result = DriverResult::empty();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(cs.len());
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now > give_up {
            bail!("replies still missing 30 s after the run ended");
        }
        let sending = now < deadline;
        let mut open = 0;
        let mut wake_at: Option<Instant> = None;
        for c in cs.iter_mut() {
            if c.ready && sending {
                if w.open_loop() {
                    while c.next_due <= now {
                        c.backlog.push_back(c.next_due);
                        c.next_due += interval;
                    }
                    while c.waiting.len() < w.pipeline {
                        let Some(at) = c.backlog.pop_front() else {
                            break;
                        };
                        send_one(c, w, picker, at);
                    }
                    wake_at = Some(wake_at.map_or(c.next_due, |t: Instant| t.min(c.next_due)));
                } else {
                    while c.waiting.len() < w.pipeline {
                        send_one(c, w, picker, now);
                    }
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
            if !c.ready || !c.waiting.is_empty() || !c.out.is_empty() || sending {
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
        let timeout = wake_at
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(100))
            .min(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            )
            .min(Duration::from_millis(100));
        if !poll(&mut fds, timeout)? {
            continue;
        }
        for (c, fd) in cs.iter_mut().zip(&fds) {
            if fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
                continue;
            }
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => bail!("the server closed connection {}", c.id),
                    Ok(k) => c.inbuf.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => bail!("read: {e}"),
                }
            }
            let done = Instant::now();
            let mut at = 0;
            while let Some((used, d)) = c.codec.decode(&c.inbuf[at..])? {
                at += used;
                match d {
                    Decoded::Ready => c.ready = true,
                    Decoded::Nothing => {}
                    Decoded::Done {
                        key,
                        error,
                        first_version,
                    } => {
                        let wt = c
                            .waiting
                            .remove(&key)
                            .ok_or_else(|| anyhow!("a reply to an unknown request {key}"))?;
                        if let Some(e) = error {
                            result.errors += 1;
                            if result.errors == 1 {
                                eprintln!("connection {}: {e}", c.id);
                            }
                            continue;
                        }
                        let counted = wt.at >= measure_from && done <= deadline;
                        match wt.op {
                            Op::Append {
                                stream,
                                events,
                                conn,
                                seq,
                                ..
                            } => {
                                if counted {
                                    result.appends += 1;
                                }
                                result.acked_events += events as u64;
                                if p.verify {
                                    if let Some(v) = first_version {
                                        result.acked.push(Acked {
                                            stream: stream as u32,
                                            first_version: v,
                                            conn,
                                            seq,
                                            events: events as u32,
                                        });
                                    }
                                }
                            }
                            Op::Read { .. } => {
                                if counted {
                                    result.reads += 1;
                                }
                            }
                            Op::Ping => {
                                if counted {
                                    result.pings += 1;
                                }
                            }
                        }
                        if counted {
                            report::record(&mut result.latency, done - wt.at);
                        }
                    }
                }
            }
            c.inbuf.drain(..at);
        }
    }
    Ok(result)
}

fn send_one<C: Codec>(c: &mut Conn<C>, w: &Workload, picker: &Picker, at: Instant) {
    let op = if w.ping() {
        Op::Ping
    } else if w.read_fraction > 0.0 && c.rng.unit() < w.read_fraction {
        Op::Read {
            stream: picker.pick(&mut c.rng),
        }
    } else if w.expected_version {
        // Connection i owns streams i, i + C, i + 2C, …: the expected version is known.
        let owned = w.streams.div_ceil(w.connections);
        let mut k = picker.pick(&mut c.rng) % owned;
        let mut stream = c.id as usize + k * w.connections;
        while stream >= w.streams {
            k = k.saturating_sub(1);
            stream = c.id as usize + k * w.connections;
        }
        let next = c.versions.entry(stream).or_insert(0);
        let expected = if *next == 0 { -2 } else { *next - 1 };
        *next += w.events_per_request as i64;
        Op::Append {
            stream,
            events: w.events_per_request,
            expected: Some(expected),
            conn: c.id,
            seq: c.seq,
        }
    } else {
        Op::Append {
            stream: picker.pick(&mut c.rng),
            events: w.events_per_request,
            expected: None,
            conn: c.id,
            seq: c.seq,
        }
    };
    c.seq += 1;
    let key = c.codec.encode(&mut c.out, &op, w.payload_bytes);
    c.waiting.insert(key, Waiting { at, op });
}

/// Runs the workload against `addr` with `threads` driver threads.
pub fn run<C: Codec + 'static>(
    w: &Workload,
    addr: &str,
    threads: usize,
    verify: bool,
    new_codec: impl Fn() -> C + Clone + Send + 'static,
) -> anyhow::Result<DriverResult> {
    let picker = std::sync::Arc::new(Picker::new(w.streams, &w.distribution)?);
    let start = Instant::now();
    let threads = threads.clamp(1, w.connections);
    let mut handles = Vec::new();
    let mut first = 0u32;
    for t in 0..threads {
        let n = (w.connections / threads + usize::from(t < w.connections % threads)) as u32;
        let ids = first..first + n;
        first += n;
        let (w, addr, picker, new_codec) = (
            w.clone(),
            addr.to_string(),
            picker.clone(),
            new_codec.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let params = DriverParams {
                addr: &addr,
                conn_ids: ids,
                start,
                verify,
            };
            drive(&w, &picker, &params, new_codec)
        }));
    }
    let mut total = DriverResult::empty();
    for h in handles {
        total.merge(
            h.join()
                .map_err(|_| anyhow!("a driver thread panicked"))??,
        );
    }
    Ok(total)
}

/// Waits up to `timeout` for events on `fds` (ppoll); false when a signal interrupted it.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> anyhow::Result<bool> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid, initialized slice of `fds.len()` pollfd structs that lives
    // across the call; `ts` is a valid timespec and the signal mask pointer may be null.
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == ErrorKind::Interrupted {
            return Ok(false);
        }
        anyhow::bail!("poll: {e}");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_the_first_streams_and_uniform_does_not() {
        let mut rng = Rng::new(1);
        let z = Picker::new(100, "zipf").unwrap();
        let u = Picker::new(100, "uniform").unwrap();
        let (mut z0, mut u0) = (0, 0);
        for _ in 0..100_000 {
            z0 += usize::from(z.pick(&mut rng) == 0);
            u0 += usize::from(u.pick(&mut rng) == 0);
        }
        // Zipf(0.99) over 100: P(first) ≈ 0.19; uniform: 0.01.
        assert!((15_000..24_000).contains(&z0), "{z0}");
        assert!((700..1_300).contains(&u0), "{u0}");
    }
}
