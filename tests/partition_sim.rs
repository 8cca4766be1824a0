//! Simulated power loss under the real partition code: the server's `Partition` (stream index,
//! expected versions, idempotency window, in-memory ring, publication in LSN order) over a
//! journal on the deterministic simulated disk. Concurrent producers append batches to a few
//! streams; the disk "loses power" after operation k (unsynced writes dropped, kept or torn at
//! 512-byte sectors, as the seed decides), for every k of the run and several seeds. The
//! partition rebuilt from the crash image must serve every acknowledged event with identical
//! content at its version, no stream may have a gap, and an unacknowledged batch must be whole
//! or absent. Transactions (`Partition::transaction`: appends to three streams and a stream
//! deletion and re-creation, from concurrent producers) must come back whole or not at all,
//! every acknowledged one whole. A failure prints the seed and crash point that reproduce it.
//! Half the producers append as the server's connection loop does when it can
//! (`Partition::try_append_now`, then `finish_append` once the frame settled), the others
//! through `Partition::append`.

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use evring::error::JournalError;
use evring::journal::{JournalConfig, SimStorage};
use evring::protocol::{expected, Direction, StreamId};
use evring::protocol::{AppendResult, Event};
use evring::shard::run_local;
use evring::stream::{AppendNow, IdSpec, Partition, PartitionImage, PartitionLimits, StreamError};

const STORE: [u8; 16] = *b"evring-part-sim!";
const STREAMS: u32 = 3;

fn journal_config() -> JournalConfig {
    common::sim::journal_config(STORE)
}

fn limits() -> PartitionLimits {
    common::sim::limits(1000)
}

async fn open(storage: SimStorage) -> Result<Partition<SimStorage>, String> {
    open_from(storage, None).await
}

/// Opens from a snapshot image (as start-up does with a snapshot file) or from the journal.
async fn open_from(
    storage: SimStorage,
    image: Option<&[u8]>,
) -> Result<Partition<SimStorage>, String> {
    common::sim::open_from(storage, image, journal_config(), limits()).await
}

/// Event data: producer, batch, index in batch, batch size, then filler.
fn data(p: u32, b: u32, j: u32, n: u32) -> Vec<u8> {
    let mut d = format!("{p}/{b}/{j}/{n}/").into_bytes();
    d.extend(std::iter::repeat_n(
        b'a' + (p as u8 % 26),
        ((p * 31 + b * 7) % 500) as usize,
    ));
    d
}

fn parse(d: &[u8]) -> (u32, u32, u32, u32) {
    let text = String::from_utf8_lossy(d);
    let f: Vec<u32> = text
        .split('/')
        .take(4)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0], f[1], f[2], f[3])
}

/// An append placed at once when it can be, as the server's connection loop places one
/// (`try_append_now`, then `finish_append` once its frame settled), or else through
/// `Partition::append`.
async fn append_at_once(
    part: &Partition<SimStorage>,
    stream: &str,
    events: Vec<Event>,
) -> Result<AppendResult, StreamError> {
    match part.try_append_now(stream.to_string(), expected::ANY, events, IdSpec::Auto) {
        AppendNow::Placed(placed) => {
            placed.settled().await;
            part.finish_append(placed).map(|(appended, _)| appended)
        }
        AppendNow::Failed(e) => Err(e),
        AppendNow::Later { stream, events } => part.append(&stream, expected::ANY, events).await,
    }
}

/// Acknowledged: stream → (first version, datas, stream IDs).
type Acked = Rc<RefCell<Vec<(String, u64, Vec<Vec<u8>>, Vec<StreamId>)>>>;

async fn workload(part: &Rc<Partition<SimStorage>>, producers: u32, batches: u32) -> Acked {
    workload_snapshotting(part, producers, batches, None).await
}

/// The newest snapshot image taken during a workload (encoded, as a file would hold it).
type Latest = Rc<RefCell<Option<Vec<u8>>>>;

/// The workload; with `latest`, producer 0 snapshots the partition after each of its
/// acknowledged appends (while the others' appends are in flight).
async fn workload_snapshotting(
    part: &Rc<Partition<SimStorage>>,
    producers: u32,
    batches: u32,
    latest: Option<Latest>,
) -> Acked {
    let acked: Acked = Rc::default();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (part, acked) = (part.clone(), acked.clone());
        let latest = latest.clone().filter(|_| p == 0);
        tasks.push(glommio::spawn_local(async move {
            for b in 0..batches {
                let n = 1 + (p + b) % 3;
                let stream = format!("s{}", (p * 5 + b) % STREAMS);
                let datas: Vec<Vec<u8>> = (0..n).map(|j| data(p, b, j, n)).collect();
                let events = datas
                    .iter()
                    .map(|d| evring::client::event("T", d.clone()))
                    .collect();
                let appended = if p % 2 == 1 {
                    append_at_once(&part, &stream, events).await
                } else {
                    part.append(&stream, expected::ANY, events).await
                };
                match appended {
                    Ok(r) => {
                        let ids = part.stream_ids(&stream, r.first_version..r.last_version + 1);
                        assert_eq!(ids.len(), datas.len());
                        acked
                            .borrow_mut()
                            .push((stream, r.first_version, datas, ids));
                        if let Some(latest) = &latest {
                            *latest.borrow_mut() = Some(part.image().encode());
                        }
                    }
                    // The disk is gone: the journal is poisoned, nothing more is acknowledged.
                    Err(e) => {
                        assert!(
                            matches!(
                                e,
                                StreamError::Journal(
                                    JournalError::Poisoned { .. } | JournalError::Io { .. }
                                )
                            ),
                            "{e}"
                        );
                        return;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    acked
}

async fn check(part: &Partition<SimStorage>, acked: &Acked, seed: u64, crash: u64) {
    let ctx = format!("seed {seed} crash {crash}");
    let mut streams: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut all_ids: HashMap<String, Vec<StreamId>> = HashMap::new();
    for s in 0..STREAMS {
        let name = format!("s{s}");
        let events = match part.read(&name, 0, u32::MAX, Direction::Forward).await {
            Ok((events, end)) => {
                assert!(end, "{ctx}: one read returns the whole stream");
                events
            }
            Err(StreamError::StreamNotFound(_)) => Vec::new(),
            Err(e) => panic!("{ctx}: read {name}: {e:?}"),
        };
        for (v, e) in events.iter().enumerate() {
            assert_eq!(e.stream_version, v as u64, "{ctx}: gap in {name}");
        }
        // Every batch present is whole and contiguous.
        let mut i = 0;
        while i < events.len() {
            let (p, b, j, n) = parse(&events[i].event.data);
            assert_eq!(j, 0, "{ctx}: {name} v{i} starts inside a batch");
            for k in 0..n as usize {
                let e = events.get(i + k).unwrap_or_else(|| {
                    panic!("{ctx}: {name}: batch {p}/{b} cut short at recovery")
                });
                assert_eq!(
                    e.event.data,
                    data(p, b, k as u32, n),
                    "{ctx}: {name} v{}",
                    i + k
                );
            }
            i += n as usize;
        }
        let ids = part.stream_ids(&name, 0..events.len() as u64);
        assert_eq!(ids.len(), events.len(), "{ctx}: {name}: an ID per version");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{ctx}: {name}: IDs grow"
        );
        all_ids.insert(name.clone(), ids);
        streams.insert(name, events.into_iter().map(|e| e.event.data).collect());
    }
    for (stream, first, datas, ids) in acked.borrow().iter() {
        let have = &streams[stream];
        for (k, d) in datas.iter().enumerate() {
            let v = *first as usize + k;
            assert_eq!(
                have.get(v),
                Some(d),
                "{ctx}: acknowledged {stream} v{v} lost or altered"
            );
            assert_eq!(
                all_ids[stream].get(v),
                Some(&ids[k]),
                "{ctx}: acknowledged {stream} v{v}'s stream ID"
            );
        }
    }
}

#[test]
fn every_acknowledged_event_survives_power_loss_at_any_point_under_the_partition() {
    run_local(async {
        let total_ops = {
            let storage = SimStorage::new(1);
            let part = Rc::new(open(storage.clone()).await.unwrap());
            workload(&part, 4, 30).await;
            storage.ops()
        };
        assert!(
            total_ops > 100,
            "workload too small: {total_ops} operations"
        );
        let seeds: u64 = std::env::var("PARTITION_SIM_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20);
        let mut crashes = 0;
        let mut verified = 0usize;
        for seed in 0..seeds {
            let mut crash = 1 + seed % 3;
            while crash <= total_ops + 2 {
                let storage = SimStorage::new(seed);
                storage.faults().crash_after_ops = Some(crash);
                // Odd seeds: completions arrive later, as from the production device.
                storage.faults().defer_completions = seed % 2 == 1;
                let acked = match open(storage.clone()).await {
                    Ok(part) => workload(&Rc::new(part), 4, 30).await,
                    Err(e) => {
                        assert!(
                            e.contains("simulated power loss"),
                            "seed {seed} crash {crash}: {e}"
                        );
                        Rc::default()
                    }
                };
                let image = storage.crash_image();
                let part = open(image.clone())
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed} crash {crash}: recovery: {e}"));
                check(&part, &acked, seed, crash).await;
                verified += acked.borrow().iter().map(|a| a.2.len()).sum::<usize>();
                // The recovered partition takes appends and keeps versions gap-free.
                let part = Rc::new(part);
                let more = workload(&part, 2, 3).await;
                check(&part, &more, seed, crash).await;
                crashes += 1;
                crash += 1 + seed % 3;
            }
        }
        eprintln!(
            "partition power-loss simulation: {seeds} seeds, {crashes} crash points, \
             {verified} acknowledged events verified"
        );
        assert!(crashes > 100);
    });
}

#[test]
fn power_loss_with_snapshots_taken_during_the_load_loses_nothing() {
    // As above, while a task snapshots the partition every few milliseconds of simulated
    // work; recovery starts from the newest snapshot taken before the crash and scans only
    // the journal segments from its resume point (what start-up does with a snapshot file).
    run_local(async {
        let total_ops = {
            let storage = SimStorage::new(1);
            let part = Rc::new(open(storage.clone()).await.unwrap());
            workload(&part, 4, 30).await;
            storage.ops()
        };
        let seeds: u64 = std::env::var("PARTITION_SIM_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20);
        let (mut crashes, mut from_snapshot, mut skipping) = (0, 0, 0);
        for seed in 0..seeds {
            let mut crash = 1 + seed % 3;
            while crash <= total_ops + 2 {
                let storage = SimStorage::new(seed);
                storage.faults().crash_after_ops = Some(crash);
                storage.faults().defer_completions = seed % 2 == 1;
                let latest: Latest = Rc::default();
                let acked = match open(storage.clone()).await {
                    Ok(part) => {
                        workload_snapshotting(&Rc::new(part), 4, 30, Some(latest.clone())).await
                    }
                    Err(e) => {
                        assert!(
                            e.contains("simulated power loss"),
                            "seed {seed} crash {crash}: {e}"
                        );
                        Rc::default()
                    }
                };
                let image = storage.crash_image();
                let snap = latest.borrow().clone();
                if let Some(bytes) = &snap {
                    let image = PartitionImage::decode(bytes).unwrap();
                    from_snapshot += usize::from(image.lsn > 0);
                    skipping += usize::from(image.resume.first_segment > 0);
                }
                let part = open_from(image, snap.as_deref())
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed} crash {crash}: recovery: {e}"));
                check(&part, &acked, seed, crash).await;
                let part = Rc::new(part);
                let more = workload(&part, 2, 3).await;
                check(&part, &more, seed, crash).await;
                crashes += 1;
                crash += 1 + seed % 3;
            }
        }
        eprintln!(
            "with snapshots: {crashes} crash points, {from_snapshot} recovered from a non-empty \
             snapshot, {skipping} of them skipping whole segments"
        );
        assert!(from_snapshot > crashes / 2, "{from_snapshot} of {crashes}");
        assert!(skipping > crashes / 4, "{skipping} of {crashes}");
    });
}

/// A transaction's marker: producer, transaction, and which of its `TX_STREAMS` writes.
fn tx_data(p: u32, t: u32, k: u32) -> Vec<u8> {
    let mut d = format!("tx/{p}/{t}/{k}/").into_bytes();
    d.extend(std::iter::repeat_n(
        b'x',
        300 + ((p * 13 + t * 7) % 200) as usize,
    ));
    d
}

const TX_STREAMS: u32 = 3;

/// Producers run transactions of one event to each of `TX_STREAMS` streams plus a trim of a
/// fourth; returns the transactions acknowledged (producer, transaction).
async fn tx_workload(
    part: &Rc<Partition<SimStorage>>,
    producers: u32,
    txs: u32,
) -> Vec<(u32, u32)> {
    use evring::stream::{ChangeRequest, IdSpec, TxWrite};
    let acked: Rc<RefCell<Vec<(u32, u32)>>> = Rc::default();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (part, acked) = (part.clone(), acked.clone());
        tasks.push(glommio::spawn_local(async move {
            for t in 0..txs {
                let mut writes: Vec<TxWrite> = (0..TX_STREAMS)
                    .map(|k| TxWrite::Append {
                        stream: format!("t{k}"),
                        expected_version: expected::ANY,
                        events: vec![evring::client::event("T", tx_data(p, t, k))],
                        id: IdSpec::Auto,
                    })
                    .collect();
                writes.push(TxWrite::Change {
                    stream: "t0".into(),
                    request: ChangeRequest::DeleteStream,
                });
                writes.push(TxWrite::Append {
                    stream: "t0".into(),
                    expected_version: expected::NO_STREAM,
                    events: vec![evring::client::event("T", tx_data(p, t, 0))],
                    id: IdSpec::Auto,
                });
                let results = part.transaction(writes).await;
                if results.iter().all(|r| r.is_ok()) {
                    acked.borrow_mut().push((p, t));
                } else {
                    // The disk is gone: the journal is poisoned (a write placed after the
                    // failure may fail otherwise: the deletion before it was not placed).
                    assert!(
                        results.iter().any(|r| matches!(
                            r,
                            Err(StreamError::Journal(
                                JournalError::Poisoned { .. } | JournalError::Io { .. }
                            ))
                        )),
                        "{results:?}"
                    );
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    Rc::try_unwrap(acked).unwrap().into_inner()
}

/// Every transaction present after recovery is whole: its event in each stream (t0, which
/// each transaction deletes and writes again, holds the last transaction's only).
async fn check_tx(part: &Partition<SimStorage>, acked: &[(u32, u32)], ctx: &str) {
    let mut present: HashMap<(u32, u32), u32> = HashMap::new();
    let mut last_t0 = None;
    for k in 0..TX_STREAMS {
        let name = format!("t{k}");
        let events = match part.read(&name, 0, u32::MAX, Direction::Forward).await {
            Ok((events, _)) => events,
            Err(StreamError::StreamNotFound(_)) => Vec::new(),
            Err(e) => panic!("{ctx}: read {name}: {e:?}"),
        };
        if k == 0 {
            assert!(events.len() <= 1, "{ctx}: t0 holds {} events", events.len());
        }
        for e in events {
            let text = String::from_utf8_lossy(&e.event.data).into_owned();
            let f: Vec<u32> = text
                .split('/')
                .skip(1)
                .take(3)
                .map(|x| x.parse().unwrap())
                .collect();
            assert_eq!(
                e.event.data,
                tx_data(f[0], f[1], f[2]),
                "{ctx}: {name} altered"
            );
            if k == 0 {
                last_t0 = Some((f[0], f[1]));
            } else {
                *present.entry((f[0], f[1])).or_default() += 1;
            }
        }
    }
    for (&tx, &n) in &present {
        assert_eq!(
            n,
            TX_STREAMS - 1,
            "{ctx}: transaction {tx:?} is in {n} of t1, t2"
        );
    }
    if let Some(tx) = last_t0 {
        assert!(
            present.contains_key(&tx),
            "{ctx}: t0's transaction {tx:?} is not in t1, t2"
        );
    }
    for tx in acked {
        assert!(
            present.contains_key(tx),
            "{ctx}: acknowledged transaction {tx:?} lost"
        );
    }
}

#[test]
fn a_transaction_survives_power_loss_whole_or_not_at_all() {
    run_local(async {
        let total_ops = {
            let storage = SimStorage::new(1);
            let part = Rc::new(open(storage.clone()).await.unwrap());
            tx_workload(&part, 3, 12).await;
            storage.ops()
        };
        let mut crashes = 0;
        let mut acked_total = 0;
        for seed in 0..6u64 {
            let mut crash = 1 + seed % 2;
            while crash <= total_ops + 2 {
                let ctx = format!("seed {seed} crash {crash}");
                let storage = SimStorage::new(seed);
                storage.faults().crash_after_ops = Some(crash);
                storage.faults().defer_completions = seed % 2 == 1;
                let acked = match open(storage.clone()).await {
                    Ok(part) => tx_workload(&Rc::new(part), 3, 12).await,
                    Err(e) => {
                        assert!(e.contains("simulated power loss"), "{ctx}: {e}");
                        Vec::new()
                    }
                };
                let part = open(storage.crash_image())
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: recovery: {e}"));
                check_tx(&part, &acked, &ctx).await;
                acked_total += acked.len();
                crashes += 1;
                crash += 1 + seed % 2;
            }
        }
        eprintln!(
            "transactions under power loss: {crashes} crash points, {acked_total} acknowledged \
             transactions verified whole"
        );
        assert!(crashes > 50);
    });
}
