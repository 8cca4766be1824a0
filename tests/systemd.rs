//! The systemd unit and the example configuration shipped in `systemd/`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

#[test]
fn example_config_names_every_key_and_evringd_accepts_it() {
    let printed = Command::new(env!("CARGO_BIN_EXE_evringd"))
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let keys: BTreeSet<String> = String::from_utf8(printed.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
        .collect();
    let example = std::fs::read_to_string(shipped("evring.toml")).unwrap();
    for key in &keys {
        assert!(
            example.contains(&format!("# {key} = ")),
            "systemd/evring.toml does not show {key}"
        );
    }
    // Uncommented, the example is a valid configuration.
    let dir = tempfile::tempdir().unwrap();
    let all = example
        .lines()
        .map(|l| {
            match l
                .strip_prefix("# ")
                .and_then(|r| r.split_once(" = ").map(|kv| (r, kv)))
            {
                Some((rest, (key, _))) if keys.contains(key) => rest,
                _ => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.path().join("evring.toml");
    std::fs::write(&path, all).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_evringd"))
        .arg("--config")
        .arg(&path)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: skipping the unit check");
        return;
    };
    assert!(probe.status.success());
    // Verify a copy whose ExecStart names the binary just built (the unit names
    // /usr/bin/evringd, which exists only once the package is installed).
    let unit = std::fs::read_to_string(shipped("evringd.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("SystemCallFilter="));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("evringd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/evringd", env!("CARGO_BIN_EXE_evringd")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Complaints about other units on this machine are not ours; anything naming our unit is.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("evringd.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {text}");
}

#[test]
fn the_grafana_dashboard_uses_only_documented_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ops/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ops = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    let mut exprs = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            exprs += 1;
            for (i, _) in expr.match_indices("evring_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(
                    ops.contains(&format!("| `{family}`")),
                    "{family} (in {expr:?}) is not documented"
                );
            }
        }
    }
    assert!(exprs >= 7);
}

#[test]
fn the_operations_guide_backs_up_the_data_directory_the_unit_uses() {
    let unit = std::fs::read_to_string(shipped("evringd.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let data_dir = words
        .windows(2)
        .find(|w| w[0] == "--data-dir")
        .map(|w| w[1])
        .expect("the unit passes --data-dir");
    let tmpfiles = std::fs::read_to_string(shipped("evring.tmpfiles.conf")).unwrap();
    assert!(
        tmpfiles.contains(&format!(" {data_dir} ")),
        "tmpfiles creates {data_dir}"
    );
    let ops = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"),
    )
    .unwrap();
    let mut commands = 0;
    for line in ops.lines() {
        let Some(rest) = line.trim().strip_prefix("evring-inspect backup ") else {
            continue;
        };
        let source = rest.split_whitespace().next().unwrap();
        if source.starts_with('/') {
            commands += 1;
            assert_eq!(
                source, data_dir,
                "docs/OPERATIONS.md backs up {source}, but the unit's data directory is \
                 {data_dir}: {line}"
            );
        }
    }
    assert!(commands >= 2, "the backup and upgrade examples");
}
