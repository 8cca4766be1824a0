//! The real journal code on the simulated disk: crashes at every step, torn tails, bit flips,
//! misdirected writes, EIO and ENOSPC.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::rc::Rc;

use evring::error::JournalError;
use evring::journal::{Journal, JournalConfig, OwnedRecord, RecordRef, SimStorage};
use evring::shard::run_local;

const STORE: [u8; 16] = *b"evring-sim-store";

fn small_config() -> JournalConfig {
    let mut cfg = JournalConfig::new(STORE, 0);
    // Every frame as soon as the pipeline has room: the most frames in flight at a crash.
    cfg.pipeline_min_bytes = 0;
    cfg.segment_bytes = 128 * 1024;
    cfg.frame_bytes_max = 16 * 1024;
    cfg.in_flight_max = 4;
    cfg
}

/// Deterministic content of record `j` of batch `i` of producer `p`.
fn payload(p: u32, i: u32, j: u32, n: u32) -> Vec<u8> {
    let mut data = format!("p{p}-i{i}-j{j}-n{n}-").into_bytes();
    // Producers from 10 on write records of 2–5 KB, so frames often leave the end of a
    // 16 KiB-frame segment unused.
    let spread = (p * 7 + i * 13 + j * 3) as usize;
    let extra = if p >= 10 {
        2000 + spread * 37 % 3000
    } else {
        spread % 300
    };
    data.extend((0..extra).map(|k| (k as u8).wrapping_mul(31).wrapping_add(p as u8)));
    data
}

fn parse(data: &[u8]) -> (u32, u32, u32, u32) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('-');
    let mut num = |prefix: char| -> u32 {
        let part = parts.next().expect("field");
        part.strip_prefix(prefix)
            .expect("prefix")
            .parse()
            .expect("number")
    };
    (num('p'), num('i'), num('j'), num('n'))
}

type Acked = Rc<RefCell<Vec<(u32, u32, u64, u64)>>>;

/// Runs `producers` concurrent producers, each appending `batches` batches of 1..=3 records,
/// and returns what was acknowledged: (producer, batch, first_lsn, last_lsn).
async fn workload(journal: &Journal<SimStorage>, producers: u32, batches: u32) -> Acked {
    workload_with(journal, 0..producers, batches, |_, _, _| async {}).await
}

/// [`workload`] with the producers numbered `producers` (so that a second run after a
/// recovery writes records of its own, told apart from the first run's by their content).
async fn workload_of(
    journal: &Journal<SimStorage>,
    producers: std::ops::Range<u32>,
    batches: u32,
) -> Acked {
    workload_with(journal, producers, batches, |_, _, _| async {}).await
}

/// [`workload_of`], calling `after(journal, producer, batch)` after each acknowledged batch.
async fn workload_with<F, Fut>(
    journal: &Journal<SimStorage>,
    producers: std::ops::Range<u32>,
    batches: u32,
    after: F,
) -> Acked
where
    F: Fn(&Journal<SimStorage>, u32, u32) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let acked: Acked = Rc::default();
    let mut tasks = Vec::new();
    for p in producers {
        let journal = journal.clone();
        let acked = acked.clone();
        let after = after.clone();
        tasks.push(glommio::spawn_local(async move {
            for i in 0..batches {
                let n = 1 + (p + i) % 3;
                let datas: Vec<Vec<u8>> = (0..n).map(|j| payload(p, i, j, n)).collect();
                let records: Vec<RecordRef<'_>> = datas
                    .iter()
                    .map(|d| RecordRef::event(b"stream", b"type", d))
                    .collect();
                match journal.append(&records).await {
                    Ok(a) => acked.borrow_mut().push((p, i, a.first_lsn, a.last_lsn)),
                    // A failed write or sync (an injected fault, or the simulated power
                    // loss) poisons the journal: this append and every later one fail so.
                    Err(JournalError::Poisoned { .. }) => break,
                    Err(e) => panic!("producer {p} batch {i}: {e}"),
                }
                after(&journal, p, i).await;
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    acked
}

async fn recover(
    storage: SimStorage,
) -> Result<(Journal<SimStorage>, Vec<OwnedRecord>), JournalError> {
    let mut records = Vec::new();
    let (journal, _) = Journal::open(storage, small_config(), |info, frame| {
        let body = &frame[96..96 + info.meta.body_len as usize];
        for r in evring::journal::format::RecordIter::new(body) {
            records.push(r.unwrap().to_owned());
        }
    })
    .await?;
    Ok((journal, records))
}

/// Every acknowledged record is present byte for byte, LSNs are contiguous from 0, every
/// batch is all-or-nothing, and each producer's batches form a prefix.
fn check(records: &[OwnedRecord], acked: &[(u32, u32, u64, u64)], seed: u64, crash: u64) {
    for (k, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, k as u64, "seed {seed} crash {crash}: LSN gap");
        let (p, i, j, n) = parse(&r.data);
        assert_eq!(
            r.data,
            payload(p, i, j, n),
            "seed {seed} crash {crash}: content"
        );
    }
    let by_lsn: BTreeMap<u64, &OwnedRecord> = records.iter().map(|r| (r.lsn, r)).collect();
    for &(p, i, first, last) in acked {
        for (j, lsn) in (first..=last).enumerate() {
            let r = by_lsn.get(&lsn).unwrap_or_else(|| {
                panic!("seed {seed} crash {crash}: acknowledged LSN {lsn} lost")
            });
            let n = (last - first + 1) as u32;
            assert_eq!(
                r.data,
                payload(p, i, j as u32, n),
                "seed {seed} crash {crash}"
            );
        }
    }
    // Batches whole; per producer a prefix.
    let mut batches: BTreeMap<(u32, u32), (u32, u32)> = BTreeMap::new();
    for r in records {
        let (p, i, _, n) = parse(&r.data);
        let e = batches.entry((p, i)).or_insert((0, n));
        e.0 += 1;
    }
    let mut next_batch: BTreeMap<u32, u32> = BTreeMap::new();
    for (&(p, i), &(count, n)) in &batches {
        assert_eq!(count, n, "seed {seed} crash {crash}: batch p{p} i{i} torn");
        let want = next_batch.entry(p).or_insert(0);
        assert_eq!(
            *want, i,
            "seed {seed} crash {crash}: producer {p} skips a batch"
        );
        *want += 1;
    }
}

#[test]
fn recovery_restores_every_acknowledged_record_after_a_crash_at_any_step() {
    run_local(async {
        // Count the operations of a whole run first.
        let total_ops = {
            let storage = SimStorage::new(1);
            let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
                .await
                .unwrap();
            workload(&journal, 4, 40).await;
            storage.ops()
        };
        assert!(
            total_ops > 100,
            "the workload is too small to be interesting"
        );
        let mut crashes = 0;
        // Seed 3: completions arrive later, reaped by appends or delivered behind the ready
        // tasks, as from the production device's completion queue.
        for seed in 0..4u64 {
            let mut crash = 1;
            while crash <= total_ops + 2 {
                let storage = SimStorage::new(seed);
                storage.faults().crash_after_ops = Some(crash);
                storage.faults().defer_completions = seed == 3;
                let acked = match Journal::open(storage.clone(), small_config(), |_, _| {}).await {
                    Ok((journal, _)) => workload(&journal, 4, 40).await.borrow().clone(),
                    // The power went while the first segment was being prepared.
                    Err(JournalError::Io { source, .. })
                        if source.to_string().contains("simulated power loss") =>
                    {
                        Vec::new()
                    }
                    Err(e) => panic!("seed {seed} crash {crash}: open: {e}"),
                };
                let image = storage.crash_image();
                let (journal, records) = recover(image.clone())
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed} crash {crash}: {e}"));
                check(&records, &acked, seed, crash);
                // The journal takes new writes after recovery (producers 100 and 101), and they
                // survive another crash together with everything the first recovery restored.
                let more = workload_of(&journal, 100..102, 5).await.borrow().clone();
                assert_eq!(
                    more.len(),
                    10,
                    "seed {seed} crash {crash}: appends after recovery"
                );
                let (_, again) = recover(image.crash_image())
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed} crash {crash}, second recovery: {e}"));
                // The first recovery's records (every one acknowledged before the first crash
                // among them) are still there, unchanged, in front of the new ones.
                assert!(
                    again.len() >= records.len(),
                    "seed {seed} crash {crash}: {} records after the second crash, {} before",
                    again.len(),
                    records.len()
                );
                let key = |r: &OwnedRecord| (r.lsn, r.stream.clone(), r.data.clone());
                assert!(
                    again[..records.len()]
                        .iter()
                        .map(key)
                        .eq(records.iter().map(key)),
                    "seed {seed} crash {crash}: the second crash altered recovered records"
                );
                // Both runs' acknowledged records by content, LSNs contiguous, batches whole.
                let mut all = acked.clone();
                all.extend(more.iter().copied());
                check(&again, &all, seed, crash);
                crashes += 1;
                crash += 1 + seed; // denser for seed 0, every step
            }
        }
        assert!(crashes > 200);
    });
}

#[test]
fn records_survive_segment_rolls_and_read_back_from_any_lsn() {
    run_local(async {
        let storage = SimStorage::new(7);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        let acked = workload(&journal, 3, 200).await.borrow().clone();
        let total: u64 = acked.iter().map(|a| a.3 - a.2 + 1).sum();
        assert!(
            journal.stats().segments_created >= 3,
            "want several segments"
        );
        assert_eq!(journal.acked_lsn(), total);
        for from in [0, 1, total / 3, total / 2, total - 1] {
            let got = journal.read(from, 50).await.unwrap();
            assert_eq!(got.first().map(|r| r.lsn), Some(from));
            assert!(got.windows(2).all(|w| w[1].lsn == w[0].lsn + 1));
        }
        let all = journal.read(0, usize::MAX).await.unwrap();
        assert_eq!(all.len() as u64, total);
        let (_, recovered) = recover(storage.crash_image()).await.unwrap();
        // (`value` is NaN, which never equals itself: compare the other fields.)
        let key = |r: &OwnedRecord| {
            (
                r.lsn,
                r.stream.clone(),
                r.event_type.clone(),
                r.data.clone(),
            )
        };
        assert!(
            recovered.iter().map(key).eq(all.iter().map(key)),
            "recovered differs"
        );
    });
}

#[test]
fn torn_tail_is_truncated_and_zeroed() {
    run_local(async {
        let storage = SimStorage::new(3);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        let acked = workload(&journal, 1, 10).await.borrow().clone();
        let tail = 2 * 4096 + 10 * 4096; // well past the ten one-block frames
                                         // A torn write: half a frame of garbage after the tail.
        storage.overwrite(0, tail as u64, &[0xAB; 6000]);
        let (journal, records) = recover(storage.crash_image()).await.unwrap();
        check(&records, &acked, 3, 0);
        let image = storage.crash_image();
        let _ = journal;
        // The garbage is gone from the durable image of the recovered store... of the image
        // that recovery wrote to.
        let (j2, _) = recover(image.clone()).await.unwrap();
        drop(j2);
        let bytes = image.durable_bytes(0).unwrap();
        assert!(
            bytes[tail..tail + 6000].iter().all(|&b| b == 0),
            "dirty tail not zeroed"
        );
    });
}

#[test]
fn bit_flip_in_an_acknowledged_frame_refuses_to_start_with_its_location() {
    run_local(async {
        let storage = SimStorage::new(4);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        workload(&journal, 1, 12).await;
        // Frame 3 of segment 0 (one block each): flip a bit in its body.
        let frame_offset = (2 + 3) * 4096u64;
        storage.flip_bit(0, frame_offset + 200, 3);
        match recover(storage.crash_image()).await {
            Err(JournalError::Corrupt(c)) => {
                assert_eq!(c.offset, frame_offset);
                assert!(c.reason.contains("body checksum"), "{}", c.reason);
                assert!(c.path.contains("0000000000000000.seg"));
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a damaged acknowledged frame went unnoticed"),
        }
    });
}

#[test]
fn misdirected_write_is_detected_as_corruption() {
    run_local(async {
        let storage = SimStorage::new(5);
        // The 4th write lands 20 blocks further than aimed.
        storage.faults().misdirect_write = Some((4, 20));
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        workload(&journal, 1, 10).await;
        match recover(storage.crash_image()).await {
            Err(JournalError::Corrupt(c)) => assert!(c.reason.contains("acknowledged"), "{c}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a misdirected acknowledged frame went unnoticed"),
        }
    });
}

#[test]
fn fdatasync_failure_poisons_and_nothing_after_is_acknowledged() {
    run_local(async {
        let storage = SimStorage::new(6);
        storage.faults().fail_sync = Some((5, ErrorKind::Other));
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        let acked = workload(&journal, 3, 10).await.borrow().clone();
        assert!(journal.poisoned().is_some());
        assert!(acked.len() < 30);
        let acked_lsn = journal.acked_lsn();
        assert!(acked.iter().all(|a| a.3 < acked_lsn));
        let err = journal.append(&[RecordRef::event(b"s", b"t", b"d")]).await;
        assert!(matches!(err, Err(JournalError::Poisoned { .. })), "{err:?}");
        // The failed fdatasync's error is the poison's cause, for every later append too.
        let cause = std::error::Error::source(err.as_ref().unwrap_err())
            .and_then(|s| s.downcast_ref::<std::sync::Arc<std::io::Error>>())
            .expect("the I/O error is the source");
        assert_eq!(cause.kind(), ErrorKind::Other);
        // Even with the device healthy again, the journal stays poisoned until reopened.
        let err = journal.append(&[RecordRef::event(b"s", b"t", b"d")]).await;
        assert!(matches!(err, Err(JournalError::Poisoned { .. })));
        // What was acknowledged survives.
        let (_, records) = recover(storage.crash_image()).await.unwrap();
        check(&records, &acked, 6, 0);
    });
}

#[test]
fn write_failure_poisons_the_journal() {
    run_local(async {
        let storage = SimStorage::new(8);
        storage.faults().fail_write = Some((3, ErrorKind::Other));
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        let acked = workload(&journal, 1, 10).await.borrow().clone();
        assert_eq!(acked.len(), 2);
        assert!(journal
            .poisoned()
            .unwrap()
            .contains("simulated write failure"));
    });
}

#[test]
fn a_write_failure_reaped_by_an_append_poisons_it_and_no_append_hangs() {
    run_local(async {
        let storage = SimStorage::new(8);
        storage.faults().fail_write = Some((3, ErrorKind::Other));
        storage.faults().defer_completions = true;
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        // Several producers, so failed completions are reaped inside their appends.
        let run = workload(&journal, 4, 20);
        let watchdog = async {
            glommio::timer::sleep(std::time::Duration::from_secs(20)).await;
            panic!("an append waited forever after the journal was poisoned");
        };
        let acked = futures_lite::future::or(run, watchdog)
            .await
            .borrow()
            .clone();
        let reason = journal.poisoned().expect("poisoned");
        assert!(reason.contains("simulated write failure"), "{reason}");
        // Only frames before the failed one were acknowledged: LSNs from 0, no gap.
        let mut lsns: Vec<u64> = acked.iter().flat_map(|&(_, _, a, b)| a..=b).collect();
        lsns.sort_unstable();
        assert!(
            lsns.iter().enumerate().all(|(k, &l)| k as u64 == l),
            "{lsns:?}"
        );
        let err = journal
            .append(&[RecordRef::event(b"s", b"t", b"after")])
            .await
            .expect_err("a poisoned journal takes no more appends");
        assert!(matches!(err, JournalError::Poisoned { .. }), "{err}");
    });
}

#[test]
fn disk_full_while_preparing_a_segment_rejects_appends_then_resumes() {
    run_local(async {
        let storage = SimStorage::new(9);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        storage.faults().create_enospc = true;
        let big = vec![7u8; 8000];
        let mut full = None;
        for _ in 0..100 {
            match journal.append(&[RecordRef::event(b"s", b"t", &big)]).await {
                Ok(_) => {}
                Err(e) => {
                    full = Some(e);
                    break;
                }
            }
        }
        let err = full.expect("the segment should fill up");
        assert!(matches!(err, JournalError::DiskFull { .. }), "{err}");
        assert!(err.to_string().contains("disk full"));
        assert!(journal.poisoned().is_none());
        // Reads go on.
        let before = journal.acked_lsn();
        assert_eq!(
            journal.read(0, usize::MAX).await.unwrap().len() as u64,
            before
        );
        // Space returns: appends resume.
        storage.faults().create_enospc = false;
        let a = journal
            .append(&[RecordRef::event(b"s", b"t", &big)])
            .await
            .unwrap();
        assert_eq!(a.first_lsn, before);
    });
}

#[test]
fn a_deleted_or_truncated_segment_is_reported() {
    run_local(async {
        let storage = SimStorage::new(10);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        workload(&journal, 2, 200).await;
        assert!(journal.stats().segments_created >= 3);
        let image = storage.crash_image();
        image.delete(1);
        match recover(image).await {
            Err(JournalError::Corrupt(c)) => assert!(c.reason.contains("missing"), "{c}"),
            other => panic!("expected corruption, got {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn a_journal_of_another_store_is_refused() {
    run_local(async {
        let storage = SimStorage::new(11);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        workload(&journal, 1, 3).await;
        let mut cfg = small_config();
        cfg.store_id = [9; 16];
        let err = Journal::open(storage.crash_image(), cfg, |_, _| {}).await;
        assert!(matches!(err, Err(JournalError::WrongStore { .. })));
    });
}

#[test]
fn oversized_and_empty_appends_are_rejected_without_harm() {
    run_local(async {
        let storage = SimStorage::new(12);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        let huge = vec![0u8; 20_000];
        let err = journal.append(&[RecordRef::event(b"s", b"t", &huge)]).await;
        assert!(matches!(err, Err(JournalError::TooLarge { .. })));
        assert!(matches!(
            journal.append(&[]).await,
            Err(JournalError::InvalidRecord(_))
        ));
        let ok = journal
            .append(&[RecordRef::event(b"s", b"t", b"x")])
            .await
            .unwrap();
        assert_eq!(ok.first_lsn, 0);
    });
}

#[test]
fn frame_padding_is_written_as_zeros_even_from_dirty_buffers() {
    run_local(async {
        // The simulated device hands out buffers full of 0xEE.
        let storage = SimStorage::new(13);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        workload(&journal, 2, 30).await;
        let image = storage.durable_bytes(0).unwrap();
        let mut frames = 0;
        Journal::open(storage.crash_image(), small_config(), |info, frame| {
            let used = 96 + info.meta.body_len as usize;
            assert!(frame[used..].iter().all(|&b| b == 0), "padding not zeroed");
            frames += 1;
        })
        .await
        .unwrap();
        assert!(frames > 10);
        assert!(!image.contains(&0xEE) || image.windows(16).all(|w| w != [0xEE; 16]));
    });
}

#[test]
fn segments_start_small_and_double_up_to_segment_bytes() {
    run_local(async {
        let mut cfg = small_config();
        cfg.segment_bytes = 16 << 20;
        assert_eq!(
            (0..5)
                .map(|s| cfg.segment_bytes_for(s) >> 20)
                .collect::<Vec<_>>(),
            [4, 8, 16, 16, 16]
        );
        let storage = SimStorage::new(3);
        let (journal, _) = Journal::open(storage.clone(), cfg.clone(), |_, _| {})
            .await
            .unwrap();
        // About 33 MiB of records: segments of 4, 8, 16 and 16 MiB.
        let data = vec![7u8; 15 * 1024];
        for _ in 0..2300 {
            journal
                .append(&[RecordRef::event(b"s", b"t", &data)])
                .await
                .unwrap();
        }
        let sizes: Vec<u64> = (0..4)
            .map(|s| storage.durable_bytes(s).expect("segment").len() as u64 >> 20)
            .collect();
        assert_eq!(sizes, [4, 8, 16, 16]);
        let (_, records) = {
            let mut records = Vec::new();
            let (j, _) = Journal::open(storage.crash_image(), cfg, |info, frame| {
                let body = &frame[96..96 + info.meta.body_len as usize];
                for r in evring::journal::format::RecordIter::new(body) {
                    records.push(r.unwrap().lsn);
                }
            })
            .await
            .unwrap();
            (j, records)
        };
        assert_eq!(records, (0..2300).collect::<Vec<u64>>());
    });
}

/// The workload with large records (producers 10, 11, …), with segments retired by retention
/// as it goes (all but the newest two, after every 3rd batch of producer 10), so later
/// segments are recycled spares whose old frames are still in them, and rolls leave unused
/// blocks at segment ends.
async fn workload_retiring(journal: &Journal<SimStorage>, producers: u32, batches: u32) -> Acked {
    let acked = workload_with(journal, 10..10 + producers, batches, |journal, p, i| {
        let journal = journal.clone();
        async move {
            if p == 10 && i % 3 == 2 {
                let tail = journal.resume_point(journal.acked_lsn()).first_segment;
                let _ = journal
                    .remove_segments_below(tail.saturating_sub(1), |_, _, _| true)
                    .await;
            }
        }
    })
    .await;
    acked
}

/// Like `check`, for a journal whose beginning retention removed: the records present are
/// contiguous from the first one on, identical to what was written, and every acknowledged
/// record at or above the first present is there.
fn check_from_oldest(records: &[OwnedRecord], acked: &[(u32, u32, u64, u64)], what: &str) {
    let Some(first) = records.first().map(|r| r.lsn) else {
        assert!(
            acked
                .iter()
                .all(|a| a.3 < acked.iter().map(|a| a.3).max().unwrap_or(0)),
            "{what}: nothing recovered"
        );
        return;
    };
    for (k, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, first + k as u64, "{what}: LSN gap");
        let (p, i, j, n) = parse(&r.data);
        assert_eq!(r.data, payload(p, i, j, n), "{what}: content");
    }
    let end = first + records.len() as u64;
    for &(p, i, a, b) in acked {
        if b < first {
            continue; // retired
        }
        assert!(
            b < end,
            "{what}: acknowledged LSNs {a}..={b} (p{p} i{i}) lost"
        );
    }
}

#[test]
fn recycled_segments_recover_after_a_crash_at_any_step() {
    run_local(async {
        let total_ops = {
            let storage = SimStorage::new(11);
            let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
                .await
                .unwrap();
            workload_retiring(&journal, 3, 150).await;
            assert!(
                journal.stats().segments_created >= 6,
                "the workload must roll through several segments"
            );
            storage.ops()
        };
        let mut crashes = 0;
        let mut recycled_runs = 0;
        for seed in 0..2u64 {
            let mut crash = 1;
            while crash <= total_ops + 2 {
                let storage = SimStorage::new(seed);
                storage.faults().crash_after_ops = Some(crash);
                storage.faults().defer_completions = seed == 1;
                let acked = match Journal::open(storage.clone(), small_config(), |_, _| {}).await {
                    Ok((journal, _)) => workload_retiring(&journal, 3, 150).await.borrow().clone(),
                    Err(_) => Vec::new(),
                };
                if storage.recycled() > 0 {
                    recycled_runs += 1;
                }
                let what = format!("seed {seed} crash {crash}");
                let image = storage.crash_image();
                let (journal, records) = recover(image.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                check_from_oldest(&records, &acked, &what);
                // It writes on (recycling more) and survives another crash.
                let more = workload_retiring(&journal, 2, 10).await.borrow().clone();
                let (_, again) = recover(image.crash_image())
                    .await
                    .unwrap_or_else(|e| panic!("{what}, second recovery: {e}"));
                check_from_oldest(&again, &more, &format!("{what}, second recovery"));
                crashes += 1;
                crash += 1 + 2 * seed;
            }
        }
        assert!(crashes > 200, "{crashes} crash points");
        eprintln!("{crashes} crash points, {recycled_runs} of them after a recycled segment, {total_ops} operations a run");
        assert!(
            recycled_runs > 100,
            "{recycled_runs} runs recycled a segment"
        );
    });
}

#[test]
fn a_reader_finds_frames_acknowledged_after_its_last_visit_to_the_tail() {
    run_local(async {
        let storage = SimStorage::new(11);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        // Reads of the tail keep it open (Journal::visit): each read must still see every
        // frame acknowledged since the one before, in the tail and in segments after it.
        let mut total = 0;
        for round in 0..6 {
            let acked = workload(&journal, 2, 10).await.borrow().clone();
            total += acked.iter().map(|a| a.3 - a.2 + 1).sum::<u64>();
            assert_eq!(journal.acked_lsn(), total);
            let all = journal.read(0, usize::MAX).await.unwrap();
            assert_eq!(all.len() as u64, total, "round {round}");
            assert!(all.iter().enumerate().all(|(i, r)| r.lsn == i as u64));
        }
        assert!(
            journal.stats().segments_created >= 2,
            "the reads crossed a segment roll"
        );
    });
}

#[test]
fn reads_of_a_few_records_at_a_time_see_what_a_whole_read_sees_in_any_order() {
    // Frames of 60 records each, read as a consumer group reads behind the ring (the next
    // few records each time), then backwards and scattered: where a read of a kept frame
    // starts must never skip or repeat a record.
    run_local(async {
        let storage = SimStorage::new(11);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        for batch in 0..10u32 {
            let datas: Vec<Vec<u8>> = (0..60)
                .map(|j| format!("batch {batch} record {j}").into_bytes())
                .collect();
            let records: Vec<RecordRef<'_>> = datas
                .iter()
                .map(|d| RecordRef::event(b"stream", b"type", d))
                .collect();
            let a = journal.append(&records).await.unwrap();
            assert_eq!(a.last_lsn - a.first_lsn, 59);
        }
        let all = journal.read(0, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 600);
        let same = |from: u64, got: &[OwnedRecord]| {
            for (k, r) in got.iter().enumerate() {
                let want = &all[from as usize + k];
                assert_eq!(
                    (r.lsn, &r.data),
                    (want.lsn, &want.data),
                    "from {from}, #{k}"
                );
            }
        };
        let mut from = 0;
        while from < 600 {
            let got = journal.read(from, 7).await.unwrap();
            assert_eq!(got.len(), 7.min(600 - from as usize), "from {from}");
            same(from, &got);
            from += got.len() as u64;
        }
        let scattered = [
            (599, 5),
            (333, 4),
            (330, 10),
            (339, 2), // from the very record the read before stopped at
            (61, 3),
            (0, 2),
            (59, 2),
            (332, 1),
        ];
        for (from, n) in scattered {
            let got = journal.read(from, n).await.unwrap();
            assert_eq!(got.len(), n.min(600 - from as usize), "from {from}");
            same(from, &got);
        }
        // Two readers interleaved in one frame, one behind the other.
        for k in 0..8u64 {
            for base in [120, 150] {
                let from = base + 3 * k;
                let got = journal.read(from, 3).await.unwrap();
                same(from, &got);
            }
        }
    });
}

#[test]
fn a_reader_at_the_tail_sees_each_batch_once_acknowledged_across_segment_rolls() {
    // A visit reads a window of the segment ahead of the frame it wants and keeps it. A
    // reader that follows the tail comes back to the stretch right after what it read:
    // what the window kept must never hide the frames acknowledged since.
    run_local(async {
        let storage = SimStorage::new(12);
        let (journal, _) = Journal::open(storage.clone(), small_config(), |_, _| {})
            .await
            .unwrap();
        let mut next = 0u64;
        for i in 0..300u32 {
            // Records of producers from 10 on are 2–5 KB: two at most fill a 16 KiB frame.
            let p = i % 13;
            let n = if p >= 10 { 1 + i % 2 } else { 1 + i % 5 };
            let datas: Vec<Vec<u8>> = (0..n).map(|j| payload(p, i, j, n)).collect();
            let records: Vec<RecordRef<'_>> = datas
                .iter()
                .map(|d| RecordRef::event(b"stream", b"type", d))
                .collect();
            let a = journal.append(&records).await.unwrap();
            assert_eq!(a.first_lsn, next);
            let got = journal.read(next, usize::MAX).await.unwrap();
            let got: Vec<&Vec<u8>> = got.iter().map(|r| &r.data).collect();
            assert_eq!(got, datas.iter().collect::<Vec<_>>(), "batch {i}");
            next = a.last_lsn + 1;
            if i % 50 == 49 {
                assert_eq!(
                    journal.read(0, usize::MAX).await.unwrap().len() as u64,
                    next
                );
            }
        }
        assert!(
            journal.stats().segments_created >= 5,
            "{:?}",
            journal.stats()
        );
    });
}
