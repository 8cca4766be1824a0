//! Time-window aggregations over ring columns: count, sum, min, max and average of the event
//! `value` over `[from_ns, to_ns)`, filtered by stream and/or a set of event-type ids,
//! optionally bucketed by a fixed width (a time series in one request).
//!
//! Events without a value (NaN) are not counted: `count` is the number of matching events
//! that carry a value, so `average = sum / count`. Empty buckets have count 0, sum 0 and
//! NaN min/max.
//!
//! Two entry points over the same accumulator: [`aggregate_columns`] scans the owner core's
//! columns in place (no copy, no validation needed: nobody else writes them), and
//! [`aggregate_events`] runs on events copied by a stable view on any thread.

pub mod groups;
pub mod json;

pub use crate::protocol::Bucket;
use crate::ring::{RingEvent, RingWriter};

/// Most buckets one request may ask for.
pub const BUCKETS_MAX: u64 = 100_000;

/// What the accumulator does to a bucket ([`Bucket`] is the protocol's: one type from the
/// ring's columns to the client).
impl Bucket {
    fn empty(start_ns: u64) -> Self {
        Bucket {
            start_ns,
            count: 0,
            sum: 0.0,
            min: f64::NAN,
            max: f64::NAN,
        }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = if self.min.is_nan() {
            v
        } else {
            self.min.min(v)
        };
        self.max = if self.max.is_nan() {
            v
        } else {
            self.max.max(v)
        };
    }
}

/// What to aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub from_ns: u64,
    pub to_ns: u64,
    /// 0 = one bucket for the whole window.
    pub bucket_ns: u64,
    /// Only this stream id.
    pub stream_id: Option<u64>,
    /// Only these type ids (sorted); `None` = every type.
    pub type_ids: Option<Vec<u64>>,
}

/// Why a query was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AggregateError {
    #[error("empty window: from_ns must be below to_ns")]
    EmptyWindow,
    #[error("{0} buckets requested, at most {BUCKETS_MAX}")]
    TooManyBuckets(u64),
    #[error(
        "{what} {text:?}: name a field of the event's JSON data as data.<key>[.<key>...] \
         (for example data.amount)"
    )]
    BadPath { what: String, text: String },
    #[error("max_groups {asked} is above the bound of {bound}", bound = groups::GROUPS_MAX)]
    MaxGroupsTooLarge { asked: u32 },
    #[error(
        "the window holds more than {max_groups} groups (of {buckets} buckets each; \
         groups × buckets ≤ {}): narrow the filters, ask for fewer buckets or group by \
         something with fewer values",
        groups::CELLS_MAX
    )]
    TooManyGroups { max_groups: u32, buckets: u64 },
    #[error(
        "a group key of {bytes} bytes: keys are at most {max} bytes; group by something \
         shorter",
        max = groups::GROUP_KEY_BYTES_MAX
    )]
    KeyTooLong { bytes: usize },
}

/// An accumulator for one query.
#[derive(Clone, Debug)]
pub struct Aggregator {
    q: Query,
    buckets: Vec<Bucket>,
    /// Events in the window that passed the filters but carry no value.
    missing: u64,
}

impl Aggregator {
    pub fn new(mut q: Query) -> Result<Self, AggregateError> {
        if q.from_ns >= q.to_ns {
            return Err(AggregateError::EmptyWindow);
        }
        let span = q.to_ns - q.from_ns;
        let n = if q.bucket_ns == 0 {
            1
        } else {
            span.div_ceil(q.bucket_ns)
        };
        if n > BUCKETS_MAX {
            return Err(AggregateError::TooManyBuckets(n));
        }
        if let Some(ids) = q.type_ids.as_mut() {
            ids.sort_unstable();
        }
        let width = if q.bucket_ns == 0 { span } else { q.bucket_ns };
        let buckets = (0..n)
            .map(|i| Bucket::empty(q.from_ns + i * width))
            .collect();
        Ok(Aggregator {
            q,
            buckets,
            missing: 0,
        })
    }

    /// Offers one event's columns.
    #[inline]
    pub fn add(&mut self, timestamp_ns: u64, value: f64, type_id: u64, stream_id: u64) {
        if timestamp_ns < self.q.from_ns || timestamp_ns >= self.q.to_ns {
            return;
        }
        if self.q.stream_id.is_some_and(|s| s != stream_id) {
            return;
        }
        if let Some(ids) = &self.q.type_ids {
            if ids.binary_search(&type_id).is_err() {
                return;
            }
        }
        if value.is_nan() {
            self.missing += 1;
            return;
        }
        let i = (timestamp_ns - self.q.from_ns)
            .checked_div(self.q.bucket_ns)
            .unwrap_or(0) as usize;
        self.buckets[i].add(value);
    }

    /// Offers a run of events as column slices (timestamp, value bits, type id, stream id).
    /// The common query — one bucket, no filter — runs branch-free over four independent
    /// accumulators, so it is bound by memory bandwidth rather than by the latency of one
    /// chain of float additions.
    pub fn add_run(&mut self, ts: &[u64], values: &[u64], types: &[u64], streams: &[u64]) {
        let n = ts
            .len()
            .min(values.len())
            .min(types.len())
            .min(streams.len());
        if self.q.bucket_ns != 0 || self.q.stream_id.is_some() || self.q.type_ids.is_some() {
            for k in 0..n {
                self.add(ts[k], f64::from_bits(values[k]), types[k], streams[k]);
            }
            return;
        }
        let (from, to) = (self.q.from_ns, self.q.to_ns);
        let mut count = [0u64; 4];
        let mut sum = [0f64; 4];
        let mut min = [f64::INFINITY; 4];
        let mut max = [f64::NEG_INFINITY; 4];
        let mut missing = [0u64; 4];
        let (ts, values) = (&ts[..n], &values[..n]);
        let mut tc = ts.chunks_exact(4);
        let mut vc = values.chunks_exact(4);
        for (t4, v4) in (&mut tc).zip(&mut vc) {
            for l in 0..4 {
                let v = f64::from_bits(v4[l]);
                let in_window = t4[l] >= from && t4[l] < to;
                let ok = in_window && !v.is_nan();
                missing[l] += u64::from(in_window && v.is_nan());
                count[l] += u64::from(ok);
                sum[l] += if ok { v } else { 0.0 };
                min[l] = if ok { min[l].min(v) } else { min[l] };
                max[l] = if ok { max[l].max(v) } else { max[l] };
            }
        }
        for (&t, &v) in tc.remainder().iter().zip(vc.remainder()) {
            let v = f64::from_bits(v);
            if t >= from && t < to {
                if v.is_nan() {
                    missing[0] += 1;
                    continue;
                }
                count[0] += 1;
                sum[0] += v;
                min[0] = min[0].min(v);
                max[0] = max[0].max(v);
            }
        }
        self.missing += missing.iter().sum::<u64>();
        let b = &mut self.buckets[0];
        for l in 0..4 {
            b.merge(&Bucket {
                start_ns: b.start_ns,
                count: count[l],
                sum: sum[l],
                min: min[l],
                max: max[l],
            });
        }
    }

    /// Events in the window that passed the filters but carry no value.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    pub fn finish(self) -> Vec<Bucket> {
        self.buckets
    }
}

/// Aggregates the owner core's ring in place.
pub fn aggregate_columns(ring: &RingWriter, q: Query) -> Result<Vec<Bucket>, AggregateError> {
    let mut agg = Aggregator::new(q)?;
    #[cfg(not(evring_loom))]
    ring.column_runs(|ts, v, t, s| agg.add_run(ts, v, t, s));
    #[cfg(evring_loom)]
    ring.scan_columns(|ts, v, t, s| agg.add(ts, v, t, s));
    Ok(agg.finish())
}

/// Aggregates events copied by a stable view.
pub fn aggregate_events(events: &[RingEvent], q: Query) -> Result<Vec<Bucket>, AggregateError> {
    let mut agg = Aggregator::new(q)?;
    for e in events {
        agg.add(e.timestamp_ns, e.value, e.type_id, e.stream_id);
    }
    Ok(agg.finish())
}

#[cfg(all(test, not(evring_loom)))]
mod tests {
    use super::*;
    use crate::ring::{ring, NewEvent, RingConfig};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The obvious implementation, for comparison.
    fn naive(events: &[(u64, f64, u64, u64)], q: &Query) -> Vec<Bucket> {
        let span = q.to_ns - q.from_ns;
        let width = if q.bucket_ns == 0 { span } else { q.bucket_ns };
        let n = span.div_ceil(width);
        (0..n)
            .map(|i| {
                let lo = q.from_ns + i * width;
                let hi = (lo + width).min(q.to_ns);
                let vals: Vec<f64> = events
                    .iter()
                    .filter(|(ts, v, t, s)| {
                        *ts >= lo
                            && *ts < hi
                            && !v.is_nan()
                            && q.stream_id.is_none_or(|x| x == *s)
                            && q.type_ids.as_ref().is_none_or(|ids| ids.contains(t))
                    })
                    .map(|e| e.1)
                    .collect();
                Bucket {
                    start_ns: lo,
                    count: vals.len() as u64,
                    sum: vals.iter().sum(),
                    min: vals.iter().copied().reduce(f64::min).unwrap_or(f64::NAN),
                    max: vals.iter().copied().reduce(f64::max).unwrap_or(f64::NAN),
                }
            })
            .collect()
    }

    fn same(a: &[Bucket], b: &[Bucket]) -> bool {
        let close =
            |x: f64, y: f64| (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-6 * (1.0 + y.abs());
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.start_ns == y.start_ns
                    && x.count == y.count
                    && close(x.sum, y.sum)
                    && close(x.min, y.min)
                    && close(x.max, y.max)
            })
    }

    #[test]
    fn matches_a_naive_reference_on_random_data() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..400 {
            let n = (rng.next() % 400) as usize;
            let events: Vec<(u64, f64, u64, u64)> = (0..n)
                .map(|_| {
                    let v = if rng.next() % 10 == 0 {
                        f64::NAN
                    } else {
                        (rng.next() % 2000) as f64 / 10.0 - 100.0
                    };
                    (rng.next() % 1000, v, rng.next() % 4, rng.next() % 3)
                })
                .collect();
            let from = rng.next() % 500;
            let to = from + 1 + rng.next() % 600;
            let q = Query {
                from_ns: from,
                to_ns: to,
                bucket_ns: [0, 1, 7, 100][(rng.next() % 4) as usize],
                stream_id: (rng.next() % 2 == 0).then(|| rng.next() % 3),
                type_ids: (rng.next() % 2 == 0).then(|| vec![rng.next() % 4, rng.next() % 4]),
            };
            // Up to 400 events into 256 slots: the ring often wraps, so the owner's scan
            // meets two runs of columns.
            let (mut w, r) = ring(RingConfig {
                capacity_events: 256,
                capacity_bytes: 4096,
                max_retries: 4,
            });
            for (i, (ts, v, t, s)) in events.iter().enumerate() {
                w.push(&NewEvent {
                    lsn: i as u64,
                    timestamp_ns: *ts,
                    value: *v,
                    type_id: *t,
                    stream_id: *s,
                    stream_version: 0,
                    payload: b"",
                })
                .unwrap();
            }
            let want = naive(&events[n.saturating_sub(256)..], &q);
            let owner = aggregate_columns(&w, q.clone()).unwrap();
            assert!(
                same(&owner, &want),
                "case {case}: owner scan {owner:?} != {want:?}"
            );
            let view = aggregate_events(&r.strict().unwrap(), q.clone()).unwrap();
            assert!(same(&view, &want), "case {case}: view {view:?} != {want:?}");
        }
    }

    #[test]
    fn refuses_empty_windows_and_too_many_buckets() {
        let q = |from, to, bucket| Query {
            from_ns: from,
            to_ns: to,
            bucket_ns: bucket,
            stream_id: None,
            type_ids: None,
        };
        assert_eq!(
            Aggregator::new(q(5, 5, 0)).err(),
            Some(AggregateError::EmptyWindow)
        );
        assert!(matches!(
            Aggregator::new(q(0, u64::MAX, 1)),
            Err(AggregateError::TooManyBuckets(_))
        ));
    }
}
