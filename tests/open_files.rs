//! The open-file limit against `max_connections`: evringd raises its soft RLIMIT_NOFILE to
//! what `max_connections` needs, and where the hard limit is lower it serves fewer
//! connections (with a warning) so the ones beyond get error 30 rather than an accept that
//! fails with EMFILE and leaves the client hanging while the log fills.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{hello, send};
use evring::protocol::{self, code, FrameHeader, Response, FRAME_HEADER_BYTES};

/// Lets this test process open as many sockets as its hard limit allows.
fn raise_own_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write one struct rlimit, which `lim` provides.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// evringd with RLIMIT_NOFILE set to `soft`:`hard` before it runs; its log goes to `log`.
fn start(data: &Path, log: &Path, soft: u64, hard: u64) -> (Child, String) {
    let addr_file = data.with_extension("addr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evringd"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--partitions", "1"])
        .arg("--addresses-file")
        .arg(&addr_file)
        .args([
            "--set",
            "metrics_listen=\"\"",
            "--set",
            "resp_listen=\"\"",
            "--set",
            "segment_bytes=4194304",
        ])
        .env("EVRING_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    // SAFETY: the closure runs in the child between fork and exec and calls only setrlimit,
    // which is async-signal-safe, on a struct it owns.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    loop {
        if let Some(addr) = std::fs::read_to_string(&addr_file).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("client=").map(String::from))
        }) {
            return (child, addr);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "evringd exited during start-up ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects and sends HELLO; the server's answer: accepted, or the error code it sent before
/// closing. A read that times out fails the test (no answer is not an answer).
fn try_connect(addr: &str) -> Result<TcpStream, u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(&mut s, 1, &hello());
    let mut header = [0u8; FRAME_HEADER_BYTES];
    s.read_exact(&mut header)
        .unwrap_or_else(|e| panic!("no answer to a connection: {e}"));
    let h = FrameHeader::parse(&header).unwrap();
    let mut body = vec![0u8; h.body_len()];
    s.read_exact(&mut body).unwrap();
    match protocol::decode_response(h.opcode, &body).unwrap() {
        Response::Hello { .. } => Ok(s),
        Response::Error { code, .. } => Err(code),
        other => panic!("unexpected {other:?}"),
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_low_soft_open_file_limit_is_raised_to_what_max_connections_needs() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (child, addr) = start(&dir.path().join("data"), &log, 256, 4096);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(soft > 1024, "soft limit after start-up: {soft}\n{limits}");
    // More connections than the original soft limit allowed, all served.
    let held: Vec<TcpStream> = (0..400)
        .map(|i| try_connect(&addr).unwrap_or_else(|c| panic!("connection {i}: error {c}")))
        .collect();
    assert_eq!(held.len(), 400);
    stop(child);
}

#[test]
fn a_hard_open_file_limit_below_max_connections_serves_fewer_and_refuses_the_rest_with_error_30() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (child, addr) = start(&dir.path().join("data"), &log, 300, 300);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        match try_connect(&addr) {
            Ok(s) => held.push(s),
            Err(c) => {
                assert_eq!(c, code::OVERLOADED);
                refused += 1;
            }
        }
    }
    assert!(
        !held.is_empty() && refused > 0 && held.len() + refused == 400,
        "{} served, {refused} refused",
        held.len()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("open-file limit") && text.contains("LimitNOFILE"),
        "the start-up log says what to raise: {text}"
    );
    assert!(
        !text.contains("accepting a client connection failed"),
        "no accept ran out of descriptors: {text}"
    );
    stop(child);
}
