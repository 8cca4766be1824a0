//! Recovery of the checked-in fixture journals (tools/fixtures) by the real journal on real
//! files, and by the real evringd: a clean journal is read back whole, a torn tail is
//! truncated to the acknowledged records and writing resumes, corruption refuses to start.

mod common;

use std::path::{Path, PathBuf};

use evring::error::JournalError;
use evring::journal::{DiskStorage, Journal, JournalConfig, OwnedRecord, RecordRef};
use evring::protocol::Direction;
use evring::shard::run_local;
use serde_json::Value;

const STORE: [u8; 16] = *b"evring-fixtures!";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tools/fixtures")
        .join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A writable copy of a fixture data directory.
fn copy(name: &str, to: &Path) -> PathBuf {
    let dest = to.join(name);
    for entry in walk(&fixture(name)) {
        let rel = entry.strip_prefix(fixture(name)).unwrap();
        let target = dest.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
    std::fs::remove_file(dest.join("expected.json")).unwrap();
    dest
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn config(partition: u32) -> JournalConfig {
    let mut cfg = JournalConfig::new(STORE, partition);
    // Every frame as soon as the pipeline has room: the most frames in flight at a crash.
    cfg.pipeline_min_bytes = 0;
    cfg.segment_bytes = 64 * 1024;
    cfg.frame_bytes_max = 16 * 1024;
    cfg
}

fn recover(dir: &Path, partition: u32) -> Result<Vec<OwnedRecord>, JournalError> {
    let dir = dir.join(format!("p{partition}"));
    run_local(async move {
        let storage = DiskStorage::open(&dir).expect("open dir");
        let mut records = Vec::new();
        let (journal, _) = Journal::open(storage, config(partition), |info, frame| {
            let body = &frame[96..96 + info.meta.body_len as usize];
            for r in evring::journal::format::RecordIter::new(body) {
                records.push(r.expect("checked by the scan").to_owned());
            }
        })
        .await?;
        journal.close().await;
        Ok(records)
    })
}

fn check_contents(records: &[OwnedRecord]) {
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, i as u64);
        let data = String::from_utf8(r.data.clone()).unwrap();
        assert!(data.starts_with("{\"batch\":"), "{data}");
    }
}

#[test]
fn clean_fixture_recovers_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy("clean", tmp.path());
    let want = expected("clean");
    for p in 0..2u32 {
        let records = recover(&dir, p).unwrap();
        assert_eq!(
            records.len() as u64,
            want["partitions"][p as usize]["records"].as_u64().unwrap()
        );
        check_contents(&records);
    }
}

#[test]
fn torn_tail_fixture_is_truncated_to_what_was_acknowledged_and_writing_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy("torn-tail", tmp.path());
    let want = expected("torn-tail");
    let acked = want["records"].as_u64().unwrap();
    let records = recover(&dir, 0).unwrap();
    assert_eq!(records.len() as u64, acked);
    check_contents(&records);
    // Append after recovery; the new record takes the torn frame's place.
    let pdir = dir.join("p0");
    let lsn = run_local(async move {
        let storage = DiskStorage::open(&pdir).unwrap();
        let (journal, _) = Journal::open(storage, config(0), |_, _| {}).await.unwrap();
        let a = journal
            .append(&[RecordRef::event(b"order-0", b"After", b"{\"batch\":-1}")])
            .await
            .unwrap();
        journal.close().await;
        a.first_lsn
    });
    assert_eq!(lsn, acked);
    let again = recover(&dir, 0).unwrap();
    assert_eq!(again.len() as u64, acked + 1);
    assert_eq!(again.last().unwrap().event_type, b"After");
}

#[test]
fn corrupt_middle_fixture_refuses_to_open_naming_segment_offset_and_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy("corrupt-middle", tmp.path());
    let want = expected("corrupt-middle");
    match recover(&dir, 0) {
        Err(JournalError::Corrupt(c)) => {
            assert_eq!(
                c.segment_seq,
                want["fault"]["segment_seq"].as_u64().unwrap()
            );
            assert_eq!(c.offset, want["fault"]["offset"].as_u64().unwrap());
            assert!(c.reason.contains("body checksum"), "{}", c.reason);
        }
        Ok(r) => panic!("opened a corrupt journal ({} records)", r.len()),
        Err(e) => panic!("wrong error: {e}"),
    }
}

#[test]
fn evringd_serves_the_torn_tail_fixture_and_refuses_the_corrupt_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy("torn-tail", tmp.path());
    let acked = expected("torn-tail")["records"].as_u64().unwrap();
    let server = common::Server::start(&dir, &[]);
    let c = server.client();
    let mut total = 0;
    for s in 0..7 {
        let stream = format!("order-{s}");
        let (events, _) = c.read(&stream, 0, 10_000, Direction::Forward).unwrap();
        for (v, e) in events.iter().enumerate() {
            assert_eq!(e.stream_version, v as u64);
        }
        total += events.len() as u64;
        let info = c.stream_info(&stream).unwrap();
        let a = c
            .append(
                &stream,
                info.next_version as i64 - 1,
                vec![common::ev("After", b"x")],
            )
            .unwrap();
        assert_eq!(a.first_version, info.next_version);
    }
    assert_eq!(total, acked);
    drop(c);
    drop(server);

    let bad = copy("corrupt-middle", tmp.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evringd"))
        .arg("--data-dir")
        .arg(&bad)
        .args(["--listen", "127.0.0.1:0", "--set", "metrics_listen=\"\""])
        .args(["--set", "resp_listen=\"\""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0000000000000001.seg") && err.contains("36864"),
        "start-up refusal names the segment and offset: {err}"
    );
}
