//! Crash harness: the real evringd under concurrent appends, SIGKILLed at seeded random
//! moments, restarted, and checked after every cycle:
//!
//! - every acknowledged event is readable with identical content at its acknowledged version;
//! - every stream's versions run from 0 without a gap;
//! - an append that was never acknowledged (the kill interrupted it) is all there or not at
//!   all: events of one batch carry `writer/seq/index/count`, and each batch found holds all
//!   `count` events, contiguous and in order.
//!
//! `CRASH_HARNESS_CYCLES` (default 6) and `CRASH_HARNESS_SEED` (default 1) set the run (not
//! `EVRING_*`: evringd reads those as configuration and refuses unknown keys); a failure
//! prints the seed and cycle, and the same seed replays the same kill schedule (the moment a
//! kill lands relative to in-flight appends still depends on timing).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use evring::client::BlockingClient;
use evring::protocol::{expected, Direction, Event};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (stream, version) → data of every acknowledged event.
type Acked = Arc<Mutex<HashMap<(String, u64), Vec<u8>>>>;

fn batch(writer: usize, seq: u64, count: usize, pad: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let mut data = format!("{writer}/{seq}/{i}/{count}/").into_bytes();
            data.resize(data.len() + pad, b'a' + (seq % 26) as u8);
            evring::client::event("Crash", data)
        })
        .collect()
}

/// Parses `writer/seq/index/count/…`.
fn parse(data: &[u8]) -> (usize, u64, usize, usize) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('/');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .expect("field")
    };
    (next() as usize, next(), next() as usize, next() as usize)
}

fn verify(c: &BlockingClient, streams: &[String], acked: &Acked, seed: u64, cycle: u64) -> u64 {
    let acked = acked.lock().unwrap();
    let mut checked = 0;
    for stream in streams {
        let mut events = Vec::new();
        loop {
            match c.read(stream, events.len() as u64, 1000, Direction::Forward) {
                Ok((batch, end)) => {
                    events.extend(batch);
                    if end {
                        break;
                    }
                }
                Err(e) if e.code() == Some(evring::protocol::code::STREAM_NOT_FOUND) => break,
                Err(e) => panic!("seed {seed} cycle {cycle}: read {stream}: {e}"),
            }
        }
        for (v, e) in events.iter().enumerate() {
            assert_eq!(
                e.stream_version, v as u64,
                "seed {seed} cycle {cycle}: {stream} has a gap at version {v}"
            );
        }
        // Every batch present is whole, contiguous and in order.
        let mut at = 0;
        while at < events.len() {
            let (w, s, i, n) = parse(&events[at].event.data);
            assert_eq!(
                i, 0,
                "seed {seed} cycle {cycle}: {stream} v{at} starts mid-batch"
            );
            assert!(
                at + n <= events.len(),
                "seed {seed} cycle {cycle}: {stream} batch {w}/{s} torn at the end"
            );
            for k in 0..n {
                let (w2, s2, i2, n2) = parse(&events[at + k].event.data);
                assert_eq!(
                    (w2, s2, i2, n2),
                    (w, s, k, n),
                    "seed {seed} cycle {cycle}: {stream} batch {w}/{s} torn"
                );
            }
            at += n;
        }
        for ((st, version), data) in acked.iter().filter(|((st, _), _)| st == stream) {
            let e = events.get(*version as usize).unwrap_or_else(|| {
                panic!("seed {seed} cycle {cycle}: acknowledged {st} v{version} lost")
            });
            assert_eq!(
                &e.event.data, data,
                "seed {seed} cycle {cycle}: {st} v{version} differs"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn sigkill_at_random_moments_never_loses_or_alters_acknowledged_events() {
    let cycles = env_u64("CRASH_HARNESS_CYCLES", 6);
    let seed = env_u64("CRASH_HARNESS_SEED", 1);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_fixed(&dir.path().join("data"), &[]);
    let writers = 6;
    let streams: Vec<String> = (0..4).map(|s| format!("crash-{s}")).collect();
    let acked: Acked = Arc::default();
    let mut total_acked = 0u64;
    let mut per_cycle = BTreeMap::new();
    for cycle in 0..cycles {
        let mut threads = Vec::new();
        for w in 0..writers {
            let (addr, acked, streams) = (server.addr.clone(), acked.clone(), streams.clone());
            let mut wr = Rng(rng.next() | 1);
            threads.push(std::thread::spawn(move || {
                let Ok(c) = BlockingClient::connect(&addr, "crash", "") else {
                    return 0u64;
                };
                let mut n = 0;
                for seq in (cycle << 32).. {
                    let stream = &streams[(wr.next() % streams.len() as u64) as usize];
                    let count = 1 + (wr.next() % 3) as usize;
                    let pad = (wr.next() % 300) as usize;
                    let events = batch(w, seq, count, pad);
                    let datas: Vec<Vec<u8>> = events.iter().map(|e| e.data.clone()).collect();
                    match c.append(stream, expected::ANY, events) {
                        Ok(a) => {
                            let mut acked = acked.lock().unwrap();
                            for (k, d) in datas.into_iter().enumerate() {
                                acked.insert((stream.clone(), a.first_version + k as u64), d);
                            }
                            n += 1;
                        }
                        // The server is gone: the connection fails, no error reply.
                        Err(e) => {
                            assert_eq!(e.code(), None, "{e}");
                            break;
                        }
                    }
                }
                n
            }));
        }
        std::thread::sleep(Duration::from_millis(50 + rng.next() % 400));
        server.kill_and_restart();
        let appends: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let checked = verify(&server.client(), &streams, &acked, seed, cycle);
        per_cycle.insert(cycle, appends);
        total_acked = checked;
    }
    eprintln!(
        "crash harness: seed {seed}, {cycles} SIGKILL cycles, {total_acked} acknowledged events \
         verified, acknowledged appends per cycle {per_cycle:?}"
    );
    assert!(
        total_acked > 100,
        "too little load to mean anything: {total_acked}"
    );
}
