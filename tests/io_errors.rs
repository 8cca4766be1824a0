//! A write error on the real server (injected: `EVRINGD_INJECT_WRITE_FAILURE_AFTER`, since a
//! real disk cannot fail on demand): the append whose frame failed gets error 21 and no
//! acknowledgement, the partition refuses every later append with error 21, reads of what
//! was acknowledged go on, and after a restart everything acknowledged is there and appends
//! work again.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evring::protocol::{code, expected, Direction};

#[test]
fn a_failed_write_poisons_the_partition_with_error_21_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr_file = dir.path().join("addr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_evringd"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--partitions",
            "1",
            "--addresses-file",
        ])
        .arg(&addr_file)
        .args([
            "--set",
            "segment_bytes=4194304",
            "--set",
            "metrics_listen=\"\"",
            "--set",
            "resp_listen=\"\"",
        ])
        .env("EVRINGD_INJECT_WRITE_FAILURE_AFTER", "40")
        .env("EVRING_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let addr = loop {
        if let Some(a) = std::fs::read_to_string(&addr_file).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("client=").map(String::from))
        }) {
            break a;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    };
    let c = evring::client::BlockingClient::connect(&addr, "t", "").unwrap();
    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..200u32 {
        let data = format!("event {i}").into_bytes();
        match c.append("s", expected::ANY, vec![common::ev("E", &data)]) {
            Ok(r) => {
                assert_eq!(r.first_version, acked.len() as u64);
                acked.push(data);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("the injected write failure must surface");
    assert_eq!(e.code(), Some(code::PARTITION_UNAVAILABLE), "{e}");
    assert!(!acked.is_empty());
    // Poisoned: every later append is refused too, reads of acknowledged events go on.
    for _ in 0..3 {
        let e = c
            .append("s", expected::ANY, vec![common::ev("E", b"later")])
            .unwrap_err();
        assert_eq!(e.code(), Some(code::PARTITION_UNAVAILABLE), "{e}");
    }
    let (events, _) = c.read("s", 0, 1000, Direction::Forward).unwrap();
    assert_eq!(events.len(), acked.len());
    drop(c);
    let _ = child.kill();
    let _ = child.wait();
    // Restart without the fault: everything acknowledged, nothing else, appends resume.
    let server = common::Server::start(&data, &[]);
    let c = server.client();
    let (events, _) = c.read("s", 0, 1000, Direction::Forward).unwrap();
    let got: Vec<Vec<u8>> = events.into_iter().map(|e| e.event.data).collect();
    assert_eq!(got, acked);
    let r = c
        .append("s", expected::ANY, vec![common::ev("E", b"after restart")])
        .unwrap();
    assert_eq!(r.first_version, acked.len() as u64);
}
