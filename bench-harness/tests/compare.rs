//! A tiny `evring-bench compare` (evring and the raw disk, one short round each): the JSON
//! has the documented shape, the charts are written, and `--verify` fails when an
//! acknowledged event is missing; evring-resp drives evringd's RESP port without errors,
//! and `--verify` fails unless its streams hold exactly the XADDs acknowledged; a ping workload
//! runs on evring and the floor server and is compared with it. No timing is asserted.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench() -> Command {
    let exe = env!("CARGO_BIN_EXE_evring-bench");
    assert!(
        Path::new(exe).with_file_name("evringd").exists(),
        "evringd must be built next to evring-bench (cargo test --workspace builds it)"
    );
    Command::new(exe)
}

/// `evring-bench compare WORKLOAD ARGS --dir DIR [--out OUT]`, run to its end.
fn compare(workload: &Path, args: &[&str], dir: &Path, out: Option<&Path>) -> std::process::Output {
    let mut cmd = bench();
    cmd.arg("compare")
        .arg(workload)
        .args(args)
        .arg("--dir")
        .arg(dir);
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    cmd.output().unwrap()
}

fn workload() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads/tiny.toml")
        .display()
        .to_string()
}

#[test]
fn a_tiny_compare_writes_json_and_charts_and_verify_reads_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = bench()
        .args([
            "compare",
            &workload(),
            "--targets",
            "evring,disk",
            "--rounds",
            "1",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .arg("--verify")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("verify: all"), "{stdout}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tiny.json")).unwrap()).unwrap();
    assert_eq!(doc["workload"]["name"], "tiny");
    assert_eq!(doc["workload"]["connections"], 4);
    let rounds = doc["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "one round of each target");
    for r in rounds {
        assert!(r["events_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["round"], 1);
        assert!(r["latency_ms"].as_array().unwrap().len() >= 5);
    }
    let summary = doc["summary"].as_array().unwrap();
    let targets: Vec<&str> = summary
        .iter()
        .map(|s| s["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["evring", "disk"]);
    for s in summary {
        let q = &s["requests_per_s"];
        assert!(q["min"].as_f64() <= q["median"].as_f64());
        assert!(q["median"].as_f64() <= q["max"].as_f64());
    }
    let ratio = &doc["ratios"][0];
    assert_eq!(ratio["peer"], "disk");
    assert_eq!(ratio["unit"], "bytes/s");
    assert_eq!(ratio["per_round"].as_array().unwrap().len(), 1);
    assert!(doc["verify"]["acknowledged_events"].as_u64().unwrap() > 0);
    assert_eq!(doc["verify"]["failures"].as_array().unwrap().len(), 0);
    for chart in ["tiny-throughput.svg", "tiny-latency.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("evring"), "{chart}");
    }
}

#[test]
fn evring_resp_runs_the_redis_commands_and_is_compared_with_native_evring() {
    // tiny.toml sends 2 events per request: MULTI, 2 × XADD, EXEC on the RESP port.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = bench()
        .args([
            "compare",
            &workload(),
            "--targets",
            "evring,evring-resp",
            "--rounds",
            "1",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .arg("--verify")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tiny.json")).unwrap()).unwrap();
    let summary = doc["summary"].as_array().unwrap();
    let targets: Vec<&str> = summary
        .iter()
        .map(|s| s["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["evring", "evring-resp"]);
    assert!(
        stdout.contains("verify: evring-resp's streams held exactly the XADDs acknowledged"),
        "{stdout}"
    );
    for s in summary {
        assert_eq!(s["errors"], 0, "{s}");
        assert!(s["events_per_s"].as_f64().unwrap() > 0.0, "{s}");
    }
    let ratios = doc["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 1, "{ratios:?}");
    assert_eq!(ratios[0]["subject"], "evring-resp");
    assert_eq!(ratios[0]["peer"], "evring");
    assert_eq!(ratios[0]["unit"], "events/s");
}

#[test]
fn verify_fails_when_an_acknowledged_event_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let run = bench()
        .args([
            "compare",
            &workload(),
            "--targets",
            "evring",
            "--rounds",
            "1",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--verify", "--verify-fault"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("--verify failed") && err.contains("is missing"),
        "{err}"
    );
}

#[test]
fn verify_fails_when_evring_resp_acknowledged_more_than_its_streams_hold() {
    let dir = tempfile::tempdir().unwrap();
    let run = bench()
        .args([
            "compare",
            &workload(),
            "--targets",
            "evring-resp",
            "--rounds",
            "1",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--verify", "--verify-fault"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("--verify failed") && err.contains("XADDs acknowledged"),
        "{err}"
    );
}

#[test]
fn a_bad_workload_file_is_refused_with_its_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "connections = 4\npipelines = 2\n").unwrap();
    let run = bench().arg("compare").arg(&path).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("pipelines"));
}

#[test]
fn groups_consume_reads_and_acks_on_evring_resp_and_checks_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consume.toml");
    std::fs::write(
        &path,
        "name = \"consume\"\nkind = \"groups-consume\"\nconnections = 4\ncount = 5\n\
         streams = 2\npayload_bytes = 40\nprefill = 100000\nduration = \"400ms\"\n\
         warmup = \"100ms\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = compare(
        &path,
        &["--targets", "evring-resp", "--rounds", "1"],
        dir.path(),
        Some(&out),
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("consumed exactly once by 4 consumers"),
        "{err}"
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("consume.json")).unwrap()).unwrap();
    assert_eq!(doc["workload"]["kind"], "groups-consume");
    let s = &doc["summary"][0];
    assert_eq!(s["target"], "evring-resp");
    assert!(s["events_per_s"].as_f64().unwrap() > 0.0, "{s}");

    // The append targets cannot run it.
    let run = compare(
        &path,
        &["--targets", "evring", "--rounds", "1"],
        dir.path(),
        None,
    );
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("RESP targets only"));
}

#[test]
fn a_ping_workload_runs_on_evring_and_the_floors_and_compares_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ping.toml");
    std::fs::write(
        &path,
        "name = \"ping\"\nkind = \"ping\"\nconnections = 4\npipeline = 2\n\
         duration = \"300ms\"\nwarmup = \"100ms\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = compare(
        &path,
        &[
            "--targets",
            "evring,evring-resp,floor,floor-native",
            "--rounds",
            "1",
            "--verify",
        ],
        dir.path(),
        Some(&out),
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("nothing to read back"), "{err}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ping.json")).unwrap()).unwrap();
    assert_eq!(doc["workload"]["kind"], "ping");
    for s in doc["summary"].as_array().unwrap() {
        assert_eq!(s["errors"], 0, "{s}");
        let per_s = s["requests_per_s"]["median"].as_f64().unwrap();
        assert!(per_s > 0.0, "{s}");
        assert_eq!(
            s["events_per_s"].as_f64().unwrap(),
            per_s,
            "a PING is one event"
        );
        assert_eq!(s["mb_per_s"].as_f64().unwrap(), 0.0, "{s}");
    }
    let pairs: Vec<String> = doc["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}/{}", r["subject"], r["peer"]).replace('"', ""))
        .collect();
    assert!(
        pairs.contains(&"evring/floor-native".to_string()),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&"evring-resp/floor".to_string()),
        "{pairs:?}"
    );

    // The floor answers PING only: an append workload is refused.
    let run = compare(
        Path::new(&workload()),
        &["--targets", "evring,floor"],
        dir.path(),
        None,
    );
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("answers PING only"));
}
