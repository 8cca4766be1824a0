//! Criterion benchmarks of the partition ring and the aggregations:
//!
//! - `push`: one writer, no reader, small events (16-byte payload) into a ring that wraps.
//! - `view_with_writer`: a reader copying the newest 1,000 events (a stable suffix view) while
//!   another thread pushes without pause.
//! - `aggregate`: count/sum/min/max over a 1M-event window, on the owner's columns, through a
//!   stable view on any thread (`RingReader::column_chunks`, what the server runs), and on events
//!   copied by a view.
//!
//! Run: `cargo bench -p bench-harness --bench ring`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use evring::aggregate::{aggregate_columns, aggregate_events, Query};
use evring::ring::{ring, NewEvent, RingConfig};

fn event(lsn: u64, payload: &[u8]) -> NewEvent<'_> {
    NewEvent {
        lsn,
        timestamp_ns: lsn * 1000,
        value: (lsn % 100) as f64,
        type_id: lsn % 8,
        stream_id: lsn % 1024,
        stream_version: lsn / 1024,
        payload,
    }
}

fn push(c: &mut Criterion) {
    let mut g = c.benchmark_group("push");
    g.throughput(Throughput::Elements(1));
    let payload = [7u8; 16];
    let (mut w, _r) = ring(RingConfig {
        capacity_events: 1 << 16,
        capacity_bytes: 4 << 20,
        max_retries: 8,
    });
    let mut lsn = 0u64;
    g.bench_function("16B payload, no reader", |b| {
        b.iter(|| {
            w.push(&event(lsn, black_box(&payload))).unwrap();
            lsn += 1;
        })
    });
    // A server's ring payload (stream and type names, an XADD's fields: about 150 bytes)
    // into an arena far larger than the caches, as the server's is.
    let payload = [7u8; 150];
    let (mut w, _r) = ring(RingConfig {
        capacity_events: 1 << 20,
        capacity_bytes: 256 << 20,
        max_retries: 8,
    });
    g.bench_function("150B payload, 256 MiB arena, no reader", |b| {
        b.iter(|| {
            w.push(&event(lsn, black_box(&payload))).unwrap();
            lsn += 1;
        })
    });
    g.finish();
}

fn view_with_writer(c: &mut Criterion) {
    let mut g = c.benchmark_group("view_with_writer");
    g.throughput(Throughput::Elements(1000));
    let (mut w, r) = ring(RingConfig {
        capacity_events: 1 << 16,
        capacity_bytes: 4 << 20,
        max_retries: 64,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let payload = [3u8; 16];
            let mut lsn = 0u64;
            while !stop.load(Ordering::Relaxed) {
                w.push(&event(lsn, &payload)).unwrap();
                lsn += 1;
            }
        })
    };
    while r.head() < 10_000 {
        std::thread::yield_now();
    }
    g.bench_function("newest 1000 events", |b| {
        b.iter(|| {
            let head = r.head();
            black_box(r.suffix(head.saturating_sub(1000), 1000))
        })
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    g.finish();
}

fn aggregate(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate");
    const N: u64 = 1 << 20;
    g.throughput(Throughput::Elements(N));
    let (mut w, r) = ring(RingConfig {
        capacity_events: N as usize,
        capacity_bytes: 8 << 20,
        max_retries: 8,
    });
    for lsn in 0..N {
        w.push(&event(lsn, &[])).unwrap();
    }
    let whole = Query {
        from_ns: 0,
        to_ns: u64::MAX,
        bucket_ns: 0,
        stream_id: None,
        type_ids: None,
    };
    g.bench_function("sum over 1M events, owner columns", |b| {
        b.iter(|| black_box(aggregate_columns(&w, whole.clone()).unwrap()))
    });
    let filtered = Query {
        stream_id: Some(5),
        to_ns: N * 1000,
        bucket_ns: 10_000_000,
        ..whole.clone()
    };
    g.bench_function("1M events, one stream, 10 ms buckets", |b| {
        b.iter(|| black_box(aggregate_columns(&w, filtered.clone()).unwrap()))
    });
    g.bench_function("sum over 1M events, a stable view", |b| {
        b.iter(|| {
            let mut agg = evring::aggregate::Aggregator::new(whole.clone()).unwrap();
            r.column_chunks(false, |ts, v, t, s| agg.add_run(ts, v, t, s));
            black_box(agg.finish())
        })
    });
    let copied = r.strict().unwrap();
    g.bench_function("sum over 1M events copied by a view", |b| {
        b.iter(|| black_box(aggregate_events(&copied, whole.clone()).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, push, view_with_writer, aggregate);
criterion_main!(benches);
