//! loom models of the ring's stable views. Run by `loom-tests/run.sh`.
//!
//! Every event's content is derived from its LSN (value = LSN, timestamp = 100 + LSN,
//! payload = LSN repeated), so a torn or overwritten copy is recognised without shared state.
#![cfg(evring_loom)]

use loom::thread;
use loom_tests::ring::{ring, NewEvent, RingConfig, RingError, RingEvent};

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    vec![lsn as u8 + 1; len]
}

fn push(w: &mut loom_tests::ring::RingWriter, lsn: u64, len: usize) {
    let p = payload(lsn, len);
    w.push(&NewEvent {
        lsn,
        timestamp_ns: 100 + lsn,
        value: lsn as f64,
        type_id: lsn,
        stream_id: lsn,
        stream_version: lsn,
        payload: &p,
    })
    .unwrap();
}

/// No torn event, and the view is a contiguous LSN range.
fn check(view: &[RingEvent], len_of: impl Fn(u64) -> usize) {
    for e in view {
        assert_eq!(e.value, e.lsn as f64, "torn value");
        assert_eq!(e.timestamp_ns, 100 + e.lsn, "torn timestamp");
        assert_eq!(e.type_id, e.lsn, "torn type");
        assert_eq!(e.payload, payload(e.lsn, len_of(e.lsn)), "torn payload");
    }
    for pair in view.windows(2) {
        assert_eq!(pair[1].lsn, pair[0].lsn + 1, "view not contiguous");
    }
}

fn small(capacity_events: usize, capacity_bytes: usize) -> RingConfig {
    RingConfig {
        capacity_events,
        capacity_bytes,
        max_retries: 2,
    }
}

#[test]
fn writer_wraps_past_capacity_while_a_reader_takes_suffix_views() {
    loom::model(|| {
        let (mut w, r) = ring(small(2, 32));
        let reader = thread::spawn(move || {
            let v = r.suffix(0, usize::MAX);
            check(&v, |_| 8);
        });
        for lsn in 0..3 {
            push(&mut w, lsn, 8);
        }
        reader.join().unwrap();
    });
}

#[test]
fn two_readers_take_strict_views_with_bounded_retries() {
    loom::model(|| {
        let (mut w, r) = ring(small(2, 32));
        let mut readers = Vec::new();
        for _ in 0..2 {
            let r = r.clone();
            readers.push(thread::spawn(move || match r.strict() {
                Ok(v) => check(&v, |_| 4),
                Err(RingError::Retry { attempts }) => assert_eq!(attempts, 2),
                Err(e) => panic!("{e}"),
            }));
        }
        for lsn in 0..2 {
            push(&mut w, lsn, 4);
        }
        for t in readers {
            t.join().unwrap();
        }
    });
}

#[test]
fn arena_reuse_by_byte_capacity_is_never_seen_torn() {
    loom::model(|| {
        // Room for 8 slots but only 16 arena bytes: each 9..16-byte payload evicts the
        // previous one by bytes, reusing the same arena words.
        let (mut w, r) = ring(small(8, 16));
        let reader = thread::spawn(move || {
            let v = r.suffix(0, usize::MAX);
            check(&v, |lsn| 9 + lsn as usize);
        });
        for lsn in 0..3 {
            push(&mut w, lsn, 9 + lsn as usize);
        }
        reader.join().unwrap();
    });
}

#[test]
fn a_reader_that_retries_until_the_writer_pauses_gets_the_whole_ring() {
    loom::model(|| {
        let (mut w, r) = ring(small(2, 32));
        push(&mut w, 0, 8);
        let reader = thread::spawn(move || {
            let v = r.suffix(0, usize::MAX);
            check(&v, |_| 8);
            assert!(
                !v.is_empty(),
                "event 0 was committed before the reader started"
            );
        });
        push(&mut w, 1, 8);
        reader.join().unwrap();
        // The writer has paused: a strict view now sees both events.
        let r2 = w.reader();
        let v = r2.strict().unwrap();
        assert_eq!(v.iter().map(|e| e.lsn).collect::<Vec<_>>(), [0, 1]);
    });
}

/// A reader running `view` while the writer pushes three events into a two-slot ring.
fn while_the_writer_wraps(view: fn(loom_tests::ring::RingReader)) {
    loom::model(move || {
        let (mut w, r) = ring(small(2, 32));
        let reader = thread::spawn(move || view(r));
        for lsn in 0..3 {
            push(&mut w, lsn, 8);
        }
        reader.join().unwrap();
    });
}

#[test]
fn a_reader_visiting_every_held_event_sees_none_torn_in_lsn_order() {
    while_the_writer_wraps(|r| {
        let mut seen = Vec::new();
        r.visit(
            |_| true,
            |c, payload| {
                assert_eq!(c.value, c.lsn as f64, "torn value");
                assert_eq!(c.timestamp_ns, 100 + c.lsn, "torn timestamp");
                assert_eq!(payload, Some(&payload_of(c.lsn)[..]), "torn payload");
                seen.push(c.lsn);
            },
        );
        assert!(seen.windows(2).all(|p| p[0] < p[1]), "in LSN order");
    });
}

#[test]
fn a_reader_of_column_chunks_sees_no_torn_columns() {
    while_the_writer_wraps(|r| {
        r.column_chunks(true, |ts, values, types, streams| {
            for k in 0..ts.len() {
                let lsn = f64::from_bits(values[k]) as u64;
                assert_eq!(ts[k], 100 + lsn, "torn timestamp");
                assert_eq!((types[k], streams[k]), (lsn, lsn), "torn columns");
            }
        });
    });
}

#[test]
fn a_reader_from_an_lsn_gets_a_contiguous_untorn_run_starting_there() {
    while_the_writer_wraps(|r| {
        let run = r.from_lsn(1, 2);
        check(&run, |_| 8);
        assert!(
            run.first().is_none_or(|e| e.lsn == 1),
            "starts at the LSN asked"
        );
    });
}

fn payload_of(lsn: u64) -> Vec<u8> {
    payload(lsn, 8)
}
