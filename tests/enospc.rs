//! ENOSPC on a real, size-limited filesystem: a tmpfs mounted by the test (as root; skipped
//! with a printed reason otherwise). When the journal cannot prepare its next segment, appends
//! get error 20 (disk full) without poisoning the partition, every acknowledged event stays
//! readable, and appends resume once space is freed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ev, Server};
use evring::protocol::{code, expected, Direction};

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root (mounting a tmpfs needs it)".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with one file until ENOSPC; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    path
}

/// The sum of a counter's series on the metrics endpoint at `addr`.
fn scrape_counter(addr: &str, name: &str) -> f64 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn disk_full_rejects_appends_with_error_20_reads_go_on_and_appends_resume_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_log = tempfile::tempdir().unwrap();
    let mount = match Mount::tmpfs(tmp.path(), "4m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED enospc test: {why}");
            return;
        }
    };
    let data = mount.0.join("data");
    // The log lives outside the full filesystem.
    let log = tmp_log.path().join("evringd.log");
    let server = Server::start_logged(
        &data,
        &log,
        &[
            "--partitions",
            "1",
            "--set",
            "segment_bytes=65536",
            "--set",
            "journal_frame_bytes_max=16384",
            "--set",
            "metrics_listen=\"127.0.0.1:0\"",
        ],
    );
    let client = server.client();
    let payload = |i: u64| format!("event {i} {}", "p".repeat(300)).into_bytes();
    for i in 0..5 {
        client
            .append("s", expected::ANY, vec![ev("E", &payload(i))])
            .unwrap();
    }
    let filler = fill(&mount.0);
    // Each append is one 4 KiB frame: a 64 KiB segment holds 14, so the journal soon needs a
    // new segment and cannot prepare it.
    let mut acked = 5u64;
    let mut full = None;
    for i in 5..200 {
        match client.append("s", expected::ANY, vec![ev("E", &payload(i))]) {
            Ok(r) => {
                assert_eq!(r.first_version, acked);
                acked += 1;
            }
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("appends must fail once the filesystem is full");
    assert_eq!(err.code(), Some(code::DISK_FULL), "{err}");
    // Still full: still error 20, not a poisoned partition (21).
    let again = client
        .append("s", expected::ANY, vec![ev("E", b"still full")])
        .unwrap_err();
    assert_eq!(again.code(), Some(code::DISK_FULL), "{again}");
    // Every append retries the segment and fails: the log says so once (then at most every
    // 10 s), the metric counts each failure.
    for _ in 0..200 {
        let e = client
            .append("s", expected::ANY, vec![ev("E", b"full")])
            .unwrap_err();
        assert_eq!(e.code(), Some(code::DISK_FULL));
    }
    let logged = std::fs::read_to_string(&log)
        .unwrap()
        .matches("preparing the next journal segment failed")
        .count();
    assert!(
        (1..=2).contains(&logged),
        "{logged} log lines for 202 failed attempts"
    );
    let metrics = std::fs::read_to_string(data.with_extension("addr"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("metrics=").map(String::from))
        .unwrap();
    let failures = scrape_counter(&metrics, "evring_segment_prepare_failures_total");
    assert!(failures >= 200.0, "{failures} counted");
    // Reads go on, on the same connection.
    let (events, _) = client.read("s", 0, 1000, Direction::Forward).unwrap();
    assert_eq!(events.len() as u64, acked);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event.data, payload(i as u64));
    }
    // Space returns: appends resume, with no gap in the versions.
    std::fs::remove_file(filler).unwrap();
    let r = client
        .append("s", expected::ANY, vec![ev("E", b"space is back")])
        .unwrap();
    assert_eq!(r.first_version, acked);
    for _ in 0..30 {
        client
            .append("s", expected::ANY, vec![ev("E", b"more")])
            .unwrap();
    }
    drop(client);
    drop(server);
    drop(mount);
}
