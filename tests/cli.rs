//! The `evring` CLI against the real evringd: data from an argument, a file and standard
//! input; reads, info, aggregate and subscribe in text and JSON; errors exit non-zero;
//! evringd and the CLI share an environment.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Server;
use serde_json::Value;

/// `evring` with the test's environment minus the CLI's own variables.
fn evring_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evring"));
    cmd.env_remove("EVRING_ADDR").env_remove("EVRING_TOKEN");
    cmd
}

fn evring(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = evring_command()
        .arg("--addr")
        .arg(addr)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run evring");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn cli_appends_from_argument_file_and_stdin_then_reads_and_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let a = server.addr.as_str();
    assert!(evring(a, &["ping"], None).status.success());

    let first = ok_json(&evring(
        a,
        &[
            "--json",
            "append",
            "cart-1",
            "--type",
            "Added",
            "--data",
            "apple",
            "--value",
            "2.5",
            "--expected",
            "no-stream",
        ],
        None,
    ));
    assert_eq!(first["first_version"], 0);
    let file = dir.path().join("event.bin");
    std::fs::write(&file, b"from a file").unwrap();
    ok_json(&evring(
        a,
        &[
            "--json",
            "append",
            "cart-1",
            "--type",
            "Added",
            "--file",
            file.to_str().unwrap(),
            "--value",
            "1.5",
            "--expected",
            "0",
        ],
        None,
    ));
    ok_json(&evring(
        a,
        &[
            "--json", "append", "cart-1", "--type", "Removed", "--file", "-",
        ],
        Some(b"from stdin"),
    ));

    let read = ok_json(&evring(a, &["--json", "read", "cart-1"], None));
    let events = read["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{read}"));
    let datas: Vec<&str> = events.iter().map(|e| e["data"].as_str().unwrap()).collect();
    assert_eq!(datas, ["apple", "from a file", "from stdin"]);

    let text = evring(a, &["read", "cart-1", "--backward", "--count", "1"], None);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("from stdin") && !text.contains("apple"),
        "{text}"
    );

    let info = ok_json(&evring(a, &["--json", "info", "cart-1"], None));
    assert_eq!(info["next_version"], 3);

    let agg = ok_json(&evring(
        a,
        &[
            "--json",
            "aggregate",
            "--stream",
            "cart-1",
            "--type-prefix",
            "Add",
        ],
        None,
    ));
    let b = &agg["buckets"][0];
    assert_eq!(
        (b["count"].as_u64(), b["sum"].as_f64()),
        (Some(2), Some(4.0)),
        "{agg}"
    );

    let sub = evring(
        a,
        &[
            "--json",
            "subscribe",
            "stream",
            "cart-1",
            "--from",
            "0",
            "--count",
            "3",
        ],
        None,
    );
    assert!(sub.status.success(), "{sub:?}");
    assert_eq!(String::from_utf8(sub.stdout).unwrap().lines().count(), 3);

    // A wrong expected version is an error with a non-zero exit and a message.
    let conflict = evring(
        a,
        &["append", "cart-1", "--data", "x", "--expected", "0"],
        None,
    );
    assert!(!conflict.status.success());
    let err = String::from_utf8(conflict.stderr).unwrap();
    assert!(err.contains("version 2"), "{err}");
    let missing = evring(a, &["read", "no-such-stream"], None);
    assert!(!missing.status.success());
}

#[test]
fn evringd_ignores_the_cli_variables_and_still_refuses_a_misspelt_setting() {
    let dir = tempfile::tempdir().unwrap();
    // A shell that exports the CLI's variables can start evringd, and EVRING_TOKEN does not
    // become the server's auth_token.
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("EVRING_ADDR", "127.0.0.1:1"),
            ("EVRING_TOKEN", "cli-secret"),
        ],
    );
    let ping = evring(&server.addr, &["ping"], None);
    assert!(ping.status.success(), "{ping:?}");
    // The same shell with the CLI pointed at the server by EVRING_ADDR.
    let ping = evring_command()
        .arg("ping")
        .env("EVRING_ADDR", &server.addr)
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    drop(server);

    let data = dir.path().join("data2");
    let (ok, err) = common::start_failure(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        |cmd| {
            cmd.env("EVRING_ADDR", "127.0.0.1:7070")
                .env("EVRING_LISTN", "127.0.0.1:7071");
        },
    );
    assert!(!ok);
    assert!(
        err.contains("EVRING_LISTN") && err.contains("did you mean EVRING_LISTEN?"),
        "{err}"
    );
    assert!(
        !err.contains("EVRING_ADDR:"),
        "only the misspelt name is refused: {err}"
    );
}
