//! Criterion benchmarks of grouped aggregations (AGGREGATE_GROUPS) over 1M events held in
//! RAM, read through `PartitionView::aggregate(&Plan)` — the call the server makes for each
//! partition — on `DetachedRing`s filled exactly as a partition fills its own ring.
//!
//! The events (the same as `evring-bench groups` appends): 10,000 batches of 100 events, batch
//! `b` to stream `stream-{b % 1000}` (1,000 streams), each event of one of 8 types, its value
//! column set, and JSON data such as `{"label":"cpu_usage","host":"web-17","amount":12.5}`
//! (16 labels, 100 hosts, `amount` equal to the value column, drawn from a hash of the event's
//! index). About 105 payload bytes per event in the ring.
//!
//! Group `groups_1m` (one partition holding all 1M events):
//! - `a value sum`: sum of the value column, one group (the column scan of `Aggregator`);
//! - `b data.amount sum`: sum of the JSON field `data.amount`, one group (payload visit and a
//!   JSON field read per event); b ÷ a is the cost of a JSON field against the value column;
//! - `c type top-10 by sum`: group-by type, top-10 by sum (columns only);
//! - `d stream top-10 by count`: group-by stream, top-10 by count (payload visit, names
//!   compared);
//! - `e label top-5 by avg`: group-by `data.label`, top-5 by average of the value;
//! - `e label top-5 by avg, host=web-17`: the same with where `data.host == "web-17"`.
//!
//! Group `groups_4p` (the same 1M events over 4 rings, stream to ring by
//! `protocol::partition_of(stream, 4)` as the server places them), for the queries a, b, c, d
//! and e (without where):
//! - `<query>/all 4`: each ring's `aggregate`, `groups::merge` of the four, `groups::finish`
//!   (what the server does for a request over every partition);
//! - `<query>/merge and finish`: the merge and the ranking alone, on the four rings' groups;
//! - `<query>/partition p`: ring p's `aggregate` alone, p = 0..3. The sum of the four is what
//!   the parts cost; `all 4` ÷ that sum is the overhead of merging and ranking.
//!
//! Run (a few minutes): `cargo bench -p bench-harness --bench groups`. Criterion keeps each
//! bench's estimates in `target/criterion/<group>/<bench>/new/estimates.json`; the medians and
//! the ratios are printed by `scripts/criterion-groups.sh` (run after the bench).

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use evring::aggregate::groups::{finish, merge, Plan};
use evring::journal::RecordRef;
use evring::protocol::{partition_of, GroupOrder, GroupedAggregate, Groups};
use evring::ring::RingConfig;
use evring::stream::{DetachedRing, PartitionView};

const EVENTS: u64 = 1_000_000;
const BATCH: u64 = 100;
const STREAMS: u64 = 1_000;
const HOSTS: u64 = 100;
const PARTS: u32 = 4;
const TYPES: [&str; 8] = [
    "metric.cpu",
    "metric.mem",
    "metric.disk",
    "metric.net",
    "order.placed",
    "order.paid",
    "user.login",
    "user.logout",
];
const LABELS: [&str; 16] = [
    "cpu_usage",
    "cpu_steal",
    "mem_used",
    "mem_free",
    "disk_read",
    "disk_write",
    "net_in",
    "net_out",
    "load_1m",
    "load_5m",
    "gc_pause",
    "queue_depth",
    "latency_p50",
    "latency_p99",
    "errors",
    "requests",
];

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Event `i`: its stream, type, JSON data and value.
fn event(i: u64) -> (String, &'static str, String, f64) {
    let h = mix(i);
    let amount = ((h >> 32) % 1000) as f64 / 10.0;
    let data = format!(
        r#"{{"label":"{}","host":"web-{}","amount":{amount}}}"#,
        LABELS[(h % 16) as usize],
        (h >> 8) % HOSTS
    );
    let stream = format!("stream-{}", (i / BATCH) % STREAMS);
    (stream, TYPES[(i % 8) as usize], data, amount)
}

/// `rings` rings; event i goes to ring `pick(stream)`.
fn fill(rings: usize, cfg: RingConfig, pick: impl Fn(&str) -> usize) -> Vec<DetachedRing> {
    let mut out: Vec<DetachedRing> = (0..rings)
        .map(|p| DetachedRing::new(p as u32, cfg))
        .collect();
    let mut lsn = vec![0u64; rings];
    for i in 0..EVENTS {
        let (stream, ty, data, value) = event(i);
        let p = pick(&stream);
        lsn[p] += 1;
        let r = RecordRef {
            timestamp_ns: 1_000 + i * 1_000,
            stream_version: i / (BATCH * STREAMS) * BATCH + i % BATCH,
            value,
            ..RecordRef::event(stream.as_bytes(), ty.as_bytes(), data.as_bytes())
        };
        out[p].push(lsn[p], &r);
    }
    out
}

/// The queries, by name.
fn queries() -> Vec<(&'static str, GroupedAggregate)> {
    let w = GroupedAggregate::window(0, u64::MAX);
    vec![
        ("a value sum", w.clone()),
        (
            "b data.amount sum",
            GroupedAggregate {
                field: "data.amount".into(),
                ..w.clone()
            },
        ),
        (
            "c type top-10 by sum",
            GroupedAggregate {
                group_by: "type".into(),
                order: GroupOrder::Sum,
                top_k: 10,
                ..w.clone()
            },
        ),
        (
            "d stream top-10 by count",
            GroupedAggregate {
                group_by: "stream".into(),
                order: GroupOrder::Count,
                top_k: 10,
                ..w.clone()
            },
        ),
        (
            "e label top-5 by avg",
            GroupedAggregate {
                group_by: "data.label".into(),
                order: GroupOrder::Average,
                top_k: 5,
                ..w.clone()
            },
        ),
        (
            "e label top-5 by avg, host=web-17",
            GroupedAggregate {
                group_by: "data.label".into(),
                order: GroupOrder::Average,
                top_k: 5,
                where_field: "data.host".into(),
                where_value: "web-17".into(),
                ..w
            },
        ),
    ]
}

/// Every ring's groups merged, then ranked: the server's all-partition path.
fn all(views: &[PartitionView], plan: &Plan) -> Groups {
    let mut merged: Option<Groups> = None;
    for v in views {
        let g = v.aggregate(plan).expect("aggregate");
        match merged.as_mut() {
            None => merged = Some(g),
            Some(m) => merge(plan, m, g).expect("merge"),
        }
    }
    finish(plan, merged.expect("a ring"))
}

fn short(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
}

fn one_partition(c: &mut Criterion) {
    let ring = fill(
        1,
        RingConfig {
            capacity_events: 1 << 20,
            capacity_bytes: 256 << 20,
            max_retries: 8,
        },
        |_| 0,
    );
    let view = ring[0].view();
    assert_eq!(
        view.lsn_range(),
        Some((1, EVENTS)),
        "the ring holds every event"
    );
    let mut g = c.benchmark_group("groups_1m");
    short(&mut g);
    g.throughput(Throughput::Elements(EVENTS));
    for (name, q) in queries() {
        let plan = Plan::new(&q).expect("plan");
        // What each query answers, checked once, when the bench runs (not when a filter
        // leaves it out, so that a profile of one bench is of that bench).
        let check = || {
            let r = finish(&plan, view.aggregate(&plan).expect("aggregate"));
            match name {
                "a value sum" | "b data.amount sum" => {
                    assert_eq!(r.groups[0].total().count, EVENTS, "{name}")
                }
                "c type top-10 by sum" => assert_eq!(r.groups_total, 8),
                "d stream top-10 by count" => {
                    assert_eq!((r.groups_total, r.groups.len()), (STREAMS as u32, 10))
                }
                "e label top-5 by avg" => {
                    assert_eq!((r.groups_total, r.groups.len(), r.matched), (16, 5, EVENTS))
                }
                _ => assert!(r.matched > 0 && r.matched < EVENTS / 50, "{name}: {r:?}"),
            }
        };
        let mut checked = false;
        g.bench_function(name, |b| {
            if !std::mem::replace(&mut checked, true) {
                check();
            }
            b.iter(|| black_box(view.aggregate(black_box(&plan)).unwrap()))
        });
    }
    g.finish();
}

fn four_partitions(c: &mut Criterion) {
    let rings = fill(
        PARTS as usize,
        RingConfig {
            capacity_events: 1 << 19,
            capacity_bytes: 128 << 20,
            max_retries: 8,
        },
        |s| partition_of(s, PARTS) as usize,
    );
    let views: Vec<PartitionView> = rings.iter().map(DetachedRing::view).collect();
    let held: u64 = views
        .iter()
        .map(|v| v.lsn_range().map_or(0, |(a, b)| b + 1 - a))
        .sum();
    assert_eq!(held, EVENTS, "the rings hold every event");
    let mut g = c.benchmark_group("groups_4p");
    short(&mut g);
    for (name, q) in queries().into_iter().filter(|(n, _)| !n.contains("host=")) {
        let plan = Plan::new(&q).expect("plan");
        let mut checked = false;
        g.throughput(Throughput::Elements(EVENTS));
        g.bench_function(BenchmarkId::new(name, "all 4"), |b| {
            if !std::mem::replace(&mut checked, true) {
                assert_eq!(all(&views, &plan).matched, EVENTS, "{name}");
            }
            b.iter(|| black_box(all(&views, black_box(&plan))))
        });
        // The merge and the ranking alone, on the four rings' groups (cloned outside the
        // timing).
        let mut parts: Option<Vec<Groups>> = None;
        g.bench_function(BenchmarkId::new(name, "merge and finish"), |b| {
            let parts = parts
                .get_or_insert_with(|| views.iter().map(|v| v.aggregate(&plan).unwrap()).collect());
            b.iter_batched(
                || parts.clone(),
                |parts| {
                    let mut it = parts.into_iter();
                    let mut merged = it.next().expect("a ring");
                    for p in it {
                        merge(&plan, &mut merged, p).unwrap();
                    }
                    black_box(finish(&plan, merged))
                },
                BatchSize::SmallInput,
            )
        });
        for v in &views {
            let n = v.lsn_range().map_or(0, |(a, b)| b + 1 - a);
            let mut checked = false;
            g.throughput(Throughput::Elements(n));
            g.bench_function(
                BenchmarkId::new(name, format!("partition {}", v.partition())),
                |b| {
                    if !std::mem::replace(&mut checked, true) {
                        assert_eq!(v.aggregate(&plan).unwrap().matched, n, "{name}");
                    }
                    b.iter(|| black_box(v.aggregate(black_box(&plan)).unwrap()))
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, one_partition, four_partitions);
criterion_main!(benches);
