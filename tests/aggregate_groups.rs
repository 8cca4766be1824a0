//! AGGREGATE_GROUPS on the real evringd against a naive reference: random events (streams
//! whose names share a hash among them, JSON data with numbers, strings, booleans and gaps,
//! values and no values), random windows, buckets, filters that combine, a JSON field,
//! group-by and top-K — on one partition, and on four partitions over two shards, where each
//! partition is read through its view and the groups are merged. Then the refusals: a bad
//! path, the group bound, a window before the ring.

mod common;

use std::collections::BTreeMap;

use common::{ev, Server};
use evring::protocol::{
    code, expected, Bucket, Group, GroupOrder, GroupedAggregate, Groups, NameMatch,
};
use serde_json::Value;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// "oPxgeduSyVJ" and "6oPwYOOB18L" have one FNV-1a 64 hash: one id in the stream column.
const STREAMS: [&str; 6] = [
    "cpu-a",
    "cpu-b",
    "mem-a",
    "disk-x",
    "oPxgeduSyVJ",
    "6oPwYOOB18L",
];
const TYPES: [&str; 3] = ["Sample", "SampleX", "Alert"];

#[derive(Clone, Debug)]
struct Ev {
    stream: String,
    event_type: String,
    timestamp_ns: u64,
    value: f64,
    data: Value,
}

fn random_data(rng: &mut Rng) -> Value {
    let mut m = serde_json::Map::new();
    if rng.next() % 8 != 0 {
        m.insert(
            "label".into(),
            rng.pick(&["cpu_usage", "mem", "disk"]).into(),
        );
    }
    match rng.next() % 6 {
        0 => {}
        1 => {
            m.insert("amount".into(), "12".into());
        }
        2 => {
            m.insert("amount".into(), Value::Bool(true));
        }
        _ => {
            let x = (rng.next() % 20_000) as f64 / 100.0 - 50.0;
            m.insert("amount".into(), serde_json::json!(x));
        }
    }
    m.insert("n".into(), serde_json::json!(rng.next() % 4));
    if rng.next() % 4 != 0 {
        let host = rng.pick(&["web-1", "web-2", "web-3"]);
        m.insert(
            "host".into(),
            serde_json::json!({ "name": host, "up": rng.next() % 2 == 0 }),
        );
    }
    Value::Object(m)
}

fn random_events(rng: &mut Rng, n: usize, streams: &[&str]) -> Vec<Ev> {
    (0..n)
        .map(|_| Ev {
            stream: rng.pick(streams).to_string(),
            event_type: rng.pick(&TYPES).to_string(),
            timestamp_ns: 1 + rng.next() % 10_000,
            value: if rng.next() % 7 == 0 {
                f64::NAN
            } else {
                (rng.next() % 1000) as f64 / 10.0
            },
            data: random_data(rng),
        })
        .collect()
}

fn random_query(rng: &mut Rng) -> GroupedAggregate {
    let from = rng.next() % 6000;
    let to = from + 1 + rng.next() % 8000;
    let (stream, stream_match) = match rng.next() % 4 {
        0 | 1 => (String::new(), NameMatch::Exact),
        2 => (rng.pick(&STREAMS).to_string(), NameMatch::Exact),
        _ => (
            rng.pick(&["cpu-", "oP", "6", "mem", "x"]).to_string(),
            NameMatch::Prefix,
        ),
    };
    let (event_type, type_match) = match rng.next() % 4 {
        0 | 1 => (String::new(), NameMatch::Exact),
        2 => (rng.pick(&TYPES).to_string(), NameMatch::Exact),
        _ => (
            rng.pick(&["Sample", "A", "Z"]).to_string(),
            NameMatch::Prefix,
        ),
    };
    let (where_field, where_value) = match rng.next() % 5 {
        0 => ("data.label".into(), rng.pick(&["cpu_usage", "mem"]).into()),
        1 => ("data.n".into(), rng.pick(&["1", "2.0", "x"]).into()),
        2 => ("data.host.up".into(), rng.pick(&["true", "false"]).into()),
        _ => (String::new(), String::new()),
    };
    GroupedAggregate {
        bucket_ns: [0, 0, 1000, 2500, 7][(rng.next() % 5) as usize],
        stream,
        stream_match,
        event_type,
        type_match,
        field: rng
            .pick(&["", "value", "data.amount", "data.n", "data.host.name"])
            .into(),
        where_field,
        where_value,
        group_by: rng
            .pick(&[
                "",
                "stream",
                "type",
                "data.label",
                "data.host.name",
                "data.n",
            ])
            .into(),
        order: [GroupOrder::Count, GroupOrder::Sum, GroupOrder::Average][(rng.next() % 3) as usize],
        top_k: [0, 0, 1, 2, 3][(rng.next() % 5) as usize],
        max_groups: 0,
        ..GroupedAggregate::window(from, to)
    }
}

fn at<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = data;
    for k in path.strip_prefix("data.")?.split('.') {
        v = v.as_object()?.get(k)?;
    }
    Some(v)
}

fn name_passes(name: &str, want: &str, m: NameMatch) -> bool {
    match m {
        NameMatch::Exact => want.is_empty() || name == want,
        NameMatch::Prefix => name.starts_with(want),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.as_f64()?.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The obvious implementation of the documented semantics.
fn naive(events: &[Ev], q: &GroupedAggregate) -> Groups {
    let span = q.to_ns - q.from_ns;
    let width = if q.bucket_ns == 0 { span } else { q.bucket_ns };
    let n = span.div_ceil(width);
    let empty = || -> Vec<Bucket> {
        (0..n)
            .map(|i| Bucket {
                start_ns: q.from_ns + i * width,
                count: 0,
                sum: 0.0,
                min: f64::NAN,
                max: f64::NAN,
            })
            .collect()
    };
    let mut groups: BTreeMap<String, (u64, Vec<Vec<f64>>)> = BTreeMap::new();
    if q.group_by.is_empty() {
        groups.insert(String::new(), (0, vec![Vec::new(); n as usize]));
    }
    let (mut matched, mut ungrouped) = (0, 0);
    for e in events {
        let passes = e.timestamp_ns >= q.from_ns
            && e.timestamp_ns < q.to_ns
            && name_passes(&e.stream, &q.stream, q.stream_match)
            && name_passes(&e.event_type, &q.event_type, q.type_match)
            && (q.where_field.is_empty()
                || at(&e.data, &q.where_field).is_some_and(|v| match v {
                    Value::String(s) => *s == q.where_value,
                    Value::Number(n) => q.where_value.parse::<f64>().ok() == n.as_f64(),
                    Value::Bool(b) => q.where_value == b.to_string(),
                    _ => false,
                }));
        if !passes {
            continue;
        }
        matched += 1;
        let key = match q.group_by.as_str() {
            "" => Some(String::new()),
            "stream" => Some(e.stream.clone()),
            "type" => Some(e.event_type.clone()),
            path => at(&e.data, path).and_then(scalar_text),
        };
        let Some(key) = key else {
            ungrouped += 1;
            continue;
        };
        let number = match q.field.as_str() {
            "" | "value" => Some(e.value).filter(|v| !v.is_nan()),
            path => at(&e.data, path).and_then(Value::as_f64),
        };
        let g = groups
            .entry(key)
            .or_insert_with(|| (0, vec![Vec::new(); n as usize]));
        match number {
            None => g.0 += 1,
            Some(x) => g.1[((e.timestamp_ns - q.from_ns) / width) as usize].push(x),
        }
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|(key, (missing, cells))| {
            let mut buckets = empty();
            for (b, xs) in buckets.iter_mut().zip(cells) {
                b.count = xs.len() as u64;
                b.sum = xs.iter().sum();
                b.min = xs.iter().copied().reduce(f64::min).unwrap_or(f64::NAN);
                b.max = xs.iter().copied().reduce(f64::max).unwrap_or(f64::NAN);
            }
            Group {
                key,
                missing,
                buckets,
            }
        })
        .collect();
    let groups_total = out.len() as u32;
    if q.top_k > 0 {
        let rank = |g: &Group| {
            let count: u64 = g.buckets.iter().map(|b| b.count).sum();
            let sum: f64 = g.buckets.iter().map(|b| b.sum).sum();
            match q.order {
                GroupOrder::Count => count as f64,
                GroupOrder::Sum => sum,
                GroupOrder::Average if count == 0 => f64::NEG_INFINITY,
                GroupOrder::Average => sum / count as f64,
            }
        };
        // Stable: ties keep the key order.
        out.sort_by(|a, b| rank(b).total_cmp(&rank(a)));
        out.truncate(q.top_k as usize);
    }
    Groups {
        matched,
        ungrouped,
        groups_total,
        groups: out,
    }
}

fn close(x: f64, y: f64) -> bool {
    (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-6 * (1.0 + y.abs())
}

/// Whether two results agree (sums within rounding; ranks that tie within rounding may
/// order differently, so a mismatch of order is accepted only between near-equal ranks).
fn assert_same(got: &Groups, want: &Groups, what: &str) {
    assert_eq!(
        (got.matched, got.ungrouped, got.groups_total),
        (want.matched, want.ungrouped, want.groups_total),
        "{what}: totals"
    );
    assert_eq!(got.groups.len(), want.groups.len(), "{what}: groups");
    for (g, w) in got.groups.iter().zip(&want.groups) {
        assert_eq!(
            g.key, w.key,
            "{what}: keys {:?} / {:?}",
            got.groups, want.groups
        );
        assert_eq!(g.missing, w.missing, "{what}: missing of {:?}", g.key);
        assert_eq!(g.buckets.len(), w.buckets.len(), "{what}: buckets");
        for (x, y) in g.buckets.iter().zip(&w.buckets) {
            assert!(
                x.start_ns == y.start_ns
                    && x.count == y.count
                    && close(x.sum, y.sum)
                    && close(x.min, y.min)
                    && close(x.max, y.max),
                "{what}: group {:?}: {x:?} != {y:?}",
                g.key
            );
        }
    }
}

fn load(server: &Server, events: &[Ev]) {
    let c = server.client();
    for chunk in events.chunks(7) {
        for e in chunk {
            let mut event = ev(&e.event_type, e.data.to_string().as_bytes());
            event.timestamp_ns = e.timestamp_ns;
            event.value = e.value;
            c.append(&e.stream, expected::ANY, vec![event]).unwrap();
        }
    }
}

/// Random queries over random events of `streams` against the naive reference.
fn check_random_queries(server: &Server, seed: u64, streams: &[&str]) {
    let mut rng = Rng(seed);
    let events = random_events(&mut rng, 1500, streams);
    load(server, &events);
    let c = server.client();
    let mut grouped = 0;
    for case in 0..300 {
        let q = random_query(&mut rng);
        let want = naive(&events, &q);
        let got = c
            .aggregate_groups(&q)
            .unwrap_or_else(|e| panic!("case {case}: {q:?}: {e}"));
        // Near-equal sums and averages may rank either way: compare those without top-K.
        let ties = q.top_k > 0 && q.order != GroupOrder::Count;
        if ties {
            let all = GroupedAggregate {
                top_k: 0,
                ..q.clone()
            };
            let got_all = c.aggregate_groups(&all).unwrap();
            assert_same(
                &got_all,
                &naive(&events, &all),
                &format!("case {case}: {all:?}"),
            );
            assert_eq!(
                got.groups.len(),
                want.groups.len(),
                "case {case}: top-K size"
            );
        } else {
            assert_same(&got, &want, &format!("case {case}: {q:?}"));
        }
        grouped += usize::from(want.groups.len() > 1);
    }
    assert!(grouped > 50, "only {grouped} queries had several groups");
}

fn start(dir: &std::path::Path, partitions: &str, shards: &str) -> Server {
    Server::start(
        dir,
        &[
            "--partitions",
            partitions,
            "--set",
            &format!("shards={shards}"),
            "--set",
            "pin_cpus=false",
        ],
    )
}

#[test]
fn grouped_aggregations_match_a_naive_reference_on_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "1", "1");
    check_random_queries(&server, 0x9E37_79B9_7F4A_7C15, &STREAMS);
}

/// Without two names of one id in a partition, a group-by stream reads the id column alone
/// and names each group from one of its events.
#[test]
fn grouped_aggregations_match_a_naive_reference_when_no_stream_ids_are_shared() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "2", "1");
    check_random_queries(&server, 0x5851_F42D_4C95_7F2D, &STREAMS[..4]);
}

#[test]
fn grouped_aggregations_match_a_naive_reference_on_four_partitions_over_two_shards() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "4", "2");
    check_random_queries(&server, 0x2545_F491_4F6C_DD1D, &STREAMS);
}

#[test]
fn streams_that_share_a_hash_are_two_groups_and_two_filters() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "1", "1");
    let c = server.client();
    for (stream, n) in [("oPxgeduSyVJ", 2), ("6oPwYOOB18L", 3)] {
        for _ in 0..n {
            let mut e = ev("M", b"{}");
            e.value = 1.0;
            e.timestamp_ns = 5;
            c.append(stream, expected::ANY, vec![e]).unwrap();
        }
    }
    let q = GroupedAggregate {
        group_by: "stream".into(),
        ..GroupedAggregate::window(0, 10)
    };
    let g = c.aggregate_groups(&q).unwrap();
    let counts: Vec<(String, u64)> = g
        .groups
        .iter()
        .map(|g| (g.key.clone(), g.buckets[0].count))
        .collect();
    assert_eq!(
        counts,
        [
            ("6oPwYOOB18L".to_string(), 3),
            ("oPxgeduSyVJ".to_string(), 2)
        ]
    );
    let one = GroupedAggregate {
        stream: "oPxgeduSyVJ".into(),
        ..GroupedAggregate::window(0, 10)
    };
    assert_eq!(
        c.aggregate_groups(&one).unwrap().groups[0].buckets[0].count,
        2
    );
}

#[test]
fn bad_requests_and_the_group_bound_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "2", "1");
    let c = server.client();
    for i in 0..20u64 {
        let mut e = ev("M", format!("{{\"id\":{i}}}").as_bytes());
        e.timestamp_ns = 100 + i;
        c.append(&format!("s-{i}"), expected::ANY, vec![e]).unwrap();
    }
    let refused = |q: GroupedAggregate| match c.aggregate_groups(&q).unwrap_err() {
        evring::client::ClientError::Server { code: got, message } => {
            assert_eq!(got, code::INVALID_ARGUMENT, "{message}");
            message
        }
        other => panic!("{other:?}"),
    };
    let all = GroupedAggregate::window(0, 1000);
    let m = refused(GroupedAggregate {
        field: "amount".into(),
        ..all.clone()
    });
    assert!(m.contains("data.<key>") && m.contains("\"amount\""), "{m}");
    let m = refused(GroupedAggregate {
        group_by: "data.".into(),
        ..all.clone()
    });
    assert!(m.contains("group by"), "{m}");
    let m = refused(GroupedAggregate {
        where_value: "x".into(),
        ..all.clone()
    });
    assert!(m.contains("where field"), "{m}");
    // Twenty streams over two partitions: ten each, so the bound is met only when merged.
    let m = refused(GroupedAggregate {
        group_by: "stream".into(),
        max_groups: 15,
        ..all.clone()
    });
    assert!(m.contains("more than 15 groups"), "{m}");
    let ok = c
        .aggregate_groups(&GroupedAggregate {
            group_by: "stream".into(),
            max_groups: 20,
            top_k: 3,
            ..all.clone()
        })
        .unwrap();
    assert_eq!((ok.groups_total, ok.groups.len()), (20, 3));
    let m = refused(GroupedAggregate {
        group_by: "data.id".into(),
        bucket_ns: 1,
        ..GroupedAggregate::window(0, 100_000)
    });
    assert!(m.contains("groups × buckets"), "{m}");
    let m = refused(GroupedAggregate {
        max_groups: 10_001,
        ..all.clone()
    });
    assert!(m.contains("above the bound of 10000"), "{m}");
    let m = refused(GroupedAggregate::window(5, 5));
    assert!(m.contains("empty window"), "{m}");
    let long = format!("{{\"long\":\"{}\"}}", "x".repeat(300));
    let mut e = ev("M", long.as_bytes());
    e.timestamp_ns = 500;
    c.append("long", expected::ANY, vec![e]).unwrap();
    let m = refused(GroupedAggregate {
        group_by: "data.long".into(),
        ..all.clone()
    });
    assert!(m.contains("group key of 300 bytes"), "{m}");
}

/// VmHWM (peak RSS) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// The largest request the bound allows — 10,000 groups with 250-byte keys, 10 buckets each
/// (100,000 cells) — raises the server's peak RSS by no more than docs/OPERATIONS.md's
/// 24 MiB for an aggregation being built.
#[test]
fn the_largest_grouped_aggregation_stays_within_its_memory_term() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "1", "1");
    let c = server.client();
    let events: Vec<_> = (0..10_000u64)
        .map(|i| {
            let key = format!("{i:0>250}");
            let mut e = ev("M", format!("{{\"k\":\"{key}\"}}").as_bytes());
            e.value = 1.0;
            e.timestamp_ns = 1 + i;
            e
        })
        .collect();
    for chunk in events.chunks(500) {
        c.append("keys", expected::ANY, chunk.to_vec()).unwrap();
    }
    let pid = server.child.as_ref().unwrap().id();
    let before = peak_rss(pid);
    let q = GroupedAggregate {
        bucket_ns: 1000,
        group_by: "data.k".into(),
        ..GroupedAggregate::window(1, 10_001)
    };
    let g = c.aggregate_groups(&q).unwrap();
    assert_eq!((g.groups_total, g.groups.len()), (10_000, 10_000));
    assert_eq!(g.groups[0].buckets.len(), 10);
    let grown = peak_rss(pid).saturating_sub(before);
    eprintln!(
        "peak RSS grew by {:.1} MiB",
        grown as f64 / (1 << 20) as f64
    );
    assert!(grown <= 24 << 20, "grew by {grown} bytes");
    // One more group is refused.
    let mut e = ev("M", b"{\"k\":\"one more\"}");
    e.timestamp_ns = 5;
    c.append("keys", expected::ANY, vec![e]).unwrap();
    assert!(c.aggregate_groups(&q).is_err());
}
