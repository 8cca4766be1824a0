//! A tiny `evring-bench groups` (20,000 events, one counted round): every server starts and
//! is filled, every request's reply is checked by the run itself, and the tables are printed.
//! No timing is asserted.

use std::path::Path;
use std::process::Command;

#[test]
fn a_tiny_groups_run_checks_every_reply_and_prints_its_tables() {
    let exe = env!("CARGO_BIN_EXE_evring-bench");
    assert!(
        Path::new(exe).with_file_name("evringd").exists(),
        "evringd must be built next to evring-bench (cargo test --workspace builds it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(exe)
        .args(["groups", "--events", "20000", "--runs", "1"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for row in [
        "value sum ",
        "data.amount sum ",
        "stream top-10 by count ",
        "label top-5 by avg, host=web-17 ",
        "data.amount sum ÷ value sum, 1 partition",
        "type top-10 by sum: 4 partitions ÷ sum of parts",
    ] {
        assert!(stdout.contains(row), "no {row:?} in\n{stdout}");
    }
}
