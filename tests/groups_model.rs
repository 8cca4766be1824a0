//! Consumer groups against a reference model, on the real `Partition` over the simulated
//! journal device. Seeded random batches of commands — appends, XDEL-like deletions, stream
//! deletions, XGROUP CREATE/SETID/DESTROY/CREATECONSUMER/DELCONSUMER, XREADGROUP `>` (with
//! and without NOACK) and history reads, XACK, XCLAIM and XAUTOCLAIM (min idle 0) — go through
//! `Partition::transaction`; each answer is checked against the model (plain maps: a group's
//! last ID, entries-read counter, pending entries with consumer and delivery count, consumers
//! and their pending sets). After each batch the partition is rebuilt — from the journal, or
//! from a snapshot image taken at a random point of the batch and the journal after it — and
//! its groups must equal exactly what they were before (delivery and seen times included:
//! recovery restores the state exactly) and what the model says.
//!
//! And power loss: a single client runs transactions of several group commands; the disk
//! loses power after operation k, for every k. The groups recovered are those after the last
//! acknowledged transaction, or after the one in flight, whole.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use evring::journal::{JournalConfig, SimStorage};
use evring::protocol::{expected, StreamId};
use evring::shard::run_local;
use evring::stream::{
    ChangeRequest, GroupDone, GroupError, GroupRequest, GroupStart, IdSpec, Partition,
    PartitionLimits, StreamError, StreamGroups, TxDone, TxWrite,
};

const STORE: [u8; 16] = *b"evring-grp-model";
const STREAMS: [&str; 2] = ["a", "b"];
const GROUPS: [&[u8]; 2] = [b"g1", b"g2"];
const CONSUMERS: [&[u8]; 3] = [b"alice", b"bob", b"carol"];

fn journal_config() -> JournalConfig {
    common::sim::journal_config(STORE)
}

fn limits() -> PartitionLimits {
    common::sim::limits(100)
}

/// Opens the partition on `storage`: from a snapshot image and the journal after it, or
/// from the journal alone (what start-up does).
async fn open(storage: SimStorage, image: Option<&[u8]>) -> Result<Partition<SimStorage>, String> {
    common::sim::open_from(storage, image, journal_config(), limits()).await
}

/// xorshift64*: the test's seeded randomness.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MGroup {
    last_id: StreamId,
    entries_read: Option<u64>,
    /// ID → (consumer, deliveries).
    pel: BTreeMap<StreamId, (Vec<u8>, u64)>,
    consumers: BTreeMap<Vec<u8>, BTreeSet<StreamId>>,
}

#[derive(Clone, Debug, Default)]
struct MStream {
    /// Every entry ever appended (since the stream's creation), in order, and whether it is
    /// deleted.
    entries: Vec<(StreamId, bool)>,
    max_deleted: StreamId,
    created: bool,
    groups: BTreeMap<Vec<u8>, MGroup>,
}

impl MStream {
    fn exists(&self) -> bool {
        !self.entries.is_empty() || self.created
    }
    fn live(&self, id: StreamId) -> bool {
        self.entries.iter().any(|&(i, deleted)| i == id && !deleted)
    }
    fn length(&self) -> u64 {
        self.entries.iter().filter(|e| !e.1).count() as u64
    }
    fn last_id(&self) -> StreamId {
        self.entries.last().map_or(StreamId::ZERO, |e| e.0)
    }
    fn first_id(&self) -> StreamId {
        self.entries
            .iter()
            .find(|e| !e.1)
            .map_or(StreamId::ZERO, |e| e.0)
    }
    fn added(&self) -> u64 {
        self.entries.len() as u64
    }
    // Redis 7.0's `streamRangeHasTombstones` (no end) and
    // `streamEstimateDistanceFromFirstEverEntry`, over the model.
    fn tombstones_from(&self, start: StreamId) -> bool {
        if self.length() == 0 || self.max_deleted == StreamId::ZERO {
            return false;
        }
        if self.first_id() > self.max_deleted {
            return false;
        }
        start <= self.max_deleted
    }
    fn estimate(&self, id: StreamId) -> Option<u64> {
        if self.added() == 0 {
            return Some(0);
        }
        if self.length() == 0 && id <= self.last_id() {
            return Some(self.added());
        }
        if id == self.last_id() {
            return Some(self.added());
        }
        if id > self.last_id() {
            return None;
        }
        if self.max_deleted == StreamId::ZERO || self.max_deleted < self.first_id() {
            if id < self.first_id() {
                return Some(self.added() - self.length());
            }
            if id == self.first_id() {
                return Some(self.added() - self.length() + 1);
            }
        }
        None
    }
}

impl MGroup {
    fn pend(&mut self, consumer: &[u8], id: StreamId, count: u64) {
        if let Some((old, _)) = self.pel.get(&id) {
            if let Some(set) = self.consumers.get_mut(old) {
                set.remove(&id);
            }
        }
        self.pel.insert(id, (consumer.to_vec(), count));
        self.consumers
            .entry(consumer.to_vec())
            .or_default()
            .insert(id);
    }
    fn unpend(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some((c, _)) => {
                if let Some(set) = self.consumers.get_mut(&c) {
                    set.remove(&id);
                }
                true
            }
            None => false,
        }
    }
}

/// What the model expects a command to answer (errors by kind).
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Count(u64),
    Read(bool, Vec<(StreamId, bool)>),
    Claimed(Vec<StreamId>),
    AutoClaimed(StreamId, Vec<StreamId>, Vec<StreamId>),
    Appended(usize),
    Changed(u64),
    Error(String),
}

fn answer_of(r: &Result<TxDone, StreamError>) -> Answer {
    match r {
        Ok(TxDone::Appended { ids, .. }) => Answer::Appended(ids.len()),
        Ok(TxDone::Changed(n)) => Answer::Changed(*n),
        Ok(TxDone::Group(d)) => match d {
            GroupDone::Ok => Answer::Ok,
            GroupDone::Count(n) => Answer::Count(*n),
            GroupDone::Read { served, entries } => Answer::Read(
                *served,
                entries.iter().map(|(i, lsn)| (*i, lsn.is_some())).collect(),
            ),
            GroupDone::Claimed(e) => Answer::Claimed(e.iter().map(|(i, _)| *i).collect()),
            GroupDone::AutoClaimed {
                next,
                entries,
                deleted,
            } => Answer::AutoClaimed(
                *next,
                entries.iter().map(|(i, _)| *i).collect(),
                deleted.clone(),
            ),
        },
        Err(StreamError::Group(e)) => Answer::Error(format!("{e:?}")),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn group_error(e: GroupError) -> Answer {
    Answer::Error(format!("{e:?}"))
}

#[derive(Clone, Default)]
struct Model {
    streams: BTreeMap<String, MStream>,
}

impl Model {
    /// Applies a group command; returns its answer.
    fn group(&mut self, stream: &str, req: &GroupRequest) -> Answer {
        let s = self.streams.entry(stream.to_string()).or_default();
        if let GroupRequest::Create {
            group,
            start,
            mkstream,
            entries_read,
        } = req
        {
            if !s.exists() && !mkstream {
                return group_error(GroupError::NoStream);
            }
            if s.groups.contains_key(group) {
                return group_error(GroupError::GroupExists);
            }
            let last_id = match start {
                GroupStart::Id(i) => *i,
                GroupStart::Last => s.last_id(),
            };
            s.created = true;
            s.groups.insert(
                group.clone(),
                MGroup {
                    last_id,
                    entries_read: *entries_read,
                    ..MGroup::default()
                },
            );
            return Answer::Ok;
        }
        if !s.exists() {
            return match req {
                GroupRequest::Ack { .. } => Answer::Count(0),
                GroupRequest::Destroy { .. }
                | GroupRequest::SetId { .. }
                | GroupRequest::CreateConsumer { .. }
                | GroupRequest::DeleteConsumer { .. } => group_error(GroupError::NoStream),
                _ => group_error(GroupError::NoGroup),
            };
        }
        let snapshot = s.clone();
        let Some(g) = s.groups.get_mut(req.group()) else {
            return match req {
                GroupRequest::Destroy { .. } | GroupRequest::Ack { .. } => Answer::Count(0),
                _ => group_error(GroupError::NoGroup),
            };
        };
        match req {
            GroupRequest::Create { .. } | GroupRequest::Set { .. } => {
                unreachable!("not generated")
            }
            GroupRequest::SetId {
                start,
                entries_read,
                ..
            } => {
                g.last_id = match start {
                    GroupStart::Id(i) => *i,
                    GroupStart::Last => snapshot.last_id(),
                };
                g.entries_read = *entries_read;
                Answer::Ok
            }
            GroupRequest::Destroy { group } => {
                s.groups.remove(group);
                Answer::Count(1)
            }
            GroupRequest::CreateConsumer { consumer, .. } => {
                if g.consumers.contains_key(consumer) {
                    return Answer::Count(0);
                }
                g.consumers.insert(consumer.clone(), BTreeSet::new());
                Answer::Count(1)
            }
            GroupRequest::DeleteConsumer { consumer, .. } => match g.consumers.remove(consumer) {
                None => Answer::Count(0),
                Some(ids) => {
                    for i in &ids {
                        g.pel.remove(i);
                    }
                    Answer::Count(ids.len() as u64)
                }
            },
            GroupRequest::Ack { ids, .. } => {
                let n = ids.iter().filter(|i| g.unpend(**i)).count();
                Answer::Count(n as u64)
            }
            GroupRequest::Read {
                consumer,
                after: None,
                count,
                noack,
                ..
            } => {
                let ids: Vec<StreamId> = snapshot
                    .entries
                    .iter()
                    .filter(|(i, deleted)| *i > g.last_id && !deleted)
                    .map(|e| e.0)
                    .take(*count)
                    .collect();
                if ids.is_empty() {
                    return Answer::Read(false, Vec::new());
                }
                g.consumers.entry(consumer.clone()).or_default();
                for &i in &ids {
                    if i > g.last_id {
                        g.entries_read = match g.entries_read {
                            Some(n) if !snapshot.tombstones_from(i) => Some(n + 1),
                            _ if snapshot.added() != 0 => snapshot.estimate(i),
                            other => other,
                        };
                        g.last_id = i;
                    }
                    if !noack {
                        g.pend(consumer, i, 1);
                    }
                }
                Answer::Read(true, ids.into_iter().map(|i| (i, true)).collect())
            }
            GroupRequest::Read {
                consumer,
                after: Some(after),
                count,
                ..
            } => {
                let Some(mine) = g.consumers.get(consumer).cloned() else {
                    g.consumers.insert(consumer.clone(), BTreeSet::new());
                    return Answer::Read(true, Vec::new());
                };
                let mut out = Vec::new();
                for i in mine.into_iter().filter(|i| i > after).take(*count) {
                    let live = snapshot.live(i);
                    if live {
                        let n = g.pel[&i].1 + 1;
                        g.pend(consumer, i, n);
                    }
                    out.push((i, live));
                }
                Answer::Read(true, out)
            }
            GroupRequest::Claim {
                consumer,
                ids,
                just_id,
                ..
            } => {
                let mut claimed = Vec::new();
                let mut seen = BTreeSet::new();
                for &i in ids {
                    if !seen.insert(i) {
                        continue;
                    }
                    if !snapshot.live(i) {
                        g.unpend(i);
                        continue;
                    }
                    let Some((_, n)) = g.pel.get(&i).cloned() else {
                        continue;
                    };
                    g.pend(consumer, i, if *just_id { n } else { n + 1 });
                    claimed.push(i);
                }
                Answer::Claimed(claimed)
            }
            GroupRequest::AutoClaim {
                consumer,
                start,
                count,
                just_id,
                ..
            } => {
                let candidates: Vec<(StreamId, u64)> =
                    g.pel.range(*start..).map(|(i, p)| (*i, p.1)).collect();
                let examined = candidates.len().min(*count);
                let next = candidates.get(examined).map_or(StreamId::ZERO, |c| c.0);
                let (mut claimed, mut deleted) = (Vec::new(), Vec::new());
                for &(i, n) in &candidates[..examined] {
                    if snapshot.live(i) {
                        g.pend(consumer, i, if *just_id { n } else { n + 1 });
                        claimed.push(i);
                    } else {
                        g.unpend(i);
                        deleted.push(i);
                    }
                }
                Answer::AutoClaimed(next, claimed, deleted)
            }
        }
    }

    /// The groups the model has: those `groups_of` must show, times left out.
    fn groups(&self, stream: &str) -> Option<Shape> {
        let s = self.streams.get(stream).filter(|s| s.exists())?;
        Some(
            s.groups
                .iter()
                .map(|(name, g)| (name.clone(), g.clone()))
                .collect(),
        )
    }
}

type Shape = BTreeMap<Vec<u8>, MGroup>;

/// The partition's groups in the model's shape (times left out).
fn shape(g: &StreamGroups) -> Shape {
    g.groups
        .iter()
        .map(|(name, g)| {
            (
                name.clone(),
                MGroup {
                    last_id: g.last_id,
                    entries_read: g.entries_read,
                    pel: g
                        .pending
                        .iter()
                        .map(|(i, p)| (*i, (p.consumer.to_vec(), p.delivery_count)))
                        .collect(),
                    consumers: g
                        .consumers
                        .iter()
                        .map(|(n, c)| (n.clone(), c.pending.clone()))
                        .collect(),
                },
            )
        })
        .collect()
}

/// Every stream's groups exactly (times included), to compare across a restart.
fn exact(part: &Partition<SimStorage>) -> Vec<Option<StreamGroups>> {
    STREAMS
        .iter()
        .map(|s| part.groups_of(s, |g, _| g.clone()))
        .collect()
}

fn compare(part: &Partition<SimStorage>, model: &Model, ctx: &str) {
    for s in STREAMS {
        let have = part.groups_of(s, |g, _| {
            g.check();
            shape(g)
        });
        assert_eq!(have, model.groups(s), "{ctx}: stream {s}'s groups");
    }
}

// ---------------------------------------------------------------------------------------
// Random commands.

/// Some IDs of the stream: live, deleted, pending, made up.
fn some_ids(rng: &mut Rng, model: &Model, stream: &str, group: &[u8]) -> Vec<StreamId> {
    let s = model.streams.get(stream);
    let mut pool: Vec<StreamId> = s
        .map(|s| s.entries.iter().map(|e| e.0).collect())
        .unwrap_or_default();
    if let Some(g) = s.and_then(|s| s.groups.get(group)) {
        pool.extend(g.pel.keys().copied());
        pool.extend(g.pel.keys().copied());
    }
    pool.push(StreamId::new(1, 1));
    let n = 1 + rng.below(4);
    (0..n).map(|_| *rng.pick(&pool)).collect()
}

/// A random write; a stream deletion only `alone` in its transaction (the model applies a
/// transaction's appends last).
fn random_write(rng: &mut Rng, model: &Model, seq: &mut u64, alone: bool) -> TxWrite {
    let stream = rng.pick(&STREAMS).to_string();
    let group = rng.pick(&GROUPS).to_vec();
    let consumer = rng.pick(&CONSUMERS).to_vec();
    let ids = some_ids(rng, model, &stream, &group);
    let one_id = if rng.chance(30) {
        StreamId::ZERO
    } else {
        ids[0]
    };
    let request = match rng.below(100) {
        0..=24 => {
            let n = 1 + rng.below(4);
            let events = (0..n)
                .map(|_| {
                    *seq += 1;
                    evring::client::event("T", format!("e{seq}").into_bytes())
                })
                .collect();
            return TxWrite::Append {
                stream,
                expected_version: expected::ANY,
                events,
                id: IdSpec::Auto,
            };
        }
        25..=31 => {
            return TxWrite::Change {
                stream,
                request: ChangeRequest::Ids(ids),
            };
        }
        32 if alone => {
            return TxWrite::Change {
                stream,
                request: ChangeRequest::DeleteStream,
            }
        }
        33..=38 => GroupRequest::Create {
            group,
            start: if rng.chance(50) {
                GroupStart::Last
            } else {
                GroupStart::Id(one_id)
            },
            mkstream: rng.chance(50),
            entries_read: rng.chance(20).then(|| rng.below(10)),
        },
        39..=41 => GroupRequest::SetId {
            group,
            start: if rng.chance(30) {
                GroupStart::Last
            } else {
                GroupStart::Id(one_id)
            },
            entries_read: rng.chance(30).then(|| rng.below(10)),
        },
        42..=43 => GroupRequest::Destroy { group },
        44..=46 => GroupRequest::CreateConsumer { group, consumer },
        47..=49 => GroupRequest::DeleteConsumer { group, consumer },
        50..=69 => GroupRequest::Read {
            group,
            consumer,
            after: None,
            count: 1 + rng.below(4) as usize,
            noack: rng.chance(15),
        },
        70..=76 => GroupRequest::Read {
            group,
            consumer,
            after: Some(if rng.chance(60) {
                StreamId::ZERO
            } else {
                one_id
            }),
            count: 1 + rng.below(4) as usize,
            noack: false,
        },
        77..=86 => GroupRequest::Ack { ids, group },
        87..=93 => GroupRequest::Claim {
            ids,
            group,
            consumer,
            min_idle_ms: 0,
            time: None,
            retry_count: None,
            force: false,
            just_id: rng.chance(30),
            last_id: None,
        },
        _ => GroupRequest::AutoClaim {
            group,
            consumer,
            min_idle_ms: 0,
            start: if rng.chance(60) {
                StreamId::ZERO
            } else {
                one_id
            },
            count: 1 + rng.below(4) as usize,
            just_id: rng.chance(30),
        },
    };
    TxWrite::Group { stream, request }
}

/// Applies a write's result to the model and returns what the model expects of it. Appends
/// take their IDs from the result (the clock chooses them).
fn model_write(model: &mut Model, w: &TxWrite, result: &Result<TxDone, StreamError>) -> Answer {
    match w {
        TxWrite::Append { stream, .. } => {
            let Ok(TxDone::Appended { ids, .. }) = result else {
                panic!("append failed: {result:?}");
            };
            let s = model.streams.entry(stream.clone()).or_default();
            s.entries.extend(ids.iter().map(|i| (*i, false)));
            Answer::Appended(ids.len())
        }
        TxWrite::Change {
            stream,
            request: ChangeRequest::Ids(ids),
        } => {
            let s = model.streams.entry(stream.clone()).or_default();
            let mut n = 0;
            let ids: BTreeSet<StreamId> = ids.iter().copied().collect();
            for e in &mut s.entries {
                if ids.contains(&e.0) && !e.1 {
                    e.1 = true;
                    s.max_deleted = s.max_deleted.max(e.0);
                    n += 1;
                }
            }
            Answer::Changed(n)
        }
        TxWrite::Change {
            stream,
            request: ChangeRequest::DeleteStream,
        } => {
            // DEL answers 1 for a stream that existed.
            let n = model.streams.remove(stream).is_some_and(|s| s.exists());
            Answer::Changed(u64::from(n))
        }
        TxWrite::Change { .. } | TxWrite::AddMembers { .. } => unreachable!("not generated"),
        TxWrite::Group { stream, request } => model.group(stream, request),
    }
}

/// Applies a transaction's results to the model; returns what the model expects of each
/// write. The transaction's appends become visible once it is durable, after its other
/// writes were resolved: the model applies them last.
fn model_tx(
    model: &mut Model,
    writes: &[TxWrite],
    results: &[Result<TxDone, StreamError>],
) -> Vec<Answer> {
    let mut answers: Vec<Option<Answer>> = writes.iter().map(|_| None).collect();
    for (k, (w, r)) in writes.iter().zip(results).enumerate() {
        if !matches!(w, TxWrite::Append { .. }) {
            answers[k] = Some(model_write(model, w, r));
        }
    }
    for (k, (w, r)) in writes.iter().zip(results).enumerate() {
        if matches!(w, TxWrite::Append { .. }) {
            answers[k] = Some(model_write(model, w, r));
        }
    }
    answers.into_iter().map(Option::unwrap).collect()
}

/// Runs `writes` as one transaction; checks each answer against the model.
async fn run_tx(part: &Partition<SimStorage>, model: &mut Model, writes: Vec<TxWrite>, ctx: &str) {
    let kept: Vec<TxWrite> = writes.to_vec();
    let results = part.transaction(writes).await;
    if std::env::var_os("GROUPS_MODEL_TRACE").is_some() {
        eprintln!("{ctx}: {kept:?} -> {results:?}");
    }
    let want = model_tx(model, &kept, &results);
    for ((w, r), want) in kept.iter().zip(&results).zip(want) {
        assert_eq!(answer_of(r), want, "{ctx}: {w:?}");
    }
}

#[test]
fn groups_follow_the_model_and_recovery_restores_them_exactly() {
    run_local(async {
        let seeds: u64 = std::env::var("GROUPS_MODEL_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        let (mut commands, mut restarts, mut from_snapshot) = (0, 0, 0);
        for seed in 0..seeds {
            let mut rng = Rng::new(seed);
            let mut storage = SimStorage::new(seed);
            let mut part = open(storage.clone(), None).await.unwrap();
            let mut model = Model::default();
            let mut seq = 0;
            for batch in 0..25 {
                let ctx = format!("seed {seed} batch {batch}");
                let n = 5 + rng.below(20);
                let snap_at = rng.chance(50).then(|| rng.below(n));
                let mut image = None;
                for k in 0..n {
                    if snap_at == Some(k) {
                        if std::env::var_os("GROUPS_MODEL_TRACE").is_some() {
                            eprintln!("{ctx}: snapshot at published LSN {}", part.published_lsn());
                        }
                        image = Some(part.image().encode());
                    }
                    // Mostly one command at a time; sometimes a few in one transaction.
                    let n = if rng.chance(15) { 3 } else { 1 };
                    let writes: Vec<TxWrite> = (0..n)
                        .map(|_| random_write(&mut rng, &model, &mut seq, n == 1))
                        .collect();
                    commands += writes.len();
                    run_tx(&part, &mut model, writes, &format!("{ctx} command {k}")).await;
                    compare(&part, &model, &format!("{ctx} after command {k}"));
                }
                let before = exact(&part);
                drop(part);
                // Every write was acknowledged (durable): the crash image holds them all.
                storage = storage.crash_image();
                part = open(storage.clone(), image.as_deref())
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: recovery: {e}"));
                restarts += 1;
                from_snapshot += usize::from(image.is_some());
                let how = if image.is_some() {
                    "a snapshot and the journal"
                } else {
                    "the journal"
                };
                assert_eq!(exact(&part), before, "{ctx}: recovered from {how}");
                compare(&part, &model, &format!("{ctx}: recovered from {how}"));
            }
        }
        eprintln!(
            "groups model: {seeds} seeds, {commands} commands, {restarts} restarts \
             ({from_snapshot} from a snapshot)"
        );
        assert!(from_snapshot > 0 && restarts > from_snapshot);
    });
}

/// The power-loss workload's transactions, from one seed: an append of 3 entries, the
/// group's creation (first two), a read `>`, then an acknowledgement and a claim of pending
/// entries. Returns the model after each acknowledged transaction (the first: empty) and
/// the transaction in flight when the disk failed.
async fn power_workload(
    part: &Partition<SimStorage>,
    ctx: &str,
) -> (Vec<Model>, Option<Vec<TxWrite>>) {
    let mut model = Model::default();
    let mut acked = vec![model.clone()];
    let mut rng = Rng::new(7);
    for t in 0..POWER_TXS {
        let stream = *rng.pick(&STREAMS);
        let group = || b"g".to_vec();
        let mut writes = vec![TxWrite::Append {
            stream: stream.into(),
            expected_version: expected::ANY,
            events: (0..3)
                .map(|j| evring::client::event("T", format!("{t}/{j}").into_bytes()))
                .collect(),
            id: IdSpec::Auto,
        }];
        if t < 2 {
            writes.push(TxWrite::Group {
                stream: stream.into(),
                request: GroupRequest::Create {
                    group: group(),
                    start: GroupStart::Id(StreamId::ZERO),
                    mkstream: true,
                    entries_read: None,
                },
            });
        }
        let consumer = rng.pick(&CONSUMERS).to_vec();
        writes.push(TxWrite::Group {
            stream: stream.into(),
            request: GroupRequest::Read {
                group: group(),
                consumer: consumer.clone(),
                after: None,
                count: 2,
                noack: false,
            },
        });
        let pel: Vec<StreamId> = model
            .streams
            .get(stream)
            .and_then(|s| s.groups.get(&b"g"[..]))
            .map(|g| g.pel.keys().copied().collect())
            .unwrap_or_default();
        if !pel.is_empty() {
            writes.push(TxWrite::Group {
                stream: stream.into(),
                request: GroupRequest::Ack {
                    group: group(),
                    ids: vec![*rng.pick(&pel)],
                },
            });
            writes.push(TxWrite::Group {
                stream: stream.into(),
                request: GroupRequest::Claim {
                    group: group(),
                    consumer,
                    min_idle_ms: 0,
                    ids: vec![*rng.pick(&pel)],
                    time: None,
                    retry_count: None,
                    force: false,
                    just_id: false,
                    last_id: None,
                },
            });
        }
        let kept: Vec<TxWrite> = writes.to_vec();
        let results = part.transaction(writes).await;
        if results.iter().any(|r| r.is_err()) {
            // The disk is gone: nothing of it was acknowledged.
            assert!(
                results
                    .iter()
                    .any(|r| matches!(r, Err(StreamError::Journal(_)))),
                "{ctx}: {results:?}"
            );
            return (acked, Some(kept));
        }
        let want = model_tx(&mut model, &kept, &results);
        for ((w, r), want) in kept.iter().zip(&results).zip(want) {
            assert_eq!(answer_of(r), want, "{ctx}: transaction {t}: {w:?}");
        }
        acked.push(model.clone());
    }
    (acked, None)
}

const POWER_TXS: u64 = 40;

#[test]
fn acknowledged_group_changes_survive_power_loss_and_the_rest_is_whole_or_absent() {
    run_local(async {
        let total_ops = {
            let storage = SimStorage::new(1);
            let part = open(storage.clone(), None).await.unwrap();
            let (acked, failed) = power_workload(&part, "dry run").await;
            assert!(failed.is_none() && acked.len() == POWER_TXS as usize + 1);
            storage.ops()
        };
        let (mut crashes, mut whole, mut absent) = (0, 0, 0);
        for seed in 0..4u64 {
            let mut crash = 1 + seed;
            while crash <= total_ops + 2 {
                let ctx = format!("seed {seed} crash {crash}");
                let storage = SimStorage::new(seed);
                storage.faults().crash_after_ops = Some(crash);
                storage.faults().defer_completions = seed % 2 == 1;
                let (acked, in_flight) = match open(storage.clone(), None).await {
                    Ok(part) => power_workload(&part, &ctx).await,
                    Err(_) => (vec![Model::default()], None),
                };
                let part = open(storage.crash_image(), None)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: recovery: {e}"));
                let groups_of = |m: &Model| -> Vec<Option<Shape>> {
                    STREAMS.iter().map(|s| m.groups(s)).collect()
                };
                let have: Vec<Option<Shape>> = STREAMS
                    .iter()
                    .map(|s| part.groups_of(s, |g, _| shape(g)))
                    .collect();
                let last = acked.last().unwrap();
                // Did the transaction in flight come back? Its append's entries say so: then
                // the model after it, its appended IDs taken from the recovered stream.
                let mut after = None;
                if let Some(writes) = &in_flight {
                    let Some(TxWrite::Append { stream, .. }) = writes.first() else {
                        unreachable!("every transaction starts with its append")
                    };
                    let known = last.streams.get(stream).map_or(0, |s| s.entries.len());
                    let ids = part.stream_ids(stream, 0..u64::MAX);
                    assert!(
                        ids.len() == known || ids.len() == known + 3,
                        "{ctx}: {stream} holds {} entries, acknowledged {known}: the \
                         transaction in flight came back in part",
                        ids.len()
                    );
                    if ids.len() == known + 3 {
                        let mut m = last.clone();
                        let results: Vec<Result<TxDone, StreamError>> = writes
                            .iter()
                            .map(|w| match w {
                                TxWrite::Append { .. } => Ok(TxDone::Appended {
                                    result: evring::protocol::AppendResult {
                                        first_version: known as u64,
                                        last_version: known as u64 + 2,
                                        partition: 0,
                                        lsn: 0,
                                    },
                                    ids: ids[known..].to_vec(),
                                    live: 0,
                                }),
                                _ => Err(StreamError::EmptyStreamName),
                            })
                            .collect();
                        model_tx(&mut m, writes, &results);
                        after = Some(m);
                    }
                }
                match &after {
                    None => {
                        assert_eq!(have, groups_of(last), "{ctx}: the last acknowledged state");
                        absent += usize::from(in_flight.is_some());
                    }
                    Some(m) => {
                        assert_eq!(
                            have,
                            groups_of(m),
                            "{ctx}: the transaction in flight, whole"
                        );
                        whole += 1;
                    }
                }
                crashes += 1;
                crash += 1 + seed;
            }
        }
        eprintln!(
            "group power loss: {crashes} crash points; the transaction in flight came back \
             whole {whole} times, was absent {absent} times"
        );
        assert!(crashes > 50 && whole > 0 && absent > 0);
    });
}
