//! READ replies stay within `max_read_bytes`, and so does the memory a READ takes, whatever
//! `max_count` asks for: large events read from the journal, two streams interleaved.
//!
//! Before the reply was cut to the byte budget, a READ fetched `min(max_count,
//! max_read_count)` events (and the other streams' records between them) into memory first:
//! 12,000 events of 100 KB made one READ allocate about a gigabyte.

mod common;

use common::{ev, Server};
use evring::protocol::{expected, Direction};

const EVENT_BYTES: usize = 100 * 1024;
const PER_STREAM: usize = 500;

/// Peak resident memory of `pid` since the last [`reset_peak`], in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// Resets the peak resident memory of `pid` to what it holds now.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

fn data(stream: &str, version: usize) -> Vec<u8> {
    let mut d = format!("{stream}/{version}/").into_bytes();
    d.resize(EVENT_BYTES, b'a' + (version % 26) as u8);
    d
}

#[test]
fn a_read_of_large_events_stays_within_max_read_bytes_in_reply_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A ring of 1 MiB holds about ten of these events: the rest is read from the journal.
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--set",
            "ring_capacity_bytes=1048576",
            "--set",
            "segment_bytes=67108864",
        ],
    );
    let pid = server.child.as_ref().unwrap().id();
    let c = server.client();
    for batch in 0..PER_STREAM / 5 {
        for stream in ["big-a", "big-b"] {
            let events = (0..5)
                .map(|i| ev("Big", &data(stream, batch * 5 + i)))
                .collect();
            c.append(stream, expected::ANY, events).unwrap();
        }
    }
    let max_read_bytes = 1024 * 1024;
    let budget_events = max_read_bytes / EVENT_BYTES;

    reset_peak(pid);
    let before = peak_rss(pid);
    let (forward, end) = c.read("big-a", 0, 10_000, Direction::Forward).unwrap();
    let forward_peak = peak_rss(pid) - before;
    assert!(
        !end,
        "a reply cut by the byte budget is not the end of the stream"
    );
    assert!(
        !forward.is_empty() && forward.len() <= budget_events,
        "{} events of {EVENT_BYTES} bytes in one reply",
        forward.len()
    );
    for (v, e) in forward.iter().enumerate() {
        assert_eq!(e.stream_version, v as u64);
        assert_eq!(e.event.data, data("big-a", v));
    }

    reset_peak(pid);
    let before = peak_rss(pid);
    let last = PER_STREAM as u64 - 1;
    let (backward, end) = c.read("big-a", last, 10_000, Direction::Backward).unwrap();
    let backward_peak = peak_rss(pid) - before;
    assert!(!end);
    assert!(!backward.is_empty() && backward.len() <= budget_events);
    for (k, e) in backward.iter().enumerate() {
        let v = last - k as u64;
        assert_eq!(e.stream_version, v, "the newest events first");
        assert_eq!(e.event.data, data("big-a", v as usize));
    }

    eprintln!("peak RSS growth of one READ: forward {forward_peak} B, backward {backward_peak} B");
    // The reply (about 1 MiB, held twice while encoded) and one 1 MiB frame at a time, plus
    // allocator slack: far below the 50 MB the stream holds
    // (100 MB with the other stream's records between its own).
    let bound = 8 << 20;
    assert!(
        forward_peak < bound && backward_peak < bound,
        "a READ grew peak RSS by {forward_peak} (forward) and {backward_peak} (backward) \
         bytes; bound {bound}"
    );

    // Reading on from each reply's end serves the whole stream, in order, nothing skipped.
    let mut next = 0u64;
    loop {
        let (events, end) = c.read("big-a", next, 10_000, Direction::Forward).unwrap();
        for e in &events {
            assert_eq!(e.stream_version, next);
            assert_eq!(e.event.data, data("big-a", next as usize));
            next += 1;
        }
        if end {
            break;
        }
    }
    assert_eq!(next, PER_STREAM as u64);
}
