//! Online backup: `evring-inspect backup` copies a data directory while the real evringd
//! writes to it under load, with segments rolling; a second evringd started on the copy
//! serves every event acknowledged before the backup began, with identical content, and no
//! stream has a gap.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ev, Server};
use evring::protocol::{expected, Direction};

/// Acknowledged events: stream → data of versions 0, 1, … in order.
type Acked = Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>>;

#[test]
fn backup_while_appending_restores_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 256 KiB segments: the journals roll many times while the backup reads them.
    let server = Server::start(
        &data,
        &[
            "--partitions",
            "2",
            "--set",
            "segment_bytes=262144",
            "--set",
            "journal_frame_bytes_max=65536",
            "--set",
            "snapshot_every_events=1000",
        ],
    );
    // Key-value data too: the backup carries every store of the data directory.
    let kv = server.client();
    for i in 0..20 {
        kv.execute(
            "kv",
            format!(r#"{{"op":"set","key":"key-{i}","value":"value-{i}"}}"#).into_bytes(),
        )
        .unwrap();
    }
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, acked, stop) = (server.client(), acked.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let stream = format!("w{w}-s{}", n % 7);
                let data = format!("writer {w} event {n} {}", "x".repeat((n % 300) as usize));
                let r = client
                    .append(&stream, expected::ANY, vec![ev("Backed", data.as_bytes())])
                    .expect("append");
                let mut a = acked.lock().unwrap();
                let list = a.entry(stream).or_default();
                assert_eq!(r.first_version, list.len() as u64);
                list.push(data.into_bytes());
                n += 1;
            }
        }));
    }
    let count = |a: &Acked| a.lock().unwrap().values().map(Vec::len).sum::<usize>();
    let started = Instant::now();
    while count(&acked) < 3000 {
        assert!(started.elapsed() < Duration::from_secs(60), "load too slow");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Snapshots exist by now (one per 1,000 events per partition).
    let started = Instant::now();
    while !std::fs::read_dir(data.join("p0"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".snap"))
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before: HashMap<String, Vec<Vec<u8>>> = acked.lock().unwrap().clone();
    let copy = dir.path().join("copy");
    let out = std::process::Command::new(common::inspect_bin())
        .arg("backup")
        .arg(&data)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = count(&acked) - before.values().map(Vec::len).sum::<usize>();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    drop(server);
    assert!(during > 0, "the backup must run while appends go on");

    // The copy verifies clean and serves.
    let verify = std::process::Command::new(common::inspect_bin())
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify of the copy: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(
        std::fs::read_dir(copy.join("p0"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".snap")),
        "the copy holds the snapshots"
    );
    let restored = Server::start(
        &copy,
        &[
            "--set",
            "segment_bytes=262144",
            "--set",
            "journal_frame_bytes_max=65536",
        ],
    );
    let client = restored.client();
    let all = acked.lock().unwrap().clone();
    let mut restored_events = 0;
    for (stream, datas) in &all {
        let mut got = Vec::new();
        loop {
            let (events, end) = client
                .read(stream, got.len() as u64, 1000, Direction::Forward)
                .or_else(|e| {
                    if e.code() == Some(11) {
                        Ok((Vec::new(), true))
                    } else {
                        Err(e)
                    }
                })
                .unwrap();
            for e in &events {
                assert_eq!(e.stream_version, got.len() as u64, "gap in {stream}");
                got.push(e.event.data.clone());
            }
            if end || events.is_empty() {
                break;
            }
        }
        let must = before.get(stream).map_or(0, Vec::len);
        assert!(
            got.len() >= must,
            "{stream}: {} events restored, {must} were acknowledged before the backup",
            got.len()
        );
        assert!(
            got.len() <= datas.len(),
            "{stream}: more events than written"
        );
        assert_eq!(&got[..], &datas[..got.len()], "{stream}: content differs");
        restored_events += got.len();
    }
    eprintln!(
        "backup: {} acknowledged before, {during} during; {restored_events} restored",
        before.values().map(Vec::len).sum::<usize>()
    );
    // The key-value store came along.
    for i in 0..20 {
        let got = client
            .query(
                "kv",
                format!(r#"{{"op":"get","key":"key-{i}"}}"#).into_bytes(),
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(v["value"], format!("value-{i}"));
    }
    // The restored server takes appends after the copied history.
    let r = client
        .append("w0-s0", expected::ANY, vec![ev("After", b"restore")])
        .unwrap();
    assert!(r.first_version >= before["w0-s0"].len() as u64);

    // Backing up into a directory that is not empty is refused.
    let out = std::process::Command::new(common::inspect_bin())
        .arg("backup")
        .arg(&data)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}
