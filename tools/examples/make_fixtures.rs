//! Writes the fixture journals in `tools/fixtures/` (run from the workspace root):
//!
//! ```text
//! cargo run --release -p evring-tools --example make_fixtures -- tools/fixtures
//! ```
//!
//! Each fixture is a data directory (`MANIFEST` + `p{N}/` segment directories) made by the
//! real journal code on the simulated disk, then damaged on purpose:
//!
//! - `clean/`: two partitions, several 64 KiB segments each, every record acknowledged.
//! - `torn-tail/`: one partition whose last frame was torn by a crash (only its first 512-byte
//!   sector reached the disk); that frame was never acknowledged.
//! - `corrupt-middle/`: one partition with one bit flipped in the body of an acknowledged frame
//!   in the middle of its second segment.
//!
//! Next to each, `expected.json` records what the generator knows independently of the
//! scan: acknowledged records, the next LSN, and where the damage is.

use std::collections::HashMap;
use std::path::Path;

use evring::journal::device::segment_file_name;
use evring::journal::format::{RecordRef, RECORD_KIND_EVENT};
use evring::journal::scan::{scan, FrameInfo, ScanConfig};
use evring::journal::{block_on, Journal, JournalConfig, SimStorage};
use evring::shard::run_local;
use serde_json::json;

const STORE: [u8; 16] = *b"evring-fixtures!";
const SEGMENT_BYTES: u64 = 64 * 1024;
const FRAME_BYTES_MAX: usize = 16 * 1024;
const BASE_TS: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

fn config(partition: u32) -> JournalConfig {
    let mut cfg = JournalConfig::new(STORE, partition);
    // Every frame as soon as the pipeline has room: the most frames in flight at a crash.
    cfg.pipeline_min_bytes = 0;
    cfg.segment_bytes = SEGMENT_BYTES;
    cfg.frame_bytes_max = FRAME_BYTES_MAX;
    cfg.in_flight_max = 4;
    cfg
}

/// Appends `batches` batches of 1..=3 events over 7 streams (the last batch's data padded to
/// `last_pad` bytes); returns the next LSN.
fn fill(storage: &SimStorage, partition: u32, batches: u32, last_pad: usize) -> u64 {
    let storage = storage.clone();
    run_local(async move {
        let (journal, _) = Journal::open(storage, config(partition), |_, _| {})
            .await
            .expect("open a fresh simulated journal");
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut next = 0;
        for i in 0..batches {
            let stream = format!("order-{}", i % 7);
            let n = 1 + i % 3;
            let owned: Vec<(String, u64, Vec<u8>, u64)> = (0..n)
                .map(|j| {
                    let v = versions.entry(stream.clone()).or_default();
                    let version = *v;
                    *v += 1;
                    let kind = ["Created", "Paid", "Shipped"][((i + j) % 3) as usize];
                    let pad = if i + 1 == batches {
                        last_pad
                    } else {
                        (i % 50) as usize
                    };
                    let data = format!(
                        "{{\"batch\":{i},\"event\":{j},\"pad\":\"{}\"}}",
                        "x".repeat(pad)
                    );
                    (
                        kind.to_string(),
                        version,
                        data.into_bytes(),
                        u64::from(i * 10 + j),
                    )
                })
                .collect();
            let records: Vec<RecordRef<'_>> = owned
                .iter()
                .map(|(kind, version, data, k)| RecordRef {
                    kind: RECORD_KIND_EVENT,
                    // The fixtures are journals of the format before records carried stream IDs.
                    id: None,
                    stream_version: *version,
                    timestamp_ns: BASE_TS + k * 1_000_000,
                    event_id: [0; 16],
                    value: *k as f64 / 10.0,
                    stream: stream.as_bytes(),
                    event_type: kind.as_bytes(),
                    data,
                    metadata: b"",
                })
                .collect();
            let a = journal.append(&records).await.expect("append");
            next = a.last_lsn + 1;
        }
        journal.close().await;
        next
    })
}

fn frames(storage: &SimStorage) -> Vec<FrameInfo> {
    let cfg = ScanConfig {
        store_id: Some(STORE),
        frame_bytes_max: FRAME_BYTES_MAX,
        in_flight_max: 4,
        first_segment: None,
    };
    let mut out = Vec::new();
    block_on(scan(storage, &cfg, |info, _| out.push(*info), |_| {})).expect("scan");
    out
}

fn write_dir(storage: &SimStorage, dir: &Path, partition: u32) {
    let pdir = dir.join(format!("p{partition}"));
    std::fs::create_dir_all(&pdir).unwrap();
    let mut seq = 0;
    loop {
        match storage.durable_bytes(seq) {
            Some(bytes) => std::fs::write(pdir.join(segment_file_name(seq)), bytes).unwrap(),
            None if seq > 0 => break,
            None => {}
        }
        seq += 1;
        if seq > 1000 {
            break;
        }
    }
}

fn manifest(dir: &Path, partitions: u32) {
    let id: String = STORE.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("MANIFEST"),
        format!("store_id={id}\npartitions={partitions}\nformat=1\n"),
    )
    .unwrap();
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .expect("usage: make_fixtures OUT_DIR");
    let root = Path::new(&root);
    let _ = std::fs::remove_dir_all(root.join("clean"));
    let _ = std::fs::remove_dir_all(root.join("torn-tail"));
    let _ = std::fs::remove_dir_all(root.join("corrupt-middle"));

    // clean: two partitions.
    let dir = root.join("clean");
    manifest(&dir, 2);
    let mut parts = Vec::new();
    for (p, batches) in [(0u32, 100u32), (1, 40)] {
        let sim = SimStorage::new(u64::from(p) + 1);
        let next = fill(&sim, p, batches, 0);
        let segs: Vec<u64> = frames(&sim).iter().map(|f| f.segment_seq).collect();
        write_dir(&sim, &dir, p);
        parts.push(json!({"partition": p, "records": next, "next_lsn": next,
                          "segments_with_frames": segs.last().map_or(0, |l| l + 1)}));
    }
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_string_pretty(&json!({"partitions": parts, "streams": [7, 7]})).unwrap(),
    )
    .unwrap();

    // torn-tail: the last frame keeps only its first sector.
    let dir = root.join("torn-tail");
    manifest(&dir, 1);
    let sim = SimStorage::new(7);
    let next = fill(&sim, 0, 60, 3000);
    let all = frames(&sim);
    let last = *all.last().unwrap();
    assert!(last.meta.body_len > 1024, "the tear must cut the body");
    let zeros = vec![0u8; last.meta.padded_len as usize - 512];
    sim.overwrite(last.segment_seq, last.offset + 512, &zeros);
    write_dir(&sim, &dir, 0);
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_string_pretty(&json!({
            "written_records": next,
            "records": last.meta.first_lsn,
            "next_lsn": last.meta.first_lsn,
            "torn": {"segment_seq": last.segment_seq, "offset": last.offset},
        }))
        .unwrap(),
    )
    .unwrap();

    // corrupt-middle: one bit of an acknowledged frame's body in segment 1.
    let dir = root.join("corrupt-middle");
    manifest(&dir, 1);
    let sim = SimStorage::new(11);
    let next = fill(&sim, 0, 100, 0);
    let all = frames(&sim);
    let in_seg1: Vec<&FrameInfo> = all.iter().filter(|f| f.segment_seq == 1).collect();
    assert!(
        in_seg1.len() >= 3,
        "segment 1 needs frames before and after the damage"
    );
    let victim = *in_seg1[in_seg1.len() / 2];
    sim.flip_bit(victim.segment_seq, victim.offset + 96 + 40, 3);
    write_dir(&sim, &dir, 0);
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_string_pretty(&json!({
            "written_records": next,
            "fault": {"segment_seq": victim.segment_seq, "offset": victim.offset,
                      "first_lsn": victim.meta.first_lsn, "check": "body checksum"},
        }))
        .unwrap(),
    )
    .unwrap();
    println!("fixtures written to {}", root.display());
}
