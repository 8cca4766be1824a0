//! The `evring` CLI against the real evringd: data from an argument, a file and standard
//! input; reads, info, aggregate and subscribe in text and JSON; errors exit non-zero and say
//! what is wrong; every command's help has an example; evringd and the CLI share an
//! environment.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Waits for `child` at most `limit`; fails the test (after killing it) if it is still
/// running then.
fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} still ran after {limit:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `evring --addr ADDR args…` with standard input closed, which must end within `limit`.
fn evring_within(addr: &str, args: &[&str], limit: Duration) -> Output {
    let child = evring_command()
        .arg("--addr")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run evring");
    wait_within(child, limit, &format!("evring {args:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
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

#[test]
fn connection_failures_say_what_is_wrong_and_what_to_do() {
    // Nothing listens: said once, with the flag and the variable that set the address.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = evring_within(&closed, &["ping"], Duration::from_secs(10));
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("no evringd answers at {closed}"))
            && err.contains("--addr")
            && err.contains("EVRING_ADDR"),
        "{err}"
    );
    assert!(
        err.matches("refused").count() == 1 && !err.contains("os error"),
        "said once and plainly: {err}"
    );

    // An address without a port, from the flag or the environment.
    let out = evring_within("127.0.0.1", &["ping"], Duration::from_secs(10));
    let err = stderr(&out);
    assert!(
        err.contains("--addr 127.0.0.1: expected HOST:PORT (e.g. 127.0.0.1:7070")
            && err.contains("port is missing"),
        "{err}"
    );
    let out = evring_command()
        .arg("ping")
        .env("EVRING_ADDR", "127.0.0.1")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("EVRING_ADDR=127.0.0.1: expected HOST:PORT"),
        "{out:?}"
    );

    // A port that answers HTTP: refused at once, showing what it answered.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in http.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let started = Instant::now();
    let out = evring_within(&http_addr, &["ping"], Duration::from_secs(10));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{http_addr} is not an evring server (it answered \"HTTP/1.1 400 Bad Request\")"
        )),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after a timeout"
    );

    // A port that accepts and says nothing: a few seconds, then a clear message.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let holder = std::thread::spawn(move || silent.accept().map(|(c, _)| c));
    let started = Instant::now();
    let out = evring_within(&silent_addr, &["ping"], Duration::from_secs(20));
    let took = started.elapsed();
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{silent_addr} accepted the connection but did not answer within 3 s"
        )),
        "{err}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    drop(holder.join());

    // evringd's own metrics port (HTTP): refused at once too.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", "metrics_listen=\"127.0.0.1:0\""],
    );
    let started = Instant::now();
    let out = evring_within(&server.metrics_addr(), &["ping"], Duration::from_secs(10));
    assert!(
        stderr(&out).contains("is not an evring server (it answered \"HTTP/1.1 400 Bad Request\")"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after a timeout"
    );

    // A host name works.
    let port = server.addr.rsplit_once(':').unwrap().1;
    let out = evring_within(
        &format!("localhost:{port}"),
        &["ping"],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn usage_errors_are_refused_at_once_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let a = server.addr.as_str();
    let quick = Duration::from_secs(10);

    // subscribe stream/partition/model need a name; all takes none.
    for (args, want) in [
        (
            &["subscribe", "stream"][..],
            "subscribe stream needs the stream's name",
        ),
        (
            &["subscribe", "partition"][..],
            "subscribe partition needs the partition number",
        ),
        (
            &["subscribe", "partition", "first"][..],
            "the partition is a number",
        ),
        (
            &["subscribe", "model"][..],
            "subscribe model needs the model's name",
        ),
        (
            &["subscribe", "all", "orders"][..],
            "subscribe all takes no NAME",
        ),
    ] {
        let out = evring_within(a, args, quick);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }

    // A failed CAS names the key's version, not a stream's.
    assert!(evring(a, &["kv", "set", "color", "blue"], None)
        .status
        .success());
    let out = evring_within(a, &["kv", "cas", "color", "5", "green"], quick);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("key \"color\" not set: the key is at version 1, not 5"),
        "{err}"
    );
    assert!(!err.contains("stream"), "{err}");
    let out = evring_within(a, &["kv", "cas", "shape", "2", "round"], quick);
    assert!(
        stderr(&out).contains("the key does not exist"),
        "{}",
        stderr(&out)
    );
    // The generic model command says the same (the library's text of error 10).
    let out = evring_within(
        a,
        &[
            "execute",
            "kv",
            r#"{"op":"cas","key":"color","expected_version":3,"value":"red"}"#,
        ],
        quick,
    );
    let err = stderr(&out);
    assert!(
        err.contains("the key is at version 1") && !err.contains("stream"),
        "{err}"
    );

    // An append's conflict names the stream's version and the retry.
    let out = evring_within(a, &["append", "s", "--data", "x", "--expected", "3"], quick);
    assert!(
        stderr(&out).contains("stream \"s\" has no events")
            && stderr(&out).contains("--expected no-stream"),
        "{}",
        stderr(&out)
    );
}

/// Opens a pseudo-terminal: (controller, terminal side).
fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut controller, mut terminal) = (0, 0);
    // SAFETY: openpty writes two descriptors into the out-parameters; the name, termios and
    // winsize pointers may be null. The descriptors are owned by the Files made below.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    unsafe {
        (
            std::fs::File::from_raw_fd(controller),
            std::fs::File::from_raw_fd(terminal),
        )
    }
}

#[test]
fn append_says_it_reads_a_terminal_and_not_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let a = server.addr.as_str();

    // Standard input is a terminal and no --data: evring says what it waits for. A line is
    // typed and the input ended (Ctrl-D at the start of a line).
    let (mut controller, terminal) = pty();
    let child = evring_command()
        .args(["--addr", a, "append", "typed", "--type", "Note"])
        .stdin(terminal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    controller
        .write_all(b"hello from a terminal\n\x04")
        .unwrap();
    let out = wait_within(
        child,
        Duration::from_secs(20),
        "evring append on a terminal",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("reading the event data from standard input; end with Ctrl-D")
            && stderr(&out).contains("--data"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("appended typed v0"), "{out:?}");
    let read = ok_json(&evring(a, &["--json", "read", "typed"], None));
    assert_eq!(read["events"][0]["data"], "hello from a terminal\n");

    // From a pipe: no message.
    let piped = evring(a, &["append", "piped"], Some(b"data"));
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(stderr(&piped), "");
}

#[test]
fn a_subscriber_cut_off_by_sigterm_shows_error_31_and_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &["--partitions", "1"]);
    let a = server.addr.clone();
    for i in 0..3 {
        let data = format!("e{i}");
        assert!(evring(&a, &["append", "s", "--data", &data], None)
            .status
            .success());
    }
    let spawn = |args: &[&str]| {
        evring_command()
            .args(["--addr", a.as_str(), "subscribe"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut subscribers = [
        spawn(&["stream", "s", "--from", "0"]),
        spawn(&["partition", "0", "--from", "0"]),
    ];
    // Both printed the three events: they are live now.
    let mut outputs = Vec::new();
    for child in &mut subscribers {
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut printed = String::new();
        for _ in 0..3 {
            lines.read_line(&mut printed).unwrap();
        }
        assert_eq!(printed.lines().count(), 3, "{printed}");
        outputs.push(lines);
    }
    assert_eq!(server.terminate(), Some(0));
    for (child, want) in subscribers.into_iter().zip(["--from 3", "--from 3"]) {
        let out = wait_within(child, Duration::from_secs(20), "a cut-off subscriber");
        let err = stderr(&out);
        assert!(!out.status.success());
        assert!(
            err.contains("error 31") && err.contains("shutting down"),
            "the server's stop is named: {err}"
        );
        assert!(err.contains(&format!("resume with {want}")), "{err}");
    }
    drop(outputs);
}

#[test]
fn aggregate_takes_human_times_and_shows_empty_buckets_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let a = server.addr.as_str();
    for v in ["1", "2", "6"] {
        assert!(
            evring(a, &["append", "m", "--data", "x", "--value", v], None)
                .status
                .success()
        );
    }
    // The last 10 minutes in one-minute buckets, starting on a whole minute: the events are
    // in the last bucket, the others are empty.
    let agg = ok_json(&evring(
        a,
        &["--json", "aggregate", "--since", "10m", "--bucket", "1m"],
        None,
    ));
    let buckets = agg["buckets"].as_array().unwrap();
    assert!((10..=11).contains(&buckets.len()), "{agg}");
    assert_eq!(buckets[0]["start_ns"].as_u64().unwrap() % 60_000_000_000, 0);
    let last = buckets.last().unwrap();
    assert_eq!(
        (
            last["count"].as_u64(),
            last["sum"].as_f64(),
            last["avg"].as_f64()
        ),
        (Some(3), Some(9.0), Some(3.0)),
        "{agg}"
    );
    let empty = &buckets[0];
    assert_eq!(empty["count"], 0);
    for field in ["min", "max", "avg"] {
        assert!(empty[field].is_null(), "{field} of an empty bucket: {agg}");
    }

    // Text: no NaN, "-" instead.
    let text = evring(a, &["aggregate", "--since", "3m", "--bucket", "1m"], None);
    let text = stdout(&text);
    assert!(!text.contains("NaN"), "{text}");
    assert!(text.contains("count 0 sum 0 min - max - avg -"), "{text}");
    assert!(text.contains("count 3 sum 9 min 1 max 6 avg 3"), "{text}");

    // RFC 3339 and Unix times with units; a past window holds nothing.
    let past = ok_json(&evring(
        a,
        &[
            "--json",
            "aggregate",
            "--from",
            "2024-12-06T08:00:00Z",
            "--to",
            "1733475600s",
            "--bucket",
            "30m",
        ],
        None,
    ));
    let past = past["buckets"].as_array().unwrap();
    assert_eq!(past.len(), 2);
    assert_eq!(past[0]["start_ns"], 1_733_472_000_000_000_000u64);
    assert_eq!(past[1]["start"], "2024-12-06T08:30:00Z");

    // The nanosecond flags still work, and without --to-ns the window ends now (it asked
    // for 27M buckets before).
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let from_ns = (now_ns - 600_000_000_000).to_string();
    let ns = ok_json(&evring(
        a,
        &[
            "--json",
            "aggregate",
            "--from-ns",
            &from_ns,
            "--bucket-ns",
            "60000000000",
        ],
        None,
    ));
    let counts: u64 = ns["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counts, 3, "{ns}");

    // Too many buckets, or a bare number: refused before asking the server, with the fix.
    let out = evring_within(
        a,
        &["aggregate", "--since", "2d", "--bucket", "1s"],
        Duration::from_secs(10),
    );
    assert!(stderr(&out).contains("at most 100000"), "{}", stderr(&out));
    let out = evring_within(
        a,
        &["aggregate", "--from", "1733472000"],
        Duration::from_secs(10),
    );
    assert!(stderr(&out).contains("1733472000s"), "{}", stderr(&out));
}

/// Appends the events the grouped aggregations below read: metrics with JSON data in streams
/// m-1, m-2 and m-3 (one without a label, one whose value is not a number), and a note whose
/// data is not JSON but which has a value.
fn append_metrics(a: &str) {
    for (stream, event_type, data, value) in [
        (
            "m-1",
            "metric",
            r#"{"label":"cpu","host":"a","value":1}"#,
            None,
        ),
        (
            "m-1",
            "metric",
            r#"{"label":"cpu","host":"b","value":3}"#,
            None,
        ),
        (
            "m-2",
            "metric",
            r#"{"label":"cpu","host":"b","value":5}"#,
            None,
        ),
        (
            "m-2",
            "metric",
            r#"{"label":"mem","host":"a","value":10}"#,
            None,
        ),
        (
            "m-2",
            "metric",
            r#"{"label":"mem","host":"c","value":"high"}"#,
            None,
        ),
        ("m-3", "metric", r#"{"host":"a","value":7}"#, None),
        ("other", "note", "not json", Some("2")),
    ] {
        let mut args = vec!["append", stream, "--type", event_type, "--data", data];
        if let Some(v) = value {
            args.extend(["--value", v]);
        }
        let out = evring(a, &args, None);
        assert!(out.status.success(), "{out:?}");
    }
}

/// `evring --json aggregate --since 10m ARGS…`.
fn aggregate_json(a: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json", "aggregate", "--since", "10m"];
    all.extend_from_slice(args);
    ok_json(&evring(a, &all, None))
}

/// Each group of a JSON answer as (key, count, sum, missing).
fn group_rows(agg: &Value) -> Vec<(String, u64, f64, u64)> {
    agg["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{agg}"))
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                g["count"].as_u64().unwrap(),
                g["sum"].as_f64().unwrap(),
                g["missing"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A JSON value to compare an answer's with.
fn v(x: impl Into<Value>) -> Value {
    x.into()
}

fn row(key: &str, count: u64, sum: f64, missing: u64) -> (String, u64, f64, u64) {
    (key.to_string(), count, sum, missing)
}

#[test]
fn aggregate_groups_by_a_json_field_with_top_k_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let a = server.addr.as_str();
    append_metrics(a);

    // Every group, by key: the events without a label (m-3's, the note) are ungrouped, the
    // one whose value is a string is missing in its group.
    let all = aggregate_json(a, &["--group-by", "data.label", "--field", "data.value"]);
    assert_eq!(
        group_rows(&all),
        [row("cpu", 3, 9.0, 0), row("mem", 1, 10.0, 1)],
        "{all}"
    );
    assert_eq!(
        (
            &all["matched"],
            &all["missing"],
            &all["ungrouped"],
            &all["groups_total"]
        ),
        (&v(7), &v(1), &v(2), &v(2)),
        "{all}"
    );
    let cpu = &all["groups"][0];
    assert_eq!(
        (&cpu["min"], &cpu["max"], &cpu["avg"]),
        (&v(1.0), &v(5.0), &v(3.0))
    );

    // Top 1 by sum, by count, by average.
    for (order, want) in [("sum", "mem"), ("count", "cpu"), ("avg", "mem")] {
        let top = aggregate_json(
            a,
            &[
                "--group-by",
                "data.label",
                "--field",
                "data.value",
                "--top",
                "1",
                "--order",
                order,
            ],
        );
        assert_eq!(top["groups"].as_array().unwrap().len(), 1, "{top}");
        assert_eq!(top["groups"][0]["key"], want, "--order {order}: {top}");
        assert_eq!(top["groups_total"], 2, "{top}");
    }

    // The same in text: the group's key and figures, then the counts.
    let out = evring(
        a,
        &[
            "aggregate",
            "--since",
            "10m",
            "--group-by",
            "data.label",
            "--field",
            "data.value",
            "--top",
            "1",
            "--order",
            "sum",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "\"mem\" count 1 sum 10 min 10 max 10 avg 10 missing 1\n\
         matched 7 events, missing 1, ungrouped 2, groups shown 1 of 2\n"
    );

    // Streams by prefix, grouped by stream; the type, exact or by prefix, grouped by type.
    let streams = aggregate_json(
        a,
        &[
            "--stream-prefix",
            "m-",
            "--group-by",
            "stream",
            "--field",
            "data.value",
        ],
    );
    assert_eq!(
        group_rows(&streams),
        [
            row("m-1", 2, 4.0, 0),
            row("m-2", 2, 15.0, 1),
            row("m-3", 1, 7.0, 0)
        ],
        "{streams}"
    );
    let types = aggregate_json(a, &["--group-by", "type"]);
    assert_eq!(
        group_rows(&types),
        [row("metric", 0, 0.0, 6), row("note", 1, 2.0, 0)],
        "{types}"
    );
    for (args, count) in [
        (&["--type", "note"][..], 1),
        (&["--type", "not"][..], 0),
        (&["--type-prefix", "not"][..], 1),
        (&["--stream", "m-1", "--field", "data.value"][..], 2),
    ] {
        let agg = aggregate_json(a, args);
        assert_eq!(agg["buckets"][0]["count"], count, "{args:?}: {agg}");
    }

    // Too many groups for --max-groups: refused, not answered with some of them.
    let out = evring(
        a,
        &[
            "aggregate",
            "--since",
            "10m",
            "--group-by",
            "data.host",
            "--max-groups",
            "2",
        ],
        None,
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("more than 2 groups"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn aggregate_filters_on_a_json_field_counts_the_missing_and_shows_empty_buckets_empty() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let a = server.addr.as_str();
    append_metrics(a);

    // --field alone: the numbers of data.value; a string and data that is not JSON are
    // missing.
    let agg = aggregate_json(a, &["--field", "data.value"]);
    let b = &agg["buckets"][0];
    assert_eq!(
        (&agg["matched"], &agg["missing"], &b["count"], &b["sum"]),
        (&v(7), &v(2), &v(5), &v(26.0)),
        "{agg}"
    );
    // --where keeps the events whose field equals the value.
    let cpu = aggregate_json(a, &["--where", "data.label=cpu", "--field", "data.value"]);
    let b = &cpu["buckets"][0];
    assert_eq!(
        (
            &cpu["matched"],
            &b["count"],
            &b["sum"],
            &b["min"],
            &b["max"],
            &b["avg"]
        ),
        (&v(3), &v(3), &v(9.0), &v(1.0), &v(5.0), &v(3.0)),
        "{cpu}"
    );
    let hosts = aggregate_json(
        a,
        &[
            "--where",
            "data.label=cpu",
            "--field",
            "data.value",
            "--group-by",
            "data.host",
        ],
    );
    assert_eq!(
        group_rows(&hosts),
        [row("a", 1, 1.0, 0), row("b", 2, 8.0, 0)],
        "{hosts}"
    );
    // Split at the first "=": the value may hold one.
    let none = aggregate_json(a, &["--where", "data.label=cpu=x"]);
    assert_eq!(none["matched"], 0, "{none}");

    // In buckets of a minute since 3 minutes ago: the events are in the last bucket, the
    // first is empty: count 0, sum 0, no min, max or average (null in JSON, "-" in text).
    let args = [
        "--since",
        "3m",
        "--bucket",
        "1m",
        "--where",
        "data.label=cpu",
        "--field",
        "data.value",
        "--group-by",
        "data.host",
    ];
    let agg = {
        let mut all = vec!["--json", "aggregate"];
        all.extend_from_slice(&args);
        ok_json(&evring(a, &all, None))
    };
    let b_buckets = agg["groups"][1]["buckets"].as_array().unwrap();
    assert!((3..=4).contains(&b_buckets.len()), "{agg}");
    let empty = &b_buckets[0];
    assert_eq!((&empty["count"], &empty["sum"]), (&v(0), &v(0.0)), "{agg}");
    for field in ["min", "max", "avg"] {
        assert!(empty[field].is_null(), "{field} of an empty bucket: {agg}");
    }
    let last = b_buckets.last().unwrap();
    assert_eq!((&last["count"], &last["sum"]), (&v(2), &v(8.0)), "{agg}");
    let mut text_args = vec!["aggregate"];
    text_args.extend_from_slice(&args);
    let text = stdout(&evring(a, &text_args, None));
    assert!(!text.contains("NaN"), "{text}");
    assert!(
        text.contains("\"b\" count 2 sum 8 min 3 max 5 avg 4 missing 0\n"),
        "{text}"
    );
    assert!(
        text.contains("Z count 0 sum 0 min - max - avg -\n"),
        "{text}"
    );
    assert!(
        text.contains("Z count 2 sum 8 min 3 max 5 avg 4\n"),
        "{text}"
    );
    assert!(
        text.ends_with("matched 3 events, missing 0, ungrouped 0, groups shown 2 of 2\n"),
        "{text}"
    );
}

#[test]
fn aggregate_refuses_a_bad_where_field_or_group_by_with_the_form_expected() {
    let quick = Duration::from_secs(10);
    // Refused before any connection: no server needed.
    let a = "127.0.0.1:1";
    for (args, want) in [
        (
            &["--where", "data.label"][..],
            "expected data.<key>[.<key>...]=VALUE",
        ),
        (
            &["--where", "label=cpu"][..],
            "\"label\" is not a field of the event's JSON data",
        ),
        (&["--where", "data.=cpu"][..], "expected data.<key>"),
        (
            &["--field", "amount"][..],
            "expected value (the event's value) or data.<key>[.<key>...]",
        ),
        (&["--field", "data."][..], "e.g. --field data.amount"),
        (
            &["--group-by", "host"][..],
            "expected stream, type or data.<key>[.<key>...]",
        ),
        (&["--top", "2"][..], "--group-by"),
        (&["--top", "0", "--group-by", "type"][..], "--top"),
        (
            &["--order", "max", "--group-by", "type"][..],
            "possible values: count, sum, avg",
        ),
        (
            &["--stream", "a", "--stream-prefix", "b"][..],
            "cannot be used with",
        ),
        (
            &["--type", "a", "--type-prefix", "b"][..],
            "cannot be used with",
        ),
        (
            &["--max-groups", "10001", "--group-by", "type"][..],
            "--max-groups",
        ),
    ] {
        let mut all = vec!["aggregate"];
        all.extend_from_slice(args);
        let out = evring_within(a, &all, quick);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn every_command_has_an_example_and_every_argument_has_help() {
    for bin in [env!("CARGO_BIN_EXE_evring"), env!("CARGO_BIN_EXE_evringd")] {
        let (problems, checked) = common::help::help_problems(Path::new(bin));
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        if bin.ends_with("/evring") {
            for command in ["evring append", "evring subscribe", "evring kv cas"] {
                assert!(checked.iter().any(|c| c == command), "{checked:?}");
            }
        }
    }
}

#[test]
fn aggregate_before_what_the_ring_holds_says_where_to_retry_from() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", "ring_capacity_events=2", "--set", "partitions=1"],
    );
    let a = server.addr.as_str();
    for v in ["1", "2", "3"] {
        assert!(
            evring(a, &["append", "m", "--data", "x", "--value", v], None)
                .status
                .success()
        );
    }
    // The first event (server clock) left the ring: a window from an hour ago is refused.
    let out = evring(a, &["aggregate", "--since", "1h"], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("server error 12"), "{err}");
    let from = err
        .split("retry with --from ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("a retry hint in {err}"))
        .to_string();
    assert!(from.ends_with("ns"), "{err}");
    // Retried as told: the two events the ring holds.
    let agg = ok_json(&evring(a, &["--json", "aggregate", "--from", &from], None));
    let count: u64 = agg["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(count, 2, "{agg}");
}

/// `evring trim` by each rule and `evring delete` say what they deleted, in text and JSON;
/// the events are gone for `evring read`; a missing stream, two rules, no rule or a time that
/// is not one are refused with what to do.
#[test]
fn trim_and_delete_say_what_they_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let a = server.addr.as_str();
    let quick = Duration::from_secs(10);
    let c = server.client();
    for i in 0..10 {
        c.append(
            "c1",
            evring::protocol::expected::ANY,
            vec![common::ev("T", format!("{i}").as_bytes())],
        )
        .unwrap();
    }

    let out = evring_within(a, &["trim", "c1", "--keep-last", "4"], quick);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "trimmed c1: deleted 6 events (all but the newest 4 events)\n"
    );
    let out = evring_within(a, &["--json", "trim", "c1", "--before-version", "8"], quick);
    assert_eq!(
        ok_json(&out),
        serde_json::json!({"stream": "c1", "deleted": 2, "rule": {"before_version": 8}})
    );
    let out = evring_within(a, &["trim", "c1", "--older-than", "1h"], quick);
    assert!(
        stdout(&out).starts_with("trimmed c1: deleted 0 events (those older than 20"),
        "{out:?}"
    );
    let read = ok_json(&evring_within(a, &["--json", "read", "c1"], quick));
    let versions: Vec<u64> = read["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [8, 9]);
    let out = evring_within(
        a,
        &[
            "--json",
            "trim",
            "c1",
            "--older-than",
            "2024-12-06T08:00:00Z",
        ],
        quick,
    );
    assert_eq!(
        ok_json(&out),
        serde_json::json!({"stream": "c1", "deleted": 0,
                           "rule": {"older_than_ns": 1_733_472_000_000_000_000u64}})
    );

    let out = evring_within(a, &["delete", "c1"], quick);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "deleted stream c1 (2 events)\n");
    let out = evring_within(a, &["read", "c1"], quick);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    for args in [&["delete", "c1"][..], &["trim", "c1", "--keep-last", "1"]] {
        let out = evring_within(a, args, quick);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr(&out).contains("stream \"c1\" not found")
                && stderr(&out).contains("check the name"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    c.append("c1", -2, vec![common::ev("T", b"again")]).unwrap();
    let out = ok_json(&evring_within(a, &["--json", "delete", "c1"], quick));
    assert_eq!(out, serde_json::json!({"stream": "c1", "deleted": 1}));

    // Usage errors, before any request.
    for (args, want) in [
        (
            &["trim", "c1", "--keep-last", "1", "--before-version", "2"][..],
            "cannot be used with",
        ),
        (
            &["trim", "c1"][..],
            "--keep-last <N>|--before-version <V>|--older-than",
        ),
        (
            &["trim", "c1", "--older-than", "yesterday"][..],
            "expected an age",
        ),
        (
            &["trim", "c1", "--older-than", "1733472000"][..],
            "expected an age",
        ),
        (&["delete"][..], "<STREAM>"),
    ] {
        let out = evring_within(a, args, quick);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}

/// `evring group create/read/ack/pending/info`: two consumers of one group get distinct
/// events, printed with their IDs; ack empties what pending listed; a missing group exits
/// with status 1 and says to create it.
#[test]
fn group_commands_create_read_ack_and_list_pending() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let a = server.addr.as_str();
    let quick = Duration::from_secs(10);
    let c = server.client();
    for i in 0..4 {
        c.append(
            "g1",
            evring::protocol::expected::ANY,
            vec![common::ev("T", format!("e{i}").as_bytes())],
        )
        .unwrap();
    }

    let out = evring_within(a, &["group", "create", "g1", "work", "--start", "0"], quick);
    assert_eq!(
        stdout(&out),
        "created group work on g1 (from 0)\n",
        "{out:?}"
    );
    let out = evring_within(
        a,
        &["group", "read", "g1", "work", "w1", "--count", "2"],
        quick,
    );
    assert!(out.status.success(), "{out:?}");
    let first = stdout(&out);
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 2, "{first}");
    assert!(
        lines[0].ends_with(" g1 v0 lsn 1 p0 T e0") || lines[0].contains(" g1 v0 "),
        "{first}"
    );
    assert!(
        lines[1].contains(" g1 v1 ") && lines[1].ends_with("T e1"),
        "{first}"
    );
    let out = evring_within(a, &["--json", "group", "read", "g1", "work", "w2"], quick);
    let read: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(read.len(), 2, "one JSON object a line: {out:?}");
    assert_eq!(
        (&read[0]["data"], &read[1]["data"]),
        (&"e2".into(), &"e3".into())
    );
    let ids: Vec<String> = lines
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();

    let out = evring_within(a, &["group", "pending", "g1", "work"], quick);
    assert_eq!(
        stdout(&out),
        format!("4 pending, {} .. {}\n  w1: 2\n  w2: 2\n", ids[0], {
            // The highest is w2's last: not printed by the first read.
            let p = c.group_pending("g1", "work", None).unwrap();
            match p {
                evring::client::PendingReply::Summary { range, .. } => range.unwrap().1.to_string(),
                other => panic!("{other:?}"),
            }
        })
    );
    let out = evring_within(
        a,
        &[
            "group",
            "pending",
            "g1",
            "work",
            "--consumer",
            "w1",
            "--count",
            "10",
        ],
        quick,
    );
    let listed = stdout(&out);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed
        .lines()
        .all(|l| l.contains(" w1 idle ") && l.ends_with("delivered 1x")));

    let mut args = vec!["group", "ack", "g1", "work"];
    args.extend(ids.iter().map(String::as_str));
    let out = evring_within(a, &args, quick);
    assert_eq!(stdout(&out), "acknowledged 2 of 2\n", "{out:?}");
    let out = evring_within(a, &["group", "info", "g1"], quick);
    let info = stdout(&out);
    assert!(info.starts_with("group work: last delivered "), "{info}");
    assert!(info.contains("entries read 4, lag 0, 2 pending"), "{info}");
    assert!(
        info.contains("  consumer w1: 0 pending\n  consumer w2: 2 pending"),
        "{info}"
    );

    let out = evring_within(a, &["group", "read", "g1", "nope", "w1"], quick);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("evring group create g1 nope"),
        "{out:?}"
    );
}
