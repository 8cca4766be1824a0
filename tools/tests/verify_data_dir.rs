//! `evring-inspect verify DATA_DIR` on a data directory written by the real evringd (stream
//! events and key-value entries, then a clean stop, which leaves snapshots of both), damaged
//! one file at a time: a key-value journal frame, a partition snapshot, a key-value snapshot,
//! the MANIFEST (another store id, or unparsable), a served model's journal. Each damage
//! must make verify exit 2 and name the damaged file first.
//!
//! evringd is found next to evring-inspect: `cargo test --workspace` builds both (or
//! `cargo build --bin evringd` with the same profile first).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

fn inspect_bin() -> &'static str {
    env!("CARGO_BIN_EXE_evring-inspect")
}

fn evringd_bin() -> PathBuf {
    let path = Path::new(inspect_bin()).with_file_name("evringd");
    assert!(
        path.exists(),
        "{} is missing: build it with the same profile (cargo build --bin evringd, or cargo \
         test --workspace)",
        path.display()
    );
    path
}

/// An evringd child, killed if the test ends before it stops.
struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn evringd(data: &Path, addr_file: &Path) -> Command {
    let mut cmd = Command::new(evringd_bin());
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--partitions", "1"])
        .arg("--addresses-file")
        .arg(addr_file)
        .args([
            "--set",
            "segment_bytes=4194304",
            "--set",
            "metrics_listen=\"\"",
            "--set",
            "resp_listen=\"\"",
        ])
        .env("EVRING_LOG", "error")
        .stdout(Stdio::null());
    cmd
}

/// Runs evringd on `data`: 20 stream events and 12 key-value sets (one frame each, so a
/// damaged early frame is vouched for by later ones), then SIGTERM, which snapshots the
/// partition and its key-value store.
fn write_data_dir(data: &Path) {
    let addr_file = data.with_extension("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut daemon = Daemon(Some(
        evringd(data, &addr_file)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start evringd"),
    ));
    let started = Instant::now();
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            if let Some(a) = text.lines().find_map(|l| l.strip_prefix("client=")) {
                break a.to_string();
            }
        }
        let child = daemon.0.as_mut().unwrap();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("evringd exited during start-up: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "evringd did not become ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let client = evring::client::BlockingClient::connect(&addr, "test", "").expect("connect");
    for i in 0..20u32 {
        client
            .append(
                "orders",
                evring::protocol::expected::ANY,
                vec![evring::client::event("Placed", format!("order {i}"))],
            )
            .expect("append");
    }
    for i in 0..12u32 {
        let cmd = serde_json::json!({"op": "set", "key": format!("key{i}"), "value": "v"});
        client
            .execute("kv", cmd.to_string().into_bytes())
            .expect("kv set");
    }
    drop(client);
    let mut child = daemon.0.take().unwrap();
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    let status = child.wait().expect("wait for evringd");
    assert!(status.success(), "evringd stopped with {status}");
}

/// The data directory every test copies, written once per test run.
fn pristine() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("verify-data-dir-pristine");
        let _ = std::fs::remove_dir_all(&dir);
        write_data_dir(&dir);
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A fresh copy of the pristine data directory.
fn copy_of_pristine(tmp: &tempfile::TempDir) -> PathBuf {
    let dir = tmp.path().join("data");
    copy_dir(pristine(), &dir);
    dir
}

fn flip_byte(file: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
}

/// The one snapshot file in `dir`.
fn snapshot_in(dir: &Path) -> PathBuf {
    let snaps: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    assert_eq!(
        snaps.len(),
        1,
        "one snapshot in {}: {snaps:?}",
        dir.display()
    );
    snaps[0].clone()
}

fn verify(dir: &Path, json: bool) -> Output {
    let mut cmd = Command::new(inspect_bin());
    cmd.arg("verify").arg(dir);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run evring-inspect")
}

fn verify_json(dir: &Path) -> (Option<i32>, Value) {
    let out = verify(dir, true);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify JSON ({e}): {out:?}"));
    (out.status.code(), doc)
}

/// Verify must exit 2 with `file` as its first fault, `reason` in the fault, and the text
/// output naming the file too.
fn assert_first_fault(dir: &Path, file: &Path, reason: &str) -> Value {
    let (code, doc) = verify_json(dir);
    assert_eq!(
        code,
        Some(2),
        "verify exits 2 on a damaged {}: {doc:#}",
        file.display()
    );
    assert_eq!(doc["ok"], false, "{doc:#}");
    let first = &doc["faults"][0];
    assert_eq!(
        first["path"].as_str().map(PathBuf::from).as_deref(),
        Some(file),
        "the first fault names {}: {doc:#}",
        file.display()
    );
    assert!(
        first["reason"].as_str().unwrap().contains(reason),
        "the fault says {reason:?}: {first}"
    );
    let text = verify(dir, false);
    assert_eq!(text.status.code(), Some(2));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&file.display().to_string()) && text.contains("CORRUPT"),
        "{text}"
    );
    doc
}

#[test]
fn a_clean_data_directory_verifies_with_every_store_and_snapshot_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_pristine(&tmp);
    let (code, doc) = verify_json(&dir);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["manifest"]["ok"], true);
    assert_eq!(doc["manifest"]["partitions"], 1);
    let journals: Vec<&str> = doc["journals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["journal"].as_str().unwrap())
        .collect();
    assert_eq!(journals, ["p0", "p0/kv"]);
    assert_eq!(doc["journals"][0]["records"], 20);
    assert_eq!(doc["journals"][1]["records"], 12);
    let snapshots = doc["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 2, "{doc:#}");
    assert!(snapshots.iter().all(|s| s["ok"] == true), "{doc:#}");
    assert_eq!(doc["faults"], serde_json::json!([]));
    let text = String::from_utf8(verify(&dir, false).stdout).unwrap();
    for line in [
        "MANIFEST: ok",
        "p0: ok",
        "p0/kv: ok",
        "p0 snapshot-",
        "p0/kv snapshot-",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

#[test]
fn a_damaged_key_value_journal_frame_is_found_and_evringd_refuses_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_pristine(&tmp);
    let seg = dir.join("p0/kv/journal/0000000000000000.seg");
    // Inside the body of the first frame (after the two header blocks and its 96-byte
    // header); eleven later frames say it was acknowledged.
    flip_byte(&seg, 8192 + 96 + 10);
    let doc = assert_first_fault(&dir, &seg, "body checksum");
    assert_eq!(doc["faults"][0]["offset"], 8192, "{doc:#}");
    assert_eq!(doc["faults"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["journals"][1]["ok"], false);

    // evringd refuses that directory and names the same file.
    let out = evringd(&dir, &tmp.path().join("addr"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(Some(out));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "evringd started on a damaged key-value journal"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(
        &mut daemon.0.take().unwrap().stderr.take().unwrap(),
        &mut err,
    )
    .unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("0000000000000000.seg") && err.contains("evring-inspect verify"),
        "{err}"
    );
}

#[test]
fn a_damaged_partition_snapshot_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_pristine(&tmp);
    let snap = snapshot_in(&dir.join("p0"));
    let last = std::fs::metadata(&snap).unwrap().len() - 1;
    flip_byte(&snap, last);
    assert_first_fault(&dir, &snap, "body checksum");
}

#[test]
fn a_damaged_key_value_snapshot_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_pristine(&tmp);
    let snap = snapshot_in(&dir.join("p0/kv"));
    // The store id, in the header.
    flip_byte(&snap, 20);
    assert_first_fault(&dir, &snap, "header checksum");
}

#[test]
fn a_manifest_with_another_store_id_is_named_and_not_the_journals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_pristine(&tmp);
    let manifest = dir.join("MANIFEST");
    let text = std::fs::read_to_string(&manifest).unwrap();
    // Another hex digit at the start of the store id: still a well-formed MANIFEST.
    let at = text.find("store_id=").unwrap() + "store_id=".len();
    let digit = if &text[at..=at] == "0" { "1" } else { "0" };
    let changed = format!("{}{digit}{}", &text[..at], &text[at + 1..]);
    std::fs::write(&manifest, changed).unwrap();
    let doc = assert_first_fault(&dir, &manifest, "store id");
    assert_eq!(
        doc["faults"].as_array().unwrap().len(),
        1,
        "only the MANIFEST is at fault: {doc:#}"
    );
    assert_eq!(doc["manifest"]["ok"], false);
}

#[test]
fn an_unreadable_manifest_is_named_and_the_journals_are_still_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_pristine(&tmp);
    let manifest = dir.join("MANIFEST");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("partitions=", "partitionz=")).unwrap();
    let doc = assert_first_fault(&dir, &manifest, "malformed");
    assert_eq!(doc["journals"][0]["journal"], "p0");
    assert_eq!(doc["journals"][0]["ok"], true, "{doc:#}");
}

#[test]
fn a_served_models_journal_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_pristine(&tmp);
    // A model's store has the key-value store's layout (CODEC, snapshots, journal/).
    copy_dir(&dir.join("p0/kv"), &dir.join("model-copy"));
    let (code, doc) = verify_json(&dir);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["journals"][2]["journal"], "model-copy");
    assert_eq!(doc["journals"][2]["records"], 12);
    let seg = dir.join("model-copy/journal/0000000000000000.seg");
    flip_byte(&seg, 8192 + 96 + 10);
    assert_first_fault(&dir, &seg, "body checksum");
    // `--partition` checks only that partition's stores.
    let out = Command::new(inspect_bin())
        .arg("verify")
        .arg(&dir)
        .args(["--partition", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
