//! Snapshots against the real evringd: a restart from a snapshot plus the journal after it
//! serves exactly what a full journal replay serves; a damaged newest snapshot is passed over
//! for an older one (and the log says so); snapshots taken while appends pour in lose nothing
//! at a SIGKILL; a failing snapshot never affects appends.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evring::client::BlockingClient;
use evring::protocol::{expected, Direction, Event};

/// evringd with its log captured in `log`.
struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, log: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let addr_file = data.with_extension("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evringd"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--addresses-file"])
        .arg(&addr_file)
        .args([
            "--partitions",
            "1",
            "--set",
            "segment_bytes=262144",
            "--set",
            "journal_frame_bytes_max=65536",
            "--set",
            "metrics_listen=\"\"",
            "--set",
            "resp_listen=\"\"",
            "--set",
            "snapshot_every_secs=0",
        ])
        .args(extra)
        .env("EVRING_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            if let Some(a) = text.lines().find_map(|l| l.strip_prefix("client=")) {
                return Proc {
                    child,
                    addr: a.to_string(),
                };
            }
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!(
                "evringd exited: {s}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn client(p: &Proc) -> BlockingClient {
    BlockingClient::connect(&p.addr, "snapshots", "").unwrap()
}

fn snapshots(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("p0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    v.sort();
    v
}

fn wait_for_snapshots(data: &Path, n: usize) {
    let started = Instant::now();
    while snapshots(data).len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no snapshot was written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn event(i: u64, with_id: bool) -> Event {
    let mut e = common::ev(
        "Snap",
        format!("event {i} {}", "s".repeat((i % 50) as usize)).as_bytes(),
    );
    if with_id {
        e.id[..8].copy_from_slice(&(i + 1).to_le_bytes());
    }
    e.value = i as f64;
    e
}

/// One event as compared: version, data, id, value.
type Seen = (u64, Vec<u8>, [u8; 16], u64);

/// Every stream's events in order.
fn everything(c: &BlockingClient, streams: usize) -> Vec<Vec<Seen>> {
    (0..streams)
        .map(|s| {
            let name = format!("st-{s}");
            let mut all = Vec::new();
            loop {
                let (events, end) = match c.read(&name, all.len() as u64, 1000, Direction::Forward)
                {
                    Ok(r) => r,
                    Err(e) if e.code() == Some(11) => (Vec::new(), true),
                    Err(e) => panic!("{e}"),
                };
                let n = events.len();
                all.extend(events.into_iter().map(|e| {
                    (
                        e.stream_version,
                        e.event.data,
                        e.event.id,
                        e.event.value as u64,
                    )
                }));
                if end || n == 0 {
                    break all;
                }
            }
        })
        .collect()
}

#[test]
fn restart_from_a_snapshot_and_the_journal_tail_serves_what_a_full_replay_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("1.log");
    let flags = [
        "--set",
        "snapshot_every_events=700",
        "--set",
        "snapshot_on_shutdown=false",
        // A small ring: older events are read from the journal, newer ones from the ring.
        "--set",
        "ring_capacity_events=256",
    ];
    let p = start(&data, &log, &flags, &[]);
    let c = client(&p);
    for i in 0..2000u64 {
        c.append(
            &format!("st-{}", i % 20),
            expected::ANY,
            vec![event(i, i % 3 == 0)],
        )
        .unwrap();
    }
    wait_for_snapshots(&data, 1);
    for i in 2000..2300u64 {
        c.append(
            &format!("st-{}", i % 20),
            expected::ANY,
            vec![event(i, i % 3 == 0)],
        )
        .unwrap();
    }
    let before = everything(&c, 20);
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 2300);
    drop(c);
    drop(p); // SIGKILL
    assert!(
        snapshots(&data).len() <= 2,
        "keeps at most snapshot_keep files"
    );
    let full = dir.path().join("full");
    common::copy_dir(&data, &full, &["LOCK"]);
    for s in snapshots(&full) {
        std::fs::remove_file(s).unwrap();
    }

    let log2 = dir.path().join("2.log");
    let p = start(&data, &log2, &flags, &[]);
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(
        text.contains("partition recovered") && text.contains("snapshot="),
        "recovered from a snapshot: {text}"
    );
    let c = client(&p);
    assert_eq!(
        everything(&c, 20),
        before,
        "snapshot + tail = what was acknowledged"
    );
    // The idempotency window came back with the snapshot: a retry of an early append
    // with an id returns the original result and writes nothing.
    let retry = c
        .append("st-0", expected::ANY, vec![event(0, true)])
        .unwrap();
    assert_eq!(retry.first_version, 0);
    let after = c
        .append("st-0", expected::ANY, vec![event(9999, false)])
        .unwrap();
    assert_eq!(after.first_version, before[0].len() as u64);
    drop(c);
    drop(p);

    let p = start(&full, &dir.path().join("3.log"), &flags, &[]);
    let c = client(&p);
    assert_eq!(everything(&c, 20), before, "full replay = snapshot + tail");
}

#[test]
fn a_damaged_newest_snapshot_is_passed_over_for_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = [
        "--set",
        "snapshot_every_events=300",
        "--set",
        "snapshot_on_shutdown=false",
    ];
    let p = start(&data, &dir.path().join("1.log"), &flags, &[]);
    let c = client(&p);
    let mut i = 0u64;
    while snapshots(&data).len() < 2 {
        c.append(
            &format!("st-{}", i % 5),
            expected::ANY,
            vec![event(i, false)],
        )
        .unwrap();
        i += 1;
        assert!(i < 100_000);
    }
    let before = everything(&c, 5);
    drop(c);
    drop(p);
    let newest = snapshots(&data).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();
    let log = dir.path().join("2.log");
    let p = start(&data, &log, &flags, &[]);
    let text = std::fs::read_to_string(&log).unwrap();
    let name = newest.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains("snapshot not usable") && text.contains(name) && text.contains("checksum"),
        "{text}"
    );
    assert!(
        text.contains("snapshot="),
        "an older snapshot was used: {text}"
    );
    let c = client(&p);
    assert_eq!(everything(&c, 5), before);
}

#[test]
fn snapshots_taken_while_appends_pour_in_lose_nothing_at_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = ["--set", "snapshot_every_events=150"];
    let p = start(&data, &dir.path().join("1.log"), &flags, &[]);
    let acked: Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, acked, stop) = (client(&p), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let stream = format!("st-{}", (w * 3 + n) % 12);
                    let data = format!("w{w} n{n}").into_bytes();
                    if let Err(e) = c.append(&stream, expected::ANY, vec![common::ev("E", &data)]) {
                        // The server was killed: the connection fails, no error reply.
                        assert_eq!(e.code(), None, "{e}");
                        return;
                    }
                    acked.lock().unwrap().entry(stream).or_default().push(data);
                    n += 1;
                }
            })
        })
        .collect();
    wait_for_snapshots(&data, 2);
    std::thread::sleep(Duration::from_millis(300));
    drop(p); // SIGKILL under load, with snapshots being taken
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let p = start(&data, &dir.path().join("2.log"), &flags, &[]);
    let c = client(&p);
    let acked = acked.lock().unwrap();
    let mut verified = 0;
    for (stream, datas) in acked.iter() {
        let (events, _) = c.read(stream, 0, 10_000, Direction::Forward).unwrap();
        // Per stream, writers interleave: compare as sets of this stream's data, in order of
        // versions, every acknowledged one present.
        let got: Vec<&Vec<u8>> = events.iter().map(|e| &e.event.data).collect();
        for (v, e) in events.iter().enumerate() {
            assert_eq!(e.stream_version, v as u64, "gap in {stream}");
        }
        for d in datas {
            assert!(got.contains(&d), "{stream}: acknowledged {d:?} lost");
            verified += 1;
        }
    }
    assert!(verified > 300, "{verified}");
}

#[test]
fn a_failing_snapshot_never_affects_appends() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("1.log");
    let flags = [
        "--set",
        "snapshot_every_events=50",
        "--set",
        "snapshot_on_shutdown=false",
    ];
    let p = start(
        &data,
        &log,
        &flags,
        &[("EVRINGD_INJECT_SNAPSHOT_FAILURE", "1")],
    );
    let c = client(&p);
    for i in 0..400u64 {
        c.append("st-0", expected::ANY, vec![event(i, false)])
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(snapshots(&data).is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("snapshot failed"), "{text}");
    let (events, _) = c.read("st-0", 0, 1000, Direction::Forward).unwrap();
    assert_eq!(events.len(), 400);
}

#[test]
fn retention_deletes_only_what_a_snapshot_covers_and_old_reads_say_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = [
        "--set",
        "snapshot_every_events=200",
        "--set",
        "retention_max_bytes=600000",
        "--set",
        "ring_capacity_events=64",
    ];
    let p = start(&data, &dir.path().join("1.log"), &flags, &[]);
    let c = client(&p);
    for i in 0..3000u64 {
        c.append("st-0", expected::ANY, vec![event(i, false)])
            .unwrap();
    }
    // Retention runs after each snapshot; the oldest kept snapshot bounds what it may delete,
    // so the journal settles at a few segments (measured 5 to 9 here), never at a fixed count:
    // wait for the first segment to go and for fewer than 20 of the 47 written to be left.
    let first = data
        .join("p0")
        .join(evring::journal::device::segment_file_name(0));
    let segments = || {
        std::fs::read_dir(data.join("p0"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count()
    };
    let started = Instant::now();
    while first.exists() || segments() >= 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "retention left {} segments (segment 0 present: {})",
            segments(),
            first.exists()
        );
        // More appends trigger more snapshots and retention passes.
        c.append("st-0", expected::ANY, vec![event(1, false)])
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = c.read("st-0", 0, 10, Direction::Forward).unwrap_err();
    assert_eq!(e.code(), Some(12), "{e}");
    assert!(e.to_string().contains("truncated before LSN"), "{e}");
    let info = c.stream_info("st-0").unwrap();
    let last = info.next_version - 1;
    let (recent, _) = c.read("st-0", last, 1, Direction::Forward).unwrap();
    assert_eq!(recent.len(), 1);
    drop(c);
    drop(p);
    // A restart recovers from the snapshot and the journal that is left.
    let p = start(&data, &dir.path().join("2.log"), &flags, &[]);
    let c = client(&p);
    assert_eq!(
        c.stream_info("st-0").unwrap().next_version,
        info.next_version
    );
    let (recent, _) = c.read("st-0", last, 1, Direction::Forward).unwrap();
    assert_eq!(recent.len(), 1);
}

#[test]
fn a_damaged_frame_a_snapshot_covers_is_never_served() {
    // With a snapshot, start-up scans only the journal after it; a frame damaged before it is
    // found when a read reaches it: the read fails, no altered event is served.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = [
        "--set",
        "snapshot_every_events=300",
        "--set",
        "ring_capacity_events=64",
    ];
    let p = start(&data, &dir.path().join("1.log"), &flags, &[]);
    let c = client(&p);
    for i in 0..600u64 {
        c.append("st-0", expected::ANY, vec![event(i, false)])
            .unwrap();
    }
    wait_for_snapshots(&data, 1);
    drop(c);
    drop(p);
    // Flip a byte inside the first record of the first frame (version 0).
    let seg = data
        .join("p0")
        .join(evring::journal::device::segment_file_name(0));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8192 + 96 + 76] ^= 0x55; // frame header 96 B, record header 72 B: inside the record
    std::fs::write(&seg, bytes).unwrap();
    let p = start(&data, &dir.path().join("2.log"), &flags, &[]);
    let c = client(&p);
    let e = c.read("st-0", 0, 10, Direction::Forward).unwrap_err();
    assert_eq!(e.code(), Some(21), "{e}");
    assert!(e.to_string().contains("corrupt"), "{e}");
    // Recent events (in the ring and in undamaged frames) are served.
    let (recent, _) = c.read("st-0", 590, 10, Direction::Forward).unwrap();
    assert_eq!(recent.len(), 10);
    assert_eq!(recent[9].event.data, event(599, false).data);
}

#[test]
fn snapshot_work_runs_off_the_shards_cpu() {
    // Threads inherit their creator's CPU affinity: without care, glommio's blocking-pool
    // thread that encodes and writes snapshots would share the pinned shard's CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: one CPU, nowhere else to run snapshot work");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = [
        "--set",
        "snapshot_every_events=50",
        "--set",
        "pin_cpus=true",
        "--set",
        "shards=1",
    ];
    let p = start(&data, &dir.path().join("1.log"), &flags, &[]);
    let c = client(&p);
    for i in 0..200u64 {
        c.append("st-0", expected::ANY, vec![event(i, false)])
            .unwrap();
    }
    wait_for_snapshots(&data, 1);
    // The shard and the blocking-pool thread share the name; the shard is pinned to one CPU.
    let pid = p.child.id();
    let mut allowed = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("evring-shard-0") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(list) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            allowed.push(list.trim().to_string());
        }
    }
    assert!(
        allowed.len() >= 2,
        "shard and blocking threads: {allowed:?}"
    );
    let shard_cpu = &allowed[0];
    assert!(
        allowed.iter().any(|a| a != shard_cpu),
        "every shard-named thread is on the shard's CPU {shard_cpu}: {allowed:?}"
    );
}

/// The journal segments of partition 0, by sequence number.
fn segment_seqs(data: &Path) -> Vec<u64> {
    let mut seqs: Vec<u64> = std::fs::read_dir(data.join("p0"))
        .unwrap()
        .flatten()
        .filter_map(|e| evring::journal::device::parse_segment_file_name(e.file_name().to_str()?))
        .collect();
    seqs.sort_unstable();
    seqs
}

/// Sets the modification time of segment `seq` two hours back.
fn age_segment(data: &Path, seq: u64) {
    let path = data
        .join("p0")
        .join(evring::journal::device::segment_file_name(seq));
    let when = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// SIGTERM and wait: a retention pass under way finishes before the process exits.
fn terminate(mut p: Proc) {
    // SAFETY: sending a signal to our own child process by pid has no memory effects.
    unsafe {
        libc::kill(p.child.id() as i32, libc::SIGTERM);
    }
    let status = p.child.wait().unwrap();
    assert!(status.success(), "evringd exited with {status}");
}

/// Appends events `from..` to `st-0` until `snapshots` snapshot files exist; returns the
/// next event number.
fn append_until_snapshots(c: &BlockingClient, data: &Path, mut i: u64, want: usize) -> u64 {
    let limit = i + 20_000;
    while snapshots(data).len() < want {
        let a = c
            .append("st-0", expected::ANY, vec![event(i, false)])
            .unwrap();
        assert_eq!(a.first_version, i);
        i += 1;
        assert!(
            i < limit,
            "no snapshot after {} events",
            i - (limit - 20_000)
        );
    }
    i
}

/// Polls (appending nothing) until segment `seq` is gone.
fn wait_until_removed(data: &Path, seq: u64) {
    let started = Instant::now();
    while segment_seqs(data).contains(&seq) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "segment {seq} is still there: {:?}",
            segment_seqs(data)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn retention_by_age_deletes_old_segments_a_kept_snapshot_covers_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = [
        "--set",
        "snapshot_every_events=400",
        "--set",
        "snapshot_keep=3",
        "--set",
        "snapshot_on_shutdown=false",
        "--set",
        "retention_max_age_secs=3600",
        "--set",
        "ring_capacity_events=64",
    ];
    // 1. Two snapshots cover the oldest segments, but every segment is young: retention
    //    (which runs after each snapshot) deletes nothing.
    let p = start(&data, &dir.path().join("1.log"), &flags, &[]);
    let mut next = append_until_snapshots(&client(&p), &data, 0, 2);
    terminate(p); // lets the retention pass after the second snapshot finish
    let seqs = segment_seqs(&data);
    let last = *seqs.last().unwrap();
    assert_eq!(
        seqs,
        (0..=last).collect::<Vec<_>>(),
        "young segments deleted"
    );
    let resume = |data: &Path| -> Vec<u64> {
        snapshots(data)
            .iter()
            .map(|s| evring::snapshot::read_meta(s).unwrap().resume_segment)
            .collect()
    };
    assert!(
        resume(&data).iter().all(|&r| r > 4),
        "the snapshots cover segments 0..=3: {:?}",
        resume(&data)
    );
    // 2. Segments 0..=3 are two hours old, the rest young: the next retention pass deletes
    //    0..=3 and keeps segment 4 and after (covered, but younger than the limit).
    for seq in 0..=3 {
        age_segment(&data, seq);
    }
    let p = start(&data, &dir.path().join("2.log"), &flags, &[]);
    next = append_until_snapshots(&client(&p), &data, next, 3);
    wait_until_removed(&data, 3);
    terminate(p);
    let seqs = segment_seqs(&data);
    let last = *seqs.last().unwrap();
    assert_eq!(seqs, (4..=last).collect::<Vec<_>>(), "by age: 0..=3 only");
    // 3. Every segment is old: the next pass deletes up to the oldest kept snapshot's resume
    //    segment and keeps every segment from there on, old as they are.
    for &seq in &seqs {
        age_segment(&data, seq);
    }
    let p = start(&data, &dir.path().join("3.log"), &flags, &[]);
    let c = client(&p);
    let mut i = next;
    // Snapshot files are pruned to the newest 3: wait for one taken after this restart.
    let newest_before = snapshots(&data).last().cloned();
    while snapshots(&data).last() == newest_before.as_ref() {
        c.append("st-0", expected::ANY, vec![event(i, false)])
            .unwrap();
        i += 1;
        assert!(i < next + 20_000, "no snapshot after the restart");
    }
    next = i;
    wait_until_removed(&data, 4);
    drop(c);
    terminate(p);
    let bound = *resume(&data).iter().min().unwrap();
    let seqs = segment_seqs(&data);
    let last = *seqs.last().unwrap();
    assert!(
        bound + 2 < last,
        "old segments the oldest snapshot does not cover: {bound}..{last}"
    );
    assert_eq!(
        seqs,
        (bound..=last).collect::<Vec<_>>(),
        "deleted exactly the old segments below the oldest kept snapshot's resume segment"
    );
    // 4. After a restart the retained history is served, the deleted part is error 12.
    let p = start(&data, &dir.path().join("4.log"), &flags, &[]);
    let c = client(&p);
    assert_eq!(c.stream_info("st-0").unwrap().next_version, next);
    let e = c.read("st-0", 0, 10, Direction::Forward).unwrap_err();
    assert_eq!(
        e.code(),
        Some(evring::protocol::code::INVALID_ARGUMENT),
        "{e}"
    );
    let msg = e.to_string();
    let oldest: u64 = msg
        .rsplit("truncated before LSN ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(oldest > 0 && oldest < next, "{msg}");
    let mut v = oldest;
    while v < next {
        let (events, _) = c.read("st-0", v, 1000, Direction::Forward).unwrap();
        assert!(!events.is_empty());
        for e in events {
            assert_eq!(e.stream_version, v);
            assert_eq!(e.event.data, event(v, false).data, "version {v}");
            v += 1;
        }
    }
}
