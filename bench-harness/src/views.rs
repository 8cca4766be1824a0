//! `evring-bench views`: reading a partition on a shard that does not own it, through the
//! partition's stable view, against reading it on its owner.
//!
//! evringd is started here (the binary next to this one, default CPU pinning) with two
//! shards, two partitions and a client port per shard (`shards=2`, `partitions=2`,
//! `shard_ports="auto"`): partition p is owned by shard p mod 2, so partition 1 is shard 1's
//! and shard 0 reads it only through its view. Partition 1 is filled with `--events` events
//! (default 200,000; they must fit in the ring, 262,144 events by default) of `--payload`
//! bytes with numeric values, a tenth of them in one stream (the *hot* stream) and the rest
//! spread over 99 other streams of partition 1. Partition 0 stays empty (but in the control
//! of measurement 4).
//!
//! Four measurements, their variants interleaved round by round (`--runs` rounds; every
//! run is printed, and the median over the rounds reported):
//!
//! 1. **aggregate**: AGGREGATE of the whole window (stream "", no filter), and of the hot
//!    stream alone, by `-c` connections each keeping `-p` requests in flight for
//!    `--duration` (after `--warmup`), asked
//!    - on shard 0, *remote*: served on shard 0 through partition 1's view;
//!    - on shard 1, *local*: the owner, through its own view;
//!    - on shard 0 of a second server started with `views=false`, *owner*: a cross-shard
//!      call to shard 1, which aggregates and replies (the design before views).
//!
//!    Every reply's count is checked (N, or the hot stream's share).
//! 2. **catch-up**: `SUBSCRIBE all from 0` on a fresh connection, timed from the request to
//!    the arrival of the N-th pushed event, on the same three (`--catch-ups` times each per
//!    round, interleaved).
//! 3. **read**: per-stream READ, which needs the owner's stream index (the LSN of each
//!    version) and so is always served by the owner: READs of 100 events, and of 1, of the
//!    hot stream forward from a version that moves over the stream with every request, by
//!    `-c` × `-p` as in measurement 1, on the server with views, asked
//!    - on shard 0, *remote*: a cross-shard call to shard 1, the owner, which reads;
//!    - on shard 1, *local*: the owner itself, no hop.
//!
//!    Remote ÷ local bounds what a per-stream index that views could use would gain: a READ
//!    served from a view could at best match the local one, which already reads the owner's
//!    in-memory index and ring with no hop. Beside them, what a view without such an index
//!    costs: the hot stream's AGGREGATE on shard 0, a pass over partition 1's ring window
//!    through its view keeping that stream's events, which a READ from a view would have to
//!    make (up to the version asked) to find the stream's events. Every reply is checked
//!    (the count asked, from the version asked); p50 and p99 are reported with the rates.
//! 4. **append**: the owner's append rate: `--append-connections` × `--append-pipeline`
//!    pipelined single-event APPENDs to streams of partition 1 sent to shard 1's port, for
//!    `--duration`, with no reader, and with `--readers` threads each sending whole-window
//!    AGGREGATEs back to back on shard 0: through the view, and, for reference, on a
//!    `views=false` server, where the owner serves them. A control keeps shard 0 as busy
//!    without touching partition 1: its readers aggregate the hot stream of partition 0,
//!    filled the same way. A fresh server, filled with N events first, for every run, its
//!    rings large enough (2M events, 512 MiB) that nothing is evicted during a run: a whole-
//!    window AGGREGATE of a ring that has evicted is refused, never answered in part.
//!
//! `--partition 0` swaps the shards' roles (partition 0 is shard 0's, read from shard 1):
//! on a machine where the two CPUs are not equally fast or equally loaded, comparing the two
//! tells the CPU's share of a remote ÷ local ratio from the view's.
//!
//! The servers of measurements 1 to 3 (one with views, one without; measurement 3 uses only
//! the first) are started and filled once per round and both stay up during it; an idle shard parks after
//! `spin_before_park` (100 µs).
//!
//! Printed last, against the goals: remote ÷ local for aggregates and catch-up (goal ≥ 0.9)
//! and appends with readers ÷ without (goal ≥ 0.9: a fall of at most 10%), each the median
//! of the per-round ratios, with every round's ratio; and, without a goal, READ's remote ÷
//! local (requests/s, and p50 latency) and the view scan ÷ the remote READ of 100 events.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use evring::protocol::{
    decode_response, encode_request, expected, opcode, partition_of, AppendResult, Direction,
    Event, FrameHeader, Request, Response, SubscribeTarget, FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};

use crate::codecs::{Codec, Decoded, EvringCodec, Op};
use crate::driver::DriverResult;
use crate::network::{start_server, Server};
use crate::report::{self, Row};
use crate::workload::Workload;

#[derive(clap::Args)]
pub struct ViewsArgs {
    #[command(flatten)]
    common: crate::Common,
    /// The partition filled and read (owned by shard `partition` mod 2; the other shard
    /// reads it through its view). 0 swaps the two shards' roles.
    #[arg(long, default_value_t = 1)]
    partition: u32,
    /// Events written to the partition before measuring (they must fit in the ring: 262,144
    /// events by default).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Data bytes per event.
    #[arg(long, default_value = "100", value_parser = report::parse_bytes)]
    payload: u64,
    /// AGGREGATE and READ connections (measurements 1 and 3).
    #[arg(long, short = 'c', default_value_t = 4)]
    connections: usize,
    /// AGGREGATEs or READs in flight per connection (measurements 1 and 3).
    #[arg(long, short = 'p', default_value_t = 1)]
    pipeline: usize,
    /// Catch-ups per variant and round (measurement 2).
    #[arg(long, default_value_t = 3)]
    catch_ups: usize,
    /// APPEND connections to shard 1 (measurement 4).
    #[arg(long, default_value_t = 8)]
    append_connections: usize,
    /// APPENDs in flight per connection (measurement 4).
    #[arg(long, default_value_t = 4)]
    append_pipeline: usize,
    /// Threads sending AGGREGATEs to shard 0 while the owner appends (measurement 4).
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Not counted at the start of each timed run.
    #[arg(long, default_value = "1s", value_parser = report::parse_duration)]
    warmup: Duration,
    /// Measurements to make, comma-separated: aggregate, catch-up, read, append.
    #[arg(long, default_value = "aggregate,catch-up,read,append")]
    parts: String,
    /// Extra `--set key=value` for every evringd started here (repeatable).
    #[arg(long = "server-set")]
    server_set: Vec<String>,
}

/// Partition count of the servers started here; partition `p` is owned by shard `p % 2`.
const PARTITIONS: u32 = 2;
/// Events per APPEND while filling.
const FILL_BATCH: u64 = 100;
/// The ring's default capacity in events (`ring_capacity_events`).
const RING_EVENTS_DEFAULT: u64 = 1 << 18;

/// `n` stream names of `partition`, `prefix` followed by a number.
fn streams_of_partition(prefix: &str, n: usize, partition: u32) -> Vec<String> {
    (0u64..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|s| partition_of(s, PARTITIONS) == partition)
        .take(n)
        .collect()
}

/// What a partition is filled with: every tenth APPEND goes to the hot stream, the others
/// over `cold`.
struct Fill {
    partition: u32,
    events: u64,
    payload: usize,
    hot: String,
    cold: Vec<String>,
}

impl Fill {
    fn new(partition: u32, events: u64, payload: usize) -> Fill {
        let mut names = streams_of_partition("view-", 100, partition);
        let hot = names.remove(0);
        Fill {
            partition,
            events,
            payload,
            hot,
            cold: names,
        }
    }

    fn requests(&self) -> u64 {
        self.events.div_ceil(FILL_BATCH)
    }

    /// The stream and event count of fill request `g`.
    fn request(&self, g: u64) -> (&str, u64) {
        let n = FILL_BATCH.min(self.events - g * FILL_BATCH);
        if g.is_multiple_of(10) {
            (&self.hot, n)
        } else {
            (&self.cold[g as usize % self.cold.len()], n)
        }
    }

    /// Events of the hot stream.
    fn hot_events(&self) -> u64 {
        (0..self.requests())
            .filter(|g| g.is_multiple_of(10))
            .map(|g| self.request(g).1)
            .sum()
    }

    /// Appends every event to `addr` (4 connections × 16 requests in flight).
    fn run(&self, addr: &str) -> anyhow::Result<()> {
        let conns = 4u64;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..conns)
                .map(|c| scope.spawn(move || self.fill_connection(addr, c, conns)))
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow!("a fill thread panicked"))??;
            }
            Ok(())
        })
    }

    fn fill_connection(&self, addr: &str, c: u64, conns: u64) -> anyhow::Result<()> {
        let client = evring::client::Client::connect(addr, "evring-bench-fill", "")
            .map_err(|e| anyhow!("connect to {addr}: {e}"))?;
        let check = |f| match futures_lite::future::block_on(f) {
            Ok(Response::Appended(AppendResult { partition, .. }))
                if partition == self.partition =>
            {
                Ok(())
            }
            Ok(other) => Err(anyhow!("fill: unexpected reply {other:?}")),
            Err(e) => Err(anyhow!("fill: {e}")),
        };
        let mut inflight = std::collections::VecDeque::new();
        for g in (c..self.requests()).step_by(conns as usize) {
            let (stream, n) = self.request(g);
            let events = (0..n)
                .map(|j| Event {
                    id: [0; 16],
                    event_type: "bench".into(),
                    timestamp_ns: 0,
                    value: ((g * FILL_BATCH + j) % 1000) as f64,
                    data: crate::codecs::payload(c as u32, g, j as usize, self.payload),
                    metadata: Vec::new(),
                })
                .collect();
            let req = Request::Append {
                stream: stream.to_string(),
                expected_version: expected::ANY,
                events,
            };
            inflight.push_back(client.request(&req));
            if inflight.len() >= 16 {
                check(inflight.pop_front().expect("non-empty"))?;
            }
        }
        inflight.into_iter().try_for_each(check)
    }
}

/// AGGREGATE of one stream ("" for all) over the whole time axis in one bucket; every reply
/// must count `count` events (at least that many unless `exact`).
#[derive(Clone)]
struct AggregateCodec {
    next_id: u64,
    stream: String,
    count: u64,
    exact: bool,
}

impl AggregateCodec {
    fn new(stream: &str, count: u64, exact: bool) -> AggregateCodec {
        AggregateCodec {
            next_id: 0,
            stream: stream.to_string(),
            count,
            exact,
        }
    }
}

impl Codec for AggregateCodec {
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool {
        EvringCodec::default().handshake(out)
    }

    fn encode(&mut self, out: &mut Vec<u8>, _op: &Op, _payload_bytes: usize) -> u64 {
        self.next_id += 1;
        let req = Request::Aggregate {
            stream: self.stream.clone(),
            type_prefix: String::new(),
            from_ns: 0,
            to_ns: u64::MAX,
            bucket_ns: 0,
        };
        encode_request(out, self.next_id, &req);
        self.next_id
    }

    fn decode(&mut self, buf: &[u8]) -> anyhow::Result<Option<(usize, Decoded)>> {
        let Some((end, h)) = frame(buf)? else {
            return Ok(None);
        };
        let resp = decode_response(h.opcode, &buf[FRAME_HEADER_BYTES..end])
            .map_err(|e| anyhow!("bad evring reply: {e}"))?;
        let error = match resp {
            Response::Hello { .. } if h.request_id == 0 => return Ok(Some((end, Decoded::Ready))),
            Response::Aggregated { buckets } => {
                let n: u64 = buckets.iter().map(|b| b.count).sum();
                let ok = if self.exact {
                    n == self.count
                } else {
                    n >= self.count
                };
                (!ok).then(|| format!("AGGREGATE counted {n} events, expected {}", self.count))
            }
            Response::Error {
                code: c, message, ..
            } => Some(format!("error {c}: {message}")),
            other => bail!("unexpected evring reply {other:?}"),
        };
        let d = Decoded::Done {
            key: h.request_id,
            error,
            first_version: None,
        };
        Ok(Some((end, d)))
    }
}

/// READ of `max` events of one stream forward from a version that moves with every request
/// over the stream's `events` events (so it is not always the same slice of its index);
/// every reply must hold exactly `max` events, the first at the version asked.
#[derive(Clone)]
struct ReadCodec {
    next_id: u64,
    stream: String,
    events: u64,
    max: u32,
}

impl ReadCodec {
    fn new(stream: &str, events: u64, max: u32) -> ReadCodec {
        ReadCodec {
            next_id: 0,
            stream: stream.to_string(),
            events,
            max,
        }
    }

    /// The version request `id` reads from: one of the stream's versions with `max` events
    /// after it, spread over the stream.
    fn start_version(&self, id: u64) -> u64 {
        let starts = self.events.saturating_sub(u64::from(self.max)) + 1;
        id.wrapping_mul(7_919) % starts
    }
}

impl Codec for ReadCodec {
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool {
        EvringCodec::default().handshake(out)
    }

    fn encode(&mut self, out: &mut Vec<u8>, _op: &Op, _payload_bytes: usize) -> u64 {
        self.next_id += 1;
        let req = Request::Read {
            stream: self.stream.clone(),
            from_version: self.start_version(self.next_id),
            max_count: self.max,
            direction: Direction::Forward,
        };
        encode_request(out, self.next_id, &req);
        self.next_id
    }

    fn decode(&mut self, buf: &[u8]) -> anyhow::Result<Option<(usize, Decoded)>> {
        let Some((end, h)) = frame(buf)? else {
            return Ok(None);
        };
        let resp = decode_response(h.opcode, &buf[FRAME_HEADER_BYTES..end])
            .map_err(|e| anyhow!("bad evring reply: {e}"))?;
        let error = match resp {
            Response::Hello { .. } if h.request_id == 0 => return Ok(Some((end, Decoded::Ready))),
            Response::Events { events, .. } => {
                let from = self.start_version(h.request_id);
                let first = events.first().map(|e| e.stream_version);
                (events.len() != self.max as usize || first != Some(from)).then(|| {
                    format!(
                        "READ from version {from} returned {} events starting at {first:?}, \
                         expected {}",
                        events.len(),
                        self.max
                    )
                })
            }
            Response::Error {
                code: c, message, ..
            } => Some(format!("error {c}: {message}")),
            other => bail!("unexpected evring reply {other:?}"),
        };
        let d = Decoded::Done {
            key: h.request_id,
            error,
            first_version: None,
        };
        Ok(Some((end, d)))
    }
}

/// Single-event APPENDs (value 1) to the streams of `names`; replies as [`EvringCodec`]
/// reads them.
struct AppendCodec {
    next_id: u64,
    names: Arc<Vec<String>>,
    replies: EvringCodec,
}

impl Codec for AppendCodec {
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool {
        self.replies.handshake(out)
    }

    fn encode(&mut self, out: &mut Vec<u8>, op: &Op, payload_bytes: usize) -> u64 {
        self.next_id += 1;
        let Op::Append {
            stream, conn, seq, ..
        } = *op
        else {
            unreachable!("the append load has no reads")
        };
        let req = Request::Append {
            stream: self.names[stream % self.names.len()].clone(),
            expected_version: expected::ANY,
            events: vec![Event {
                value: 1.0,
                ..evring::client::event(
                    "bench",
                    crate::codecs::payload(conn, seq, 0, payload_bytes),
                )
            }],
        };
        encode_request(out, self.next_id, &req);
        self.next_id
    }

    fn decode(&mut self, buf: &[u8]) -> anyhow::Result<Option<(usize, Decoded)>> {
        self.replies.decode(buf)
    }
}

/// The end of the first whole frame of `buf`, and its header; `None` if incomplete.
fn frame(buf: &[u8]) -> anyhow::Result<Option<(usize, FrameHeader)>> {
    let Some(head) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let h = FrameHeader::parse(head).map_err(|e| anyhow!("bad evring reply: {e}"))?;
    let end = FRAME_HEADER_BYTES + h.body_len();
    Ok((buf.len() >= end).then_some((end, h)))
}

/// A closed-loop run of `connections` × `pipeline` requests of `codec` against `addr`.
fn drive<C: Codec + Clone + 'static>(
    addr: &str,
    a: &ViewsArgs,
    connections: usize,
    pipeline: usize,
    threads: usize,
    codec: C,
) -> anyhow::Result<DriverResult> {
    let w = Workload {
        name: "views".into(),
        connections: connections.max(1),
        pipeline: pipeline.max(1),
        events_per_request: 1,
        payload_bytes: a.payload as usize,
        streams: 1000,
        duration: a.common.duration,
        warmup: a.warmup,
        ..Default::default()
    };
    crate::driver::run(&w, addr, threads, false, move || codec.clone())
}

impl Clone for AppendCodec {
    fn clone(&self) -> AppendCodec {
        AppendCodec {
            next_id: 0,
            names: self.names.clone(),
            replies: EvringCodec::default(),
        }
    }
}

/// Reads whole frames from a socket into one reused buffer.
struct Frames {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Frames {
    fn new() -> Frames {
        Frames {
            buf: vec![0; 4 << 20],
            start: 0,
            end: 0,
        }
    }

    /// The next frame's opcode and body.
    fn next(&mut self, s: &mut TcpStream) -> anyhow::Result<(u8, &[u8])> {
        loop {
            let have = &self.buf[self.start..self.end];
            if let Some((len, h)) = frame(have)? {
                let body = self.start + FRAME_HEADER_BYTES..self.start + len;
                self.start += len;
                return Ok((h.opcode, &self.buf[body]));
            }
            let need = match have.first_chunk::<FRAME_HEADER_BYTES>() {
                Some(head) => {
                    FrameHeader::parse(head).map_or(0, |h| FRAME_HEADER_BYTES + h.body_len())
                }
                None => 0,
            };
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if need > self.buf.len() {
                self.buf.resize(need, 0);
            }
            let k = s.read(&mut self.buf[self.end..])?;
            if k == 0 {
                bail!("the server closed the connection");
            }
            self.end += k;
        }
    }
}

/// How a catch-up ended.
enum CatchUp {
    /// Every event arrived, this long after the SUBSCRIBE was sent.
    Done(Duration),
    /// The server ended the subscription with error `code` after `after` events.
    Ended {
        after: u64,
        code: u16,
        message: String,
    },
}

/// `SUBSCRIBE all from 0` on a fresh connection to `addr`: the time from the request to the
/// arrival of the `n`-th pushed event. Only the frames' headers and event counts are read.
fn catch_up(addr: &str, n: u64) -> anyhow::Result<CatchUp> {
    let mut s = TcpStream::connect(addr).map_err(|e| anyhow!("connect to {addr}: {e}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut frames = Frames::new();
    let mut out = Vec::new();
    let hello = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "evring-bench-catch-up".into(),
        auth_token: String::new(),
    };
    encode_request(&mut out, 0, &hello);
    s.write_all(&out)?;
    match frames.next(&mut s)? {
        (opcode::HELLO_OK, _) => {}
        (op, body) => bail!("HELLO: {:?}", decode_response(op, body)),
    }
    out.clear();
    let sub = Request::Subscribe {
        target: SubscribeTarget::All,
        name: String::new(),
        from: 0,
        type_prefix: String::new(),
        positions: Vec::new(),
    };
    encode_request(&mut out, 1, &sub);
    let t0 = Instant::now();
    s.write_all(&out)?;
    let mut got = 0u64;
    while got < n {
        match frames.next(&mut s)? {
            (opcode::SUBSCRIBED, _) => {}
            (opcode::PUSHED_NAMED | opcode::PUSHED, body) => {
                let count = body
                    .first_chunk::<4>()
                    .ok_or_else(|| anyhow!("a push without its event count"))?;
                got += u64::from(u32::from_le_bytes(*count));
            }
            (opcode::ERROR, body) => match decode_response(opcode::ERROR, body) {
                Ok(Response::Error { code, message, .. }) => {
                    return Ok(CatchUp::Ended {
                        after: got,
                        code,
                        message,
                    })
                }
                other => bail!("catch-up after {got} of {n} events: {other:?}"),
            },
            (op, body) => bail!(
                "catch-up after {got} of {n} events: {:?}",
                decode_response(op, body)
            ),
        }
    }
    let elapsed = t0.elapsed();
    if got != n {
        bail!("catch-up delivered {got} events, expected {n}");
    }
    Ok(CatchUp::Done(elapsed))
}

/// evringd with two shards, two partitions and a port per shard; `views` as given.
struct Shards {
    /// Stopped when dropped.
    _server: Server,
    /// Each shard's own client port.
    shard: [String; 2],
}

fn start(dir: &Path, a: &ViewsArgs, views: bool, extra: &[&str]) -> anyhow::Result<Shards> {
    let mut sets: Vec<String> = [
        "shards=2",
        "partitions=2",
        "shard_ports=\"auto\"",
        if views { "views=true" } else { "views=false" },
    ]
    .map(String::from)
    .to_vec();
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets.extend(a.server_set.iter().cloned());
    let server = start_server(dir, &sets)?;
    let shard = [server.address("shard0")?, server.address("shard1")?];
    Ok(Shards {
        _server: server,
        shard,
    })
}

/// The append part's ring: room for the fill and about 1.5M appended events of 100 bytes.
const APPEND_RING: &[&str] = &[
    "ring_capacity_events=2097152",
    "ring_capacity_bytes=536870912",
];

/// Starts a server (with `extra` settings) and fills the partitions of `fills`, each through
/// its owner's port.
fn start_filled(
    dir: &Path,
    a: &ViewsArgs,
    views: bool,
    fills: &[&Fill],
    extra: &[&str],
) -> anyhow::Result<Shards> {
    let s = start(dir, a, views, extra)?;
    for fill in fills {
        let t = Instant::now();
        fill.run(&s.shard[(fill.partition % 2) as usize])?;
        eprintln!(
            "  {} events written to partition {} (views={views}) in {:.2} s",
            fill.events,
            fill.partition,
            t.elapsed().as_secs_f64()
        );
    }
    // Let the fill's last frames and connections settle before timing anything.
    std::thread::sleep(Duration::from_millis(300));
    Ok(s)
}

/// Figures of one variant, one per round, in order.
struct Series {
    name: String,
    unit: &'static str,
    values: Vec<f64>,
}

/// Every variant's figures, in the order first seen.
#[derive(Default)]
struct Results {
    series: Vec<Series>,
}

impl Results {
    fn add(&mut self, name: &str, unit: &'static str, value: f64) {
        match self.series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.values.push(value),
            None => self.series.push(Series {
                name: name.to_string(),
                unit,
                values: vec![value],
            }),
        }
    }

    fn get(&self, name: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.name == name)
    }

    fn medians(&self) -> Vec<Row> {
        self.series
            .iter()
            .map(|s| {
                let failed = s.values.iter().filter(|v| v.is_nan()).count();
                Row::new(&s.name)
                    .cell("median", fmt(median(&s.values), 0))
                    .cell("unit", s.unit)
                    .cell("runs", join(&s.values, 0))
                    .cell("failed runs", failed.to_string())
            })
            .collect()
    }

    /// `num` ÷ `den`: the median of the per-round ratios, every round's, the ratio of the
    /// medians, and the goal (none for 0). Rounds where either failed are left out.
    fn ratio(&self, what: &str, num: &str, den: &str, goal: f64) -> Option<Row> {
        let (n, d) = (self.get(num)?, self.get(den)?);
        let per_round: Vec<f64> = n.values.iter().zip(&d.values).map(|(x, y)| x / y).collect();
        let m = median(&per_round);
        let row = Row::new(what)
            .cell("ratio (median of rounds)", fmt(m, 3))
            .cell("rounds", join(&per_round, 3))
            .cell(
                "ratio of medians",
                fmt(median(&n.values) / median(&d.values), 3),
            );
        Some(if goal > 0.0 {
            row.cell("goal", format!(">= {goal}"))
                .cell("met", if m >= goal { "yes" } else { "NO" })
        } else {
            row
        })
    }
}

/// The median of the finite values (failed runs are NaN); NaN if there is none.
fn median(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        f64::NAN
    } else {
        crate::compare::median(&finite)
    }
}

/// `v` with `decimals` decimals, or "failed" for NaN.
fn fmt(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "failed".into()
    } else {
        format!("{v:.decimals$}")
    }
}

fn join(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| fmt(*v, decimals))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `items` rotated left by `r`: each round starts with another variant.
fn rotated<T: Clone>(items: &[T], r: usize) -> Vec<T> {
    let mut v = items.to_vec();
    let len = v.len();
    v.rotate_left(r % len.max(1));
    v
}

/// One variant of measurement 4.
#[derive(Clone)]
struct AppendVariant {
    name: String,
    /// Reader threads on the other shard.
    readers: usize,
    views: bool,
    /// The readers aggregate the hot stream of the other shard's own partition (filled too)
    /// instead of the whole window.
    control: bool,
}

pub fn main(a: ViewsArgs) -> anyhow::Result<()> {
    let parts: Vec<&str> = a.parts.split(',').map(str::trim).collect();
    for p in &parts {
        if !["aggregate", "catch-up", "read", "append"].contains(p) {
            bail!("--parts: unknown measurement {p:?} (aggregate, catch-up, read, append)");
        }
    }
    if a.partition >= PARTITIONS {
        bail!("--partition must be 0 or 1");
    }
    let sets_ring = a.server_set.iter().any(|s| s.starts_with("ring_capacity"));
    if a.events >= RING_EVENTS_DEFAULT && !sets_ring {
        bail!(
            "--events {} does not fit in the ring ({RING_EVENTS_DEFAULT} events by default)",
            a.events
        );
    }
    if a.events == 0 {
        bail!("--events must be at least 1");
    }
    // The partition read is `owner`'s; `other` reads it through its view.
    let owner = (a.partition % 2) as usize;
    let other = 1 - owner;
    let fill = Fill::new(a.partition, a.events, a.payload as usize);
    let hot_events = fill.hot_events();
    let rounds = a.common.runs.max(1);
    let dir = &a.common.dir;
    let mut results = Results::default();
    let mut agg_rows = Vec::new();
    let mut catch_rows = Vec::new();
    let mut read_rows = Vec::new();
    let mut append_rows = Vec::new();

    // (name, server with views?, shard asked)
    let read_variants = [
        (format!("remote (view on shard {other})"), true, other),
        (format!("local (owner's view, shard {owner})"), true, owner),
        (
            format!("owner (views=false, asked on shard {other})"),
            false,
            other,
        ),
    ];
    // Measurement 3: (name, shard asked, events per READ; `None`: the view scan).
    let read_sizes: Vec<u32> = [100u32, 1]
        .into_iter()
        // At most the hot stream's events (bounded by `n`, so the cast keeps every bit).
        .map(|n| u64::from(n).min(hot_events).max(1) as u32)
        .collect();
    let read_name = |n: u32, remote: bool| {
        let events = if n == 1 { "event" } else { "events" };
        if remote {
            format!("read {n} {events}, remote (shard {other} calls the owner, shard {owner})")
        } else {
            format!("read {n} {events}, local (on the owner, shard {owner})")
        }
    };
    let scan_name = format!("scan of the stream through the view, no index (shard {other})");
    let mut read_part: Vec<(String, usize, Option<u32>)> = Vec::new();
    for &n in &read_sizes {
        read_part.push((read_name(n, true), other, Some(n)));
        read_part.push((read_name(n, false), owner, Some(n)));
    }
    read_part.push((scan_name.clone(), other, None));
    let owner_server = parts.contains(&"aggregate") || parts.contains(&"catch-up");
    let reads = owner_server || parts.contains(&"read");
    for round in 1..=rounds {
        if !reads {
            break;
        }
        eprintln!("round {round}: {}", a.parts);
        let with_views = start_filled(&dir.join("views-on"), &a, true, &[&fill], &[])?;
        let without = if owner_server {
            Some(start_filled(
                &dir.join("views-off"),
                &a,
                false,
                &[&fill],
                &[],
            )?)
        } else {
            None
        };
        let addr = |views: bool, shard: usize| {
            let s = if views {
                &with_views
            } else {
                without
                    .as_ref()
                    .expect("started for aggregate and catch-up")
            };
            s.shard[shard].clone()
        };
        let order = rotated(&read_variants, round - 1);
        if parts.contains(&"aggregate") {
            let queries = [
                ("whole window", "", a.events),
                ("hot stream", fill.hot.as_str(), hot_events),
            ];
            for (what, stream, count) in queries {
                for (variant, views, shard) in &order {
                    let codec = AggregateCodec::new(stream, count, true);
                    let r = drive(
                        &addr(*views, *shard),
                        &a,
                        a.connections,
                        a.pipeline,
                        1,
                        codec,
                    )?;
                    let rate = r.appends as f64 / a.common.duration.as_secs_f64();
                    let name = format!("aggregate {what}, {variant}");
                    let row = Row::new(format!("{name}, round {round}"))
                        .cell("requests/s", format!("{rate:.0}"))
                        .cell(
                            "events scanned/s",
                            format!("{:.3e}", rate * a.events as f64),
                        )
                        .cell("errors", r.errors.to_string())
                        .latency(&r.latency);
                    eprintln!("  {name}: {rate:.0} requests/s, {} errors", r.errors);
                    if r.errors > 0 {
                        bail!("{name}: {} AGGREGATEs failed", r.errors);
                    }
                    agg_rows.push(row);
                    results.add(&name, "requests/s", rate);
                }
            }
        }
        if parts.contains(&"catch-up") {
            for _ in 0..a.catch_ups.max(1) {
                for (variant, views, shard) in &order {
                    let name = format!("catch-up, {variant}");
                    let row = Row::new(format!("{name}, round {round}"));
                    let rate = match catch_up(&addr(*views, *shard), a.events)? {
                        CatchUp::Done(t) => {
                            let rate = a.events as f64 / t.as_secs_f64();
                            eprintln!("  {name}: {rate:.0} events/s");
                            catch_rows.push(
                                row.cell("events/s", format!("{rate:.0}"))
                                    .cell("ms", format!("{:.1}", t.as_secs_f64() * 1000.0))
                                    .cell("ended", "-"),
                            );
                            rate
                        }
                        CatchUp::Ended {
                            after,
                            code,
                            message,
                        } => {
                            eprintln!("  {name}: error {code} after {after} events: {message}");
                            catch_rows.push(row.cell("events/s", "-").cell("ms", "-").cell(
                                "ended",
                                format!("error {code} after {after} of {} events", a.events),
                            ));
                            f64::NAN
                        }
                    };
                    results.add(&name, "events/s", rate);
                }
            }
        }
        if parts.contains(&"read") {
            for (name, shard, size) in rotated(&read_part, round - 1) {
                let r = match size {
                    Some(n) => {
                        let codec = ReadCodec::new(&fill.hot, hot_events, n);
                        drive(&addr(true, shard), &a, a.connections, a.pipeline, 1, codec)?
                    }
                    // About what a READ served from a view without a per-stream index costs
                    // when the version asked is near the stream's end: a pass over the ring
                    // window, confirming each of the stream's events by its name.
                    None => {
                        let codec = AggregateCodec::new(&fill.hot, hot_events, true);
                        drive(&addr(true, shard), &a, a.connections, a.pipeline, 1, codec)?
                    }
                };
                let rate = r.appends as f64 / a.common.duration.as_secs_f64();
                let events = match size {
                    Some(n) => rate * f64::from(n),
                    None => rate * a.events as f64,
                };
                eprintln!("  {name}: {rate:.0} requests/s, {} errors", r.errors);
                if r.errors > 0 {
                    bail!("{name}: {} requests failed", r.errors);
                }
                read_rows.push(
                    Row::new(format!("{name}, round {round}"))
                        .cell("requests/s", format!("{rate:.0}"))
                        .cell("events/s (scan: visited)", format!("{events:.3e}"))
                        .cell("errors", r.errors.to_string())
                        .latency(&r.latency),
                );
                results.add(&name, "requests/s", rate);
                for (q, what) in [(0.5, "p50"), (0.99, "p99")] {
                    let us = r.latency.value_at_quantile(q) as f64;
                    results.add(&format!("{name}, {what}"), "µs", us);
                }
            }
        }
    }

    let k = a.readers;
    let no_reader = "appends, no reader".to_string();
    let with_views = format!("appends, {k} readers (views)");
    let with_owner = format!("appends, {k} readers (views=false: the owner aggregates)");
    let with_control = format!("appends, {k} readers of shard {other}'s own partition (control)");
    if parts.contains(&"append") {
        let mut variants = vec![AppendVariant {
            name: no_reader.clone(),
            readers: 0,
            views: true,
            control: false,
        }];
        if k > 0 {
            for (name, views, control) in [
                (&with_views, true, false),
                (&with_owner, false, false),
                (&with_control, true, true),
            ] {
                variants.push(AppendVariant {
                    name: name.clone(),
                    readers: k,
                    views,
                    control,
                });
            }
        }
        // The control's readers keep shard `other` as busy with a partition of its own.
        let own = Fill::new(other as u32, a.events, a.payload as usize);
        let own_hot = own.hot_events();
        let appends_to = Arc::new(streams_of_partition("append-", 1000, a.partition));
        for round in 1..=rounds {
            eprintln!("round {round}: appends");
            for v in rotated(&variants, round - 1) {
                let fills: Vec<&Fill> = if v.control {
                    vec![&fill, &own]
                } else {
                    vec![&fill]
                };
                // A ring that holds the fill and every append of the run: the readers'
                // whole-window AGGREGATEs would otherwise be refused once it evicts (a
                // window the ring no longer holds whole is never answered in part).
                let s = start_filled(&dir.join("views-append"), &a, v.views, &fills, APPEND_RING)?;
                let appends = AppendCodec {
                    next_id: 0,
                    names: appends_to.clone(),
                    replies: EvringCodec::default(),
                };
                let readers = v.readers;
                let (appended, read) = std::thread::scope(|scope| {
                    let reader = (readers > 0).then(|| {
                        let (addr, a) = (&s.shard[other], &a);
                        let codec = if v.control {
                            AggregateCodec::new(&own.hot, own_hot, true)
                        } else {
                            AggregateCodec::new("", a.events, false)
                        };
                        scope.spawn(move || drive(addr, a, readers, 1, readers, codec))
                    });
                    let appended = drive(
                        &s.shard[owner],
                        &a,
                        a.append_connections,
                        a.append_pipeline,
                        1,
                        appends,
                    );
                    let read = reader.map(|h| {
                        h.join()
                            .map_err(|_| anyhow!("the reader threads panicked"))?
                    });
                    (appended, read.transpose())
                });
                drop(s);
                let (appended, read) = (appended?, read?);
                let secs = a.common.duration.as_secs_f64();
                let rate = appended.appends as f64 / secs;
                let reads = read.as_ref().map_or(0.0, |r| r.appends as f64 / secs);
                let errors = appended.errors + read.as_ref().map_or(0, |r| r.errors);
                let name = &v.name;
                eprintln!(
                    "  {name}: {rate:.0} appends/s, {reads:.0} aggregates/s, {errors} errors"
                );
                if errors > 0 {
                    bail!("{name}: {errors} requests failed");
                }
                append_rows.push(
                    Row::new(format!("{name}, round {round}"))
                        .cell("appends/s", format!("{rate:.0}"))
                        .cell("aggregates/s", format!("{reads:.0}"))
                        .latency(&appended.latency),
                );
                results.add(name, "appends/s", rate);
                if readers > 0 {
                    results.add(
                        &format!("aggregates/s during {name}"),
                        "aggregates/s",
                        reads,
                    );
                }
            }
        }
    }

    for rows in [&agg_rows, &catch_rows, &read_rows, &append_rows] {
        if !rows.is_empty() {
            report::print(rows, a.common.json);
            if !a.common.json {
                println!();
            }
        }
    }
    report::print(&results.medians(), a.common.json);
    if !a.common.json {
        println!();
    }
    let [remote, local, owner_path] = read_variants.map(|v| v.0);
    let mut ratios = Vec::new();
    for what in ["aggregate whole window", "aggregate hot stream", "catch-up"] {
        ratios.extend(results.ratio(
            &format!("{what}: remote / local"),
            &format!("{what}, {remote}"),
            &format!("{what}, {local}"),
            0.9,
        ));
        ratios.extend(results.ratio(
            &format!("{what}: remote / owner (views=false)"),
            &format!("{what}, {remote}"),
            &format!("{what}, {owner_path}"),
            0.0,
        ));
    }
    for &n in &read_sizes {
        let (remote, local) = (read_name(n, true), read_name(n, false));
        let what = format!("read {n}");
        ratios.extend(results.ratio(
            &format!("{what}: remote / local (requests/s)"),
            &remote,
            &local,
            0.0,
        ));
        ratios.extend(results.ratio(
            &format!("{what}: remote / local (p50 latency)"),
            &format!("{remote}, p50"),
            &format!("{local}, p50"),
            0.0,
        ));
    }
    if let Some(&n) = read_sizes.first() {
        ratios.extend(results.ratio(
            &format!("scan through the view / read {n}, remote (requests/s)"),
            &scan_name,
            &read_name(n, true),
            0.0,
        ));
    }
    ratios.extend(results.ratio(
        &format!("appends with {k} readers (views) / without"),
        &with_views,
        &no_reader,
        0.9,
    ));
    ratios.extend(results.ratio(
        &format!("appends with {k} readers (views=false) / without"),
        &with_owner,
        &no_reader,
        0.0,
    ));
    ratios.extend(results.ratio(
        &format!("appends with {k} readers of shard {other}'s own partition / without"),
        &with_control,
        &no_reader,
        0.0,
    ));
    report::print(&ratios, a.common.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fill_puts_a_tenth_of_the_events_in_the_hot_stream_of_partition_1() {
        let f = Fill::new(1, 200_000, 100);
        assert_eq!(f.requests(), 2_000);
        assert_eq!(f.hot_events(), 20_000);
        assert_eq!(partition_of(&f.hot, 2), 1);
        assert!(f
            .cold
            .iter()
            .all(|s| partition_of(s, 2) == 1 && *s != f.hot));
        let total: u64 = (0..f.requests()).map(|g| f.request(g).1).sum();
        assert_eq!(total, 200_000);
        // A count that is not a multiple of the batch.
        let f = Fill::new(0, 1_234, 100);
        let total: u64 = (0..f.requests()).map(|g| f.request(g).1).sum();
        assert_eq!(total, 1_234);
    }

    #[test]
    fn reads_start_at_versions_with_the_count_asked_after_them() {
        let r = ReadCodec::new("s", 20_000, 100);
        let froms: Vec<u64> = (1..=1_000).map(|id| r.start_version(id)).collect();
        assert!(froms.iter().all(|&v| v + 100 <= 20_000));
        // Spread over the stream, not one slice of it.
        assert!(froms.iter().any(|&v| v < 1_000) && froms.iter().any(|&v| v > 19_000));
        // A stream of exactly the count asked: only version 0.
        let r = ReadCodec::new("s", 100, 100);
        assert!((1..100).all(|id| r.start_version(id) == 0));
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut bytes = Vec::new();
            for i in 0..3u64 {
                evring::protocol::encode_response(&mut bytes, i, 0, &Response::Pong);
            }
            for b in bytes.chunks(5) {
                s.write_all(b).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let mut s = TcpStream::connect(addr).unwrap();
        let mut f = Frames::new();
        for _ in 0..3 {
            let (op, body) = f.next(&mut s).unwrap();
            assert_eq!(op, opcode::PONG);
            assert!(body.is_empty());
        }
        writer.join().unwrap();
    }
}
