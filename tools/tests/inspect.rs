//! `evring-inspect` on the checked-in fixture journals (tools/fixtures, written by
//! `examples/make_fixtures.rs`), compared with what the generator recorded in each
//! fixture's `expected.json`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evring-inspect"))
        .args(args)
        .output()
        .expect("run evring-inspect")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn path(name: &str) -> String {
    fixture(name).display().to_string()
}

#[test]
fn verify_accepts_the_clean_journal() {
    let out = inspect(&["verify", &path("clean"), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "no progress bar when stderr is not a terminal"
    );
    let doc = json_of(&out);
    let want = expected("clean");
    assert_eq!(doc["ok"], true);
    for (j, p) in doc["journals"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["partitions"].as_array().unwrap())
    {
        assert_eq!(j["records"], p["records"]);
        assert_eq!(j["next_lsn"], p["next_lsn"]);
        assert_eq!(j["torn_tail"], Value::Null);
    }
    let text = inspect(&["verify", &path("clean")]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("p0: ok") && text.contains("p1: ok"), "{text}");
}

#[test]
fn verify_reports_a_torn_tail_as_recoverable() {
    let out = inspect(&["verify", &path("torn-tail"), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a torn tail is not corruption: {out:?}"
    );
    let doc = json_of(&out);
    let want = expected("torn-tail");
    let j = &doc["journals"][0];
    assert_eq!(j["records"], want["records"]);
    assert_eq!(j["torn_tail"]["segment_seq"], want["torn"]["segment_seq"]);
    assert_eq!(j["torn_tail"]["offset"], want["torn"]["offset"]);
    let text = String::from_utf8(inspect(&["verify", &path("torn-tail")]).stdout).unwrap();
    assert!(text.contains("torn tail at segment"), "{text}");
}

#[test]
fn verify_names_segment_offset_and_check_of_corruption() {
    let out = inspect(&["verify", &path("corrupt-middle"), "--json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let doc = json_of(&out);
    let want = expected("corrupt-middle");
    let fault = &doc["journals"][0]["fault"];
    assert_eq!(doc["ok"], false);
    assert_eq!(fault["segment_seq"], want["fault"]["segment_seq"]);
    assert_eq!(fault["offset"], want["fault"]["offset"]);
    assert!(
        fault["reason"].as_str().unwrap().contains("body checksum"),
        "{fault}"
    );
    assert!(fault["path"]
        .as_str()
        .unwrap()
        .ends_with("0000000000000001.seg"));
    let text = inspect(&["verify", &path("corrupt-middle")]);
    assert_eq!(text.status.code(), Some(2));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("CORRUPT segment 1") && text.contains("offset 36864"),
        "{text}"
    );
}

#[test]
fn list_shows_every_segment_with_its_lsn_range() {
    let out = inspect(&["list", &path("clean"), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json_of(&out);
    let want = expected("clean");
    for (j, p) in doc["journals"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["partitions"].as_array().unwrap())
    {
        let segs = j["segments"].as_array().unwrap();
        let with_frames = segs
            .iter()
            .filter(|s| s["frames"].as_u64().unwrap() > 0)
            .count();
        assert_eq!(
            with_frames as u64,
            p["segments_with_frames"].as_u64().unwrap()
        );
        let records: u64 = segs.iter().map(|s| s["records"].as_u64().unwrap()).sum();
        assert_eq!(records, p["records"].as_u64().unwrap());
        // LSN ranges are contiguous from segment to segment.
        let mut next = 0;
        for s in segs.iter().filter(|s| s["frames"].as_u64().unwrap() > 0) {
            assert_eq!(s["first_lsn"].as_u64().unwrap(), next);
            next = s["end_lsn"].as_u64().unwrap();
        }
    }
}

#[test]
fn stats_counts_streams_types_and_records() {
    let out = inspect(&["stats", &path("clean"), "--partition", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json_of(&out);
    let journals = doc["journals"].as_array().unwrap();
    assert_eq!(journals.len(), 1, "--partition selects one journal");
    let j = &journals[0];
    assert_eq!(j["journal"], "p1");
    assert_eq!(j["records"], expected("clean")["partitions"][1]["records"]);
    assert_eq!(j["streams"], 7);
    assert_eq!(j["event_types"], 3);
}

#[test]
fn dump_prints_every_record_and_honours_from_lsn_and_limit() {
    let out = inspect(&["dump", &path("clean"), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let records: Vec<&Value> = lines.iter().filter(|l| l.get("record").is_some()).collect();
    let want = expected("clean");
    let total: u64 = want["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["records"].as_u64().unwrap())
        .sum();
    assert_eq!(records.len() as u64, total);
    let first = &records[0]["record"];
    assert_eq!(first["lsn"], 0);
    assert_eq!(first["stream"], "order-0");
    assert_eq!(first["stream_version"], 0);
    assert!(first["data"].as_str().unwrap().contains("\"batch\":0"));

    let out = inspect(&[
        "dump",
        &path("clean"),
        "--partition",
        "0",
        "--from-lsn",
        "100",
        "--limit",
        "5",
        "--json",
    ]);
    let lsns: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["record"]["lsn"].as_u64())
        .collect();
    assert_eq!(lsns, [100, 101, 102, 103, 104]);
}

#[test]
fn a_single_segment_file_can_be_verified() {
    let seg = fixture("clean").join("p0").join("0000000000000001.seg");
    let out = inspect(&["verify", &seg.display().to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = json_of(&out);
    assert!(doc["journals"][0]["records"].as_u64().unwrap() > 0);
    let seg = fixture("corrupt-middle")
        .join("p0")
        .join("0000000000000001.seg");
    let out = inspect(&["verify", &seg.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn paths_that_are_not_journals_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = inspect(&["verify", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("neither a data directory"), "{err}");
    let out = inspect(&["list", "/nonexistent/evring"]);
    assert_eq!(out.status.code(), Some(1));
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "hello").unwrap();
    let out = inspect(&["verify", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("not a segment file"));
}

#[test]
fn evring_inspect_renders_a_manual_page() {
    let out = inspect(&["--print-man"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(".TH evring-inspect 1"));
    for sub in ["list", "dump", "verify", "stats"] {
        assert!(text.contains(sub), "evring-inspect(1) lists {sub}");
    }
}

#[test]
fn backup_copies_every_record_of_a_clean_journal() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    let out = inspect(&["backup", &path("clean"), copy.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = json_of(&out);
    let want = expected("clean");
    for (j, p) in doc["stores"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["partitions"].as_array().unwrap())
    {
        assert_eq!(j["records"], p["records"]);
        assert_eq!(j["end_lsn"], p["next_lsn"]);
    }
    let verify = json_of(&inspect(&["verify", copy.to_str().unwrap(), "--json"]));
    assert_eq!(verify["ok"], true, "{verify}");
    for (j, p) in verify["journals"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["partitions"].as_array().unwrap())
    {
        assert_eq!(j["next_lsn"], p["next_lsn"]);
    }
}

#[test]
fn backup_stops_at_a_damaged_frame_and_leaves_a_clean_copy() {
    // What a live copy can meet: a frame not (yet) valid with valid frames after it. The
    // backup keeps the prefix before it, and that prefix verifies clean.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    let out = inspect(&[
        "backup",
        &path("corrupt-middle"),
        copy.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = json_of(&out);
    let fault_lsn = expected("corrupt-middle")["fault"]["first_lsn"].clone();
    assert_eq!(doc["stores"][0]["end_lsn"], fault_lsn);
    let verify = inspect(&["verify", copy.to_str().unwrap(), "--json"]);
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
    assert_eq!(json_of(&verify)["journals"][0]["next_lsn"], fault_lsn);
    // Into a directory that is not empty: refused.
    let again = inspect(&["backup", &path("clean"), copy.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
