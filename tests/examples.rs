//! The examples, built and run as a user runs them (`cargo run --release --example NAME`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What Memstate's LoyaltyDB example prints (DevrexLabs/memstate, README.md, from
/// `src/Memstate.Docs.GettingStarted/Configuration/MinimalConfigurationTests.cs`) for
/// `InitCustomer(10, 10)`, `InitCustomer(20, 20)`, `TransferPoints(10, 20, 5)`.
const MEMSTATE_LOYALTY_OUTPUT: &str = "\
Customer[10] balance 10 points.
Customer[20] balance 20 points.
Sent 5 points. | Sender, Customer[10] balance 5 points. | Recipient, Customer[20] balance 25 points.
";

/// What the dashboard example prints: the metrics it adds, then its three views (the sum by
/// label, the top 2 hosts by average cpu_usage, the requests per minute).
const DASHBOARD_OUTPUT: &str = "\
Added 27 metrics from 3 hosts over 3 minutes.
Sum by label:
  cpu_usage     6.13 (9 metrics)
  memory        34.8 (9 metrics)
  requests      1107 (9 metrics)
Top 2 hosts by average cpu_usage (of 3):
  1. web-3 0.91 (max 0.95)
  2. web-1 0.69 (max 0.73)
requests per minute:
  minute 1: sum 358 avg 119.33 (min 95, max 143)
  minute 2: sum 369 avg 123 (min 88, max 150)
  minute 3: sum 380 avg 126.67 (min 102, max 161)
";

/// Builds example `name` in the profile and target directory these tests were built in
/// (`cargo test` builds the examples too; a run of this test file alone may not have), and
/// returns its path.
fn example(name: &str) -> PathBuf {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_evringd")).parent().unwrap();
    let target_dir = bin_dir.parent().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", name, "--target-dir"])
        .arg(target_dir);
    if bin_dir.ends_with("release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo");
    assert!(status.success(), "cargo build --example {name}: {status}");
    let path = bin_dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

#[test]
fn the_loyalty_example_prints_what_memstates_loyaltydb_example_prints() {
    let out = Command::new(example("loyalty")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        MEMSTATE_LOYALTY_OUTPUT
    );
    // The engine replayed its journal after a restart: the same balances.
    assert!(
        stderr.contains(
            "After a restart: Customer[10] balance 5 points. | Customer[20] balance 25 points."
        ),
        "{stderr}"
    );
}

#[test]
fn the_dashboard_example_prints_its_sums_top_hosts_and_series() {
    let out = Command::new(example("dashboard")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), DASHBOARD_OUTPUT);
}
