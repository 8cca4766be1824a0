//! Disk faults on real files: a journal written by the real evringd, then damaged on disk the
//! way failing hardware, a bad copy or an operator's slip damages it. evringd either recovers
//! (only damage after the tail, which is what a torn write looks like) or refuses to start with
//! one message naming the file, the offset and the fault; `evring-inspect verify` reports the
//! same fault. A refused start serves nothing, so nothing is served from a corrupt frame.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{ev, Server};
use evring::protocol::{expected, Direction};
use serde_json::Value;

const SEGMENT_BYTES: u64 = 65536;
// No snapshots: with one, start-up scans only the segments after it (damage before it is
// found by reads, which check every frame, and by `evring-inspect verify`).
const FLAGS: [&str; 10] = [
    "--set",
    "segment_bytes=65536",
    "--set",
    "journal_frame_bytes_max=16384",
    "--set",
    "snapshot_every_events=0",
    "--set",
    "snapshot_every_secs=0",
    "--set",
    "snapshot_on_shutdown=false",
];

fn seg(dir: &Path, seq: u64) -> PathBuf {
    dir.join("p0")
        .join(evring::journal::device::segment_file_name(seq))
}

/// Writes 200 single-event appends (one 4 KiB frame each, so about 14 per 64 KiB segment) to
/// one partition and stops the server cleanly. Returns the data of every acknowledged event.
fn write_journal(data: &Path) -> Vec<Vec<u8>> {
    let mut args = vec!["--partitions", "1"];
    args.extend(FLAGS);
    let mut server = Server::start(data, &args);
    let client = server.client();
    let mut acked = Vec::new();
    for i in 0..200u32 {
        let payload = format!("event {i:04} {}", "d".repeat(400)).into_bytes();
        let r = client
            .append("s", expected::ANY, vec![ev("E", &payload)])
            .unwrap();
        assert_eq!(r.first_version, i as u64);
        acked.push(payload);
    }
    drop(client);
    assert_eq!(server.terminate(), Some(0));
    acked
}

fn verify(dir: &Path) -> (Option<i32>, Value) {
    let out = std::process::Command::new(common::inspect_bin())
        .arg("verify")
        .arg(dir)
        .args(["--json", "--frame-bytes-max", "16384"])
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify JSON ({e}): {out:?}"));
    (out.status.code(), doc)
}

/// evringd must refuse `dir`; its message and `evring-inspect verify` must name `file` and
/// (when given) `offset`, and contain `fault`.
fn assert_refused(dir: &Path, file: &Path, offset: Option<u64>, fault: &str) {
    let mut args = vec![
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(FLAGS);
    let (ok, err) = common::start_failure(&args, |cmd| {
        cmd.env("EVRING_LOG", "error");
    });
    assert!(!ok, "evringd must refuse a journal with {fault}");
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "message names {name}: {err}");
    assert!(err.contains(fault), "message says {fault:?}: {err}");
    if let Some(offset) = offset {
        assert!(err.contains(&format!("offset {offset}")), "{err}");
    }
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let (code, doc) = verify(dir);
    assert_eq!(code, Some(2), "verify exits 2: {doc}");
    let f = &doc["journals"][0]["fault"];
    assert!(f["path"].as_str().unwrap().ends_with(name), "{f}");
    assert!(f["reason"].as_str().unwrap().contains(fault), "{f}");
    if let Some(offset) = offset {
        assert_eq!(f["offset"], offset, "{f}");
    }
}

#[test]
fn damaged_segments_are_refused_with_file_offset_and_fault_and_garbage_after_the_tail_is_recovered()
{
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let acked = write_journal(&pristine);
    let segments = std::fs::read_dir(pristine.join("p0")).unwrap().count() as u64;
    assert!(
        segments >= 8,
        "the journal spans many segments ({segments})"
    );
    let header = 8192u64;

    // 1. Bytes flipped inside a frame of a middle segment.
    let dir = tmp.path().join("flip");
    common::copy_dir(&pristine, &dir, &["LOCK"]);
    let file = seg(&dir, 3);
    let mut b = [0u8; 16];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    f.read_exact_at(&mut b, header + 4096 + 500).unwrap();
    for x in &mut b {
        *x ^= 0x5a;
    }
    f.write_all_at(&b, header + 4096 + 500).unwrap();
    drop(f);
    assert_refused(&dir, &file, Some(header + 4096), "body checksum");

    // 2. A middle segment truncated.
    let dir = tmp.path().join("truncate");
    common::copy_dir(&pristine, &dir, &["LOCK"]);
    let file = seg(&dir, 4);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(SEGMENT_BYTES / 2)
        .unwrap();
    assert_refused(
        &dir,
        &file,
        Some(SEGMENT_BYTES / 2),
        "truncated or extended",
    );

    // 3. A segment deleted from the middle.
    let dir = tmp.path().join("delete");
    common::copy_dir(&pristine, &dir, &["LOCK"]);
    let file = seg(&dir, 5);
    std::fs::remove_file(&file).unwrap();
    assert_refused(&dir, &file, None, "segment missing from the middle");

    // 4. Garbage written after the tail: indistinguishable from a torn write that was never
    // acknowledged. evringd recovers, zeroes it, serves every acknowledged event, appends on.
    let dir = tmp.path().join("garbage");
    common::copy_dir(&pristine, &dir, &["LOCK"]);
    let (code, doc) = verify(&dir);
    assert_eq!(code, Some(0), "{doc}");
    let last = std::fs::read_dir(dir.join("p0"))
        .unwrap()
        .filter_map(|e| {
            evring::journal::device::parse_segment_file_name(e.ok()?.file_name().to_str()?)
        })
        .max()
        .unwrap();
    let file = seg(&dir, last);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let mut tail = None;
    let mut block = vec![0u8; 4096];
    let mut at = header;
    while at < SEGMENT_BYTES {
        f.read_exact_at(&mut block, at).unwrap();
        if block.iter().all(|&x| x == 0) {
            tail = Some(at);
            break;
        }
        at += 4096;
    }
    let tail = tail.expect("the last segment has room after its tail");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    f.write_all_at(&garbage, tail).unwrap();
    drop(f);
    let (code, doc) = verify(&dir);
    assert_eq!(
        code,
        Some(0),
        "garbage after the tail is a torn tail: {doc}"
    );
    assert_ne!(doc["journals"][0]["torn_tail"], Value::Null, "{doc}");
    let mut args = vec!["--partitions", "1"];
    args.extend(FLAGS);
    let server = Server::start(&dir, &args);
    let client = server.client();
    let (events, _) = client.read("s", 0, 1000, Direction::Forward).unwrap();
    let got: Vec<Vec<u8>> = events.iter().map(|e| e.event.data.clone()).collect();
    assert_eq!(got, acked, "every acknowledged event, identical, in order");
    let r = client
        .append("s", expected::ANY, vec![ev("E", b"after recovery")])
        .unwrap();
    assert_eq!(r.first_version, acked.len() as u64);
}
