//! Grouped aggregations (AGGREGATE_GROUPS): per group, per time bucket, the count, sum, min,
//! max (and so the average) of a number — the event's value or a numeric field of its JSON
//! data — over the events that pass filters that combine; then the groups of every partition
//! merged by key and ranked for top-K.
//!
//! Three steps, each its own type:
//! - [`Plan`] checks a request once (paths, bucket and group bounds) and says what a scan must
//!   read: columns only, or payloads too.
//! - [`GroupTable`] is one partition's accumulator. A scan offers it each event that passed
//!   the filters, with the event's group key and its number (or none). Keys of the type
//!   column index a vector (type ids are small and dense); stream keys go through the stream
//!   id column with the name kept and compared, so two names with one hash stay two groups;
//!   field keys through a map of their bytes. No allocation per event once a group exists.
//! - [`merge`] folds one partition's groups into another's by key, and [`finish`] ranks
//!   them: top-K by count, sum or average, largest first, ties by key; every group by key
//!   without top-K.
//!
//! The bound: a table refuses its group number `max_groups + 1`, and also the group whose
//! buckets would take the cells (groups × buckets) past [`CELLS_MAX`]; merging applies the
//! same bound to the union. The request is then refused ([`AggregateError::TooManyGroups`]),
//! never answered with some of the groups: a top-K over part of the groups would be wrong.
//! A key longer than [`GROUP_KEY_BYTES_MAX`] is refused too ([`AggregateError::KeyTooLong`]).

use super::json::scalar_at;
use super::{AggregateError, BUCKETS_MAX};
use crate::protocol::{Bucket, Group, GroupOrder, GroupedAggregate, Groups, NameMatch};
use std::collections::HashMap;

/// The most groups a request may ask for (`max_groups`), and the bound when it asks for none.
pub const GROUPS_MAX: u32 = 10_000;

/// The most group × bucket cells one request may hold.
pub const CELLS_MAX: u64 = BUCKETS_MAX;

/// The longest group key, in bytes: with [`GROUPS_MAX`] and [`CELLS_MAX`] it bounds what one
/// request holds (docs/OPERATIONS.md).
pub const GROUP_KEY_BYTES_MAX: usize = 256;

/// What is aggregated.
#[derive(Clone, Debug, PartialEq)]
pub enum Number {
    /// The event's value column (NaN: none).
    Value,
    /// A field of the event's JSON data.
    Field(Vec<String>),
}

/// What groups are made of.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupBy {
    Nothing,
    Stream,
    Type,
    Field(Vec<String>),
}

/// A checked request.
#[derive(Clone, Debug)]
pub struct Plan {
    pub from_ns: u64,
    pub to_ns: u64,
    /// The width of a bucket (the whole window for one bucket).
    pub width: u64,
    pub buckets: u64,
    pub stream: String,
    pub stream_match: NameMatch,
    pub event_type: String,
    pub type_match: NameMatch,
    pub number: Number,
    pub filter: Option<(Vec<String>, String)>,
    pub group_by: GroupBy,
    pub order: GroupOrder,
    pub top_k: u32,
    pub max_groups: u32,
}

/// `data.a.b` as `["a", "b"]`.
fn data_path(what: &str, text: &str) -> Result<Vec<String>, AggregateError> {
    let keys = text
        .strip_prefix("data.")
        .map(|rest| rest.split('.').map(str::to_owned).collect::<Vec<_>>())
        .filter(|keys| keys.iter().all(|k| !k.is_empty()));
    keys.ok_or_else(|| AggregateError::BadPath {
        what: what.to_owned(),
        text: text.to_owned(),
    })
}

impl Plan {
    pub fn new(q: &GroupedAggregate) -> Result<Plan, AggregateError> {
        if q.from_ns >= q.to_ns {
            return Err(AggregateError::EmptyWindow);
        }
        let span = q.to_ns - q.from_ns;
        let buckets = if q.bucket_ns == 0 {
            1
        } else {
            span.div_ceil(q.bucket_ns)
        };
        if buckets > BUCKETS_MAX {
            return Err(AggregateError::TooManyBuckets(buckets));
        }
        if q.max_groups > GROUPS_MAX {
            return Err(AggregateError::MaxGroupsTooLarge {
                asked: q.max_groups,
            });
        }
        let number = match q.field.as_str() {
            "" | "value" => Number::Value,
            path => Number::Field(data_path("field", path)?),
        };
        let filter = match (q.where_field.as_str(), q.where_value.as_str()) {
            ("", "") => None,
            ("", _) => {
                return Err(AggregateError::BadPath {
                    what: "where field".into(),
                    text: String::new(),
                })
            }
            (path, value) => Some((data_path("where field", path)?, value.to_owned())),
        };
        let group_by = match q.group_by.as_str() {
            "" => GroupBy::Nothing,
            "stream" => GroupBy::Stream,
            "type" => GroupBy::Type,
            path => GroupBy::Field(data_path("group by", path)?),
        };
        Ok(Plan {
            from_ns: q.from_ns,
            to_ns: q.to_ns,
            width: if q.bucket_ns == 0 { span } else { q.bucket_ns },
            buckets,
            stream: q.stream.clone(),
            stream_match: q.stream_match,
            event_type: q.event_type.clone(),
            type_match: q.type_match,
            number,
            filter,
            group_by,
            order: q.order,
            top_k: q.top_k,
            max_groups: if q.max_groups == 0 {
                GROUPS_MAX
            } else {
                q.max_groups
            },
        })
    }

    /// Whether a scan must read events' payloads (a name, or the JSON data), not only their
    /// columns.
    pub fn needs_payload(&self) -> bool {
        !self.stream.is_empty()
            || self.number != Number::Value
            || self.filter.is_some()
            || matches!(self.group_by, GroupBy::Stream | GroupBy::Field(_))
    }

    /// Whether this is a plain aggregation of the value column — one group, no name or field
    /// filter — which the column scan of [`super::Aggregator`] answers.
    pub fn is_plain(&self) -> bool {
        !self.needs_payload() && self.group_by == GroupBy::Nothing
    }

    /// Whether `name` passes the stream filter.
    pub fn stream_passes(&self, name: &[u8]) -> bool {
        match self.stream_match {
            NameMatch::Exact => self.stream.is_empty() || name == self.stream.as_bytes(),
            NameMatch::Prefix => name.starts_with(self.stream.as_bytes()),
        }
    }

    /// The most groups × buckets the table may hold.
    fn cells_ok(&self, groups: usize) -> bool {
        groups as u64 <= u64::from(self.max_groups)
            && (groups as u64).saturating_mul(self.buckets) <= CELLS_MAX
    }

    fn too_many_groups(&self) -> AggregateError {
        AggregateError::TooManyGroups {
            max_groups: self.max_groups.min((CELLS_MAX / self.buckets) as u32),
            buckets: self.buckets,
        }
    }

    fn empty_buckets(&self) -> Vec<Bucket> {
        (0..self.buckets)
            .map(|i| Bucket::empty(self.from_ns + i * self.width))
            .collect()
    }
}

/// An event's group, as a scan offers it.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// No group-by: the one group.
    One,
    /// An event-type id.
    Type(u64),
    /// A stream: its id column and its name.
    Stream(u64, &'a [u8]),
    /// A stream by its id column alone, when no two of the partition's stream names share
    /// an id; `seq` is where the ring holds this event (when the scan knows it), from which
    /// [`GroupTable::finish`] reads the group's name.
    StreamId { id: u64, seq: Option<u64> },
    /// A field's value as text.
    Text(&'a [u8]),
    /// The group-by field is missing (or not a scalar): in no group.
    Missing,
}

/// One group while a partition is scanned.
struct Acc {
    /// The key's bytes (a type's or a stream id's key is named at the end).
    key: Vec<u8>,
    /// The type id or the stream id of a group named at the end.
    id: u64,
    /// Where the ring holds an event of a [`Key::StreamId`] group.
    seq: Option<u64>,
    missing: u64,
    buckets: Vec<Bucket>,
}

/// One partition's accumulator (see the module docs).
pub struct GroupTable<'p> {
    plan: &'p Plan,
    groups: Vec<Acc>,
    by_type: Vec<u32>,
    by_stream: ByStreamId,
    by_text: HashMap<Vec<u8>, u32>,
    matched: u64,
    ungrouped: u64,
}

const NONE: u32 = u32::MAX;

/// Hashes a stream id column value as itself: it is a 64-bit FNV-1a hash already, so a
/// second hash (the map's default SipHash) would only cost time.
#[derive(Default)]
struct StreamIdHasher(u64);

impl std::hash::Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByStreamId = HashMap<u64, u32, std::hash::BuildHasherDefault<StreamIdHasher>>;

impl<'p> GroupTable<'p> {
    /// A table; without group-by it holds its one group from the start (a window with no
    /// events still answers one group of empty buckets).
    pub fn new(plan: &'p Plan) -> Self {
        let groups = if plan.group_by == GroupBy::Nothing {
            vec![Acc {
                key: Vec::new(),
                id: 0,
                seq: None,
                missing: 0,
                buckets: plan.empty_buckets(),
            }]
        } else {
            Vec::new()
        };
        GroupTable {
            plan,
            groups,
            by_type: Vec::new(),
            by_stream: ByStreamId::default(),
            by_text: HashMap::new(),
            matched: 0,
            ungrouped: 0,
        }
    }

    /// Offers an event that passed the filters: its timestamp, group and number.
    #[inline]
    pub fn offer(
        &mut self,
        timestamp_ns: u64,
        key: Key<'_>,
        number: Option<f64>,
    ) -> Result<(), AggregateError> {
        let plan = self.plan;
        if timestamp_ns < plan.from_ns || timestamp_ns >= plan.to_ns {
            return Ok(());
        }
        self.matched += 1;
        let g = match self.group(key)? {
            Some(g) => g,
            None => {
                self.ungrouped += 1;
                return Ok(());
            }
        };
        let acc = &mut self.groups[g as usize];
        match number.filter(|n| !n.is_nan()) {
            None => acc.missing += 1,
            Some(n) => {
                let i = ((timestamp_ns - plan.from_ns) / plan.width) as usize;
                acc.buckets[i].add(n);
            }
        }
        Ok(())
    }

    /// The index of `key`'s group, made if new; `None` for [`Key::Missing`].
    fn group(&mut self, key: Key<'_>) -> Result<Option<u32>, AggregateError> {
        let found = match key {
            Key::Missing => return Ok(None),
            Key::One => self.groups.first().map(|_| 0),
            Key::Type(id) => self
                .by_type
                .get(id as usize)
                .copied()
                .filter(|&g| g != NONE),
            Key::StreamId { id, seq } => match self.by_stream.get(&id) {
                Some(&g) => {
                    let acc = &mut self.groups[g as usize];
                    acc.seq = acc.seq.or(seq);
                    Some(g)
                }
                None => None,
            },
            Key::Stream(id, name) => match self.by_stream.get(&id) {
                Some(&g) if self.groups[g as usize].key == name => Some(g),
                // Another name with the same hash: the names' map tells them apart.
                Some(_) => self.by_text.get(name).copied(),
                None => None,
            },
            Key::Text(text) => self.by_text.get(text).copied(),
        };
        if let Some(g) = found {
            return Ok(Some(g));
        }
        if !self.plan.cells_ok(self.groups.len() + 1) {
            return Err(self.plan.too_many_groups());
        }
        if let Key::Stream(_, bytes) | Key::Text(bytes) = key {
            check_key(bytes)?;
        }
        let g = self.groups.len() as u32;
        let mut first_seq = None;
        let (bytes, id): (&[u8], u64) = match key {
            Key::Type(id) => {
                let i = id as usize;
                if self.by_type.len() <= i {
                    self.by_type.resize(i + 1, NONE);
                }
                self.by_type[i] = g;
                (b"", id)
            }
            Key::Stream(id, name) => {
                if let std::collections::hash_map::Entry::Vacant(e) = self.by_stream.entry(id) {
                    e.insert(g);
                } else {
                    self.by_text.insert(name.to_vec(), g);
                }
                (name, 0)
            }
            Key::Text(text) => {
                self.by_text.insert(text.to_vec(), g);
                (text, 0)
            }
            Key::StreamId { id, seq } => {
                self.by_stream.insert(id, g);
                first_seq = seq;
                (b"", id)
            }
            Key::One | Key::Missing => (b"", 0),
        };
        self.groups.push(Acc {
            key: bytes.to_vec(),
            id,
            seq: first_seq,
            missing: 0,
            buckets: self.plan.empty_buckets(),
        });
        Ok(Some(g))
    }

    /// The groups known by a stream id alone, to be named: each id and where the ring holds
    /// one of its events (when the scan knew it).
    pub fn unnamed(&self) -> Vec<(u64, Option<u64>)> {
        self.groups
            .iter()
            .filter(|a| a.key.is_empty() && self.plan.group_by == GroupBy::Stream)
            .map(|a| (a.id, a.seq))
            .collect()
    }

    /// The partition's groups, by key; `name` names the groups known by an id (a type id,
    /// or a stream id and where the ring holds one of its events).
    pub fn finish(
        self,
        mut name: impl FnMut(u64, Option<u64>) -> Option<String>,
    ) -> Result<Groups, AggregateError> {
        let mut groups = Vec::with_capacity(self.groups.len());
        let by_id = matches!(self.plan.group_by, GroupBy::Type | GroupBy::Stream);
        for a in self.groups {
            // A stream name is never empty: an empty key of a stream group is one known by
            // its id.
            let key = if by_id && a.key.is_empty() {
                name(a.id, a.seq).unwrap_or_default()
            } else {
                String::from_utf8_lossy(&a.key).into_owned()
            };
            check_key(key.as_bytes())?;
            groups.push(Group {
                key,
                missing: a.missing,
                buckets: a.buckets,
            });
        }
        groups.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Groups {
            matched: self.matched,
            ungrouped: self.ungrouped,
            groups_total: groups.len() as u32,
            groups,
        })
    }
}

fn check_key(key: &[u8]) -> Result<(), AggregateError> {
    if key.len() > GROUP_KEY_BYTES_MAX {
        return Err(AggregateError::KeyTooLong { bytes: key.len() });
    }
    Ok(())
}

/// The number and the group key of an event's JSON `data` under `plan`, and whether it
/// passes the field filter; `key` is the buffer a field key is written into.
pub fn read_data(plan: &Plan, data: &[u8], key: &mut Vec<u8>) -> Option<(Option<f64>, bool)> {
    if let Some((path, want)) = &plan.filter {
        if !scalar_at(data, path).is_some_and(|s| s.equals(want)) {
            return None;
        }
    }
    let number = match &plan.number {
        Number::Value => None,
        Number::Field(path) => scalar_at(data, path).and_then(|s| s.number()),
    };
    let grouped = match &plan.group_by {
        GroupBy::Field(path) => match scalar_at(data, path) {
            Some(s) => {
                s.write_key(key);
                true
            }
            None => false,
        },
        _ => true,
    };
    Some((number, grouped))
}

/// Folds `from` (another partition's groups of the same plan) into `into`, by key.
pub fn merge(plan: &Plan, into: &mut Groups, from: Groups) -> Result<(), AggregateError> {
    into.matched += from.matched;
    into.ungrouped += from.ungrouped;
    let mut index: HashMap<String, usize> = into
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.key.clone(), i))
        .collect();
    for g in from.groups {
        match index.get(&g.key) {
            Some(&i) => {
                let mine = &mut into.groups[i];
                mine.missing += g.missing;
                for (x, y) in mine.buckets.iter_mut().zip(&g.buckets) {
                    x.merge(y);
                }
            }
            None => {
                if !plan.cells_ok(into.groups.len() + 1) {
                    return Err(plan.too_many_groups());
                }
                index.insert(g.key.clone(), into.groups.len());
                into.groups.push(g);
            }
        }
    }
    into.groups_total = into.groups.len() as u32;
    Ok(())
}

/// Ranks the merged groups: the first `top_k` by `order` (largest first, ties by key), or
/// every group by key without top-K.
pub fn finish(plan: &Plan, mut g: Groups) -> Groups {
    g.groups_total = g.groups.len() as u32;
    if plan.top_k == 0 {
        g.groups.sort_by(|a, b| a.key.cmp(&b.key));
        return g;
    }
    let rank = |x: &Group| {
        let t = x.total();
        match plan.order {
            GroupOrder::Count => t.count as f64,
            GroupOrder::Sum => t.sum,
            // An empty group ranks last.
            GroupOrder::Average if t.count == 0 => f64::NEG_INFINITY,
            GroupOrder::Average => t.average(),
        }
    };
    let mut ranked: Vec<(f64, Group)> = g.groups.into_iter().map(|x| (rank(&x), x)).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
    ranked.truncate(plan.top_k as usize);
    g.groups = ranked.into_iter().map(|(_, x)| x).collect();
    g
}
