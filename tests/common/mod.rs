//! Starting the real `evringd` binary for integration tests.

#![allow(dead_code)]

pub mod help;
pub mod sim;

use std::io::{Read, Write};
use std::net::TcpStream;

use evring::protocol::{self, encode_request, FrameHeader, Request, Response, FRAME_HEADER_BYTES};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `evringd` child process on a loopback port: an ephemeral one (`start`), or a
/// fixed one kept across restarts (`start_fixed`).
pub struct Server {
    pub child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    pub extra: Vec<String>,
    /// The `--listen` address every (re)start uses.
    pub listen: String,
    /// Where the server's log goes (appended across restarts); `None`: the test's stderr.
    pub log: Option<PathBuf>,
    /// Environment variables set for evringd (fault injection).
    pub env: Vec<(String, String)>,
}

impl Server {
    fn new(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Server {
            child: None,
            addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            listen: listen.to_string(),
            log: None,
            env: Vec::new(),
        }
    }

    /// Starts evringd on `data_dir` with small segments, waits until it serves.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// [`Server::start`] on a fixed port, free when the test begins, that every restart
    /// reuses (as systemd's `Restart=` and `systemctl restart` do).
    pub fn start_fixed(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_on(data_dir, &format!("127.0.0.1:{}", free_port()), extra)
    }

    /// [`Server::start`] listening on `listen`.
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut server = Server::new(data_dir, listen, extra);
        server.restart();
        server
    }

    /// [`Server::start`] with the log (level info) appended to `log`.
    pub fn start_logged(data_dir: &Path, log: &Path, extra: &[&str]) -> Server {
        let mut server = Server::new(data_dir, "127.0.0.1:0", extra);
        server.log = Some(log.to_path_buf());
        server.restart();
        server
    }

    /// [`Server::start`] with environment variables (e.g. `EVRINGD_INJECT_*`).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut server = Server::new(data_dir, "127.0.0.1:0", extra);
        server.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        server.restart();
        server
    }

    /// The address the addresses file lists under `key` (`client`, `metrics`, `shard<i>`).
    pub fn listed_addr(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.data_dir.with_extension("addr")).unwrap();
        let prefix = format!("{key}=");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("{key} in the addresses file:\n{text}"))
            .to_string()
    }

    /// The metrics address from the addresses file (start with
    /// `--set metrics_listen="127.0.0.1:0"`).
    pub fn metrics_addr(&self) -> String {
        self.listed_addr("metrics")
    }

    /// The sum of metric `name` over its label sets, scraped from the metrics endpoint (start
    /// with `--set metrics_listen="127.0.0.1:0"`).
    #[allow(dead_code)]
    pub fn metric_sum(&self, name: &str) -> f64 {
        let mut s = TcpStream::connect(self.metrics_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let labelled = format!("{name}{{");
        let plain = format!("{name} ");
        text.lines()
            .filter(|l| l.starts_with(&labelled) || l.starts_with(&plain))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    /// Whether partition `p` has written a snapshot file.
    #[allow(dead_code)]
    pub fn has_snapshot(&self, p: u32) -> bool {
        std::fs::read_dir(self.data_dir.join(format!("p{p}")))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "snap"))
    }

    /// The RESP port from the addresses file (every test server listens on a free one).
    pub fn resp_addr(&self) -> String {
        self.listed_addr("resp")
    }

    /// A Redis client connection to the RESP port.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.resp_addr()))
            .and_then(|c| c.get_connection())
            .expect("connect to the RESP port")
    }

    /// Shard `i`'s own port from the addresses file (start with `shard_ports="auto"`).
    pub fn shard_addr(&self, i: usize) -> String {
        self.listed_addr(&format!("shard{i}"))
    }

    /// SIGKILL, then start again on the same data directory.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: sending a signal to our own child process by pid has no memory effects.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let status = c.wait().expect("wait for evringd");
        status.code()
    }

    /// Starts evringd (again) with this server's data directory, address, flags, log and
    /// environment.
    pub fn restart(&mut self) {
        let (child, addr) = spawn(self);
        self.child = Some(child);
        self.addr = addr;
    }

    pub fn client(&self) -> evring::client::BlockingClient {
        evring::client::BlockingClient::connect(&self.addr, "test", "").expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that is free now (bound to port 0, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn spawn(server: &Server) -> (Child, String) {
    let addr_file = server.data_dir.with_extension("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evringd"));
    cmd.arg("--data-dir")
        .arg(&server.data_dir)
        .arg("--listen")
        .arg(&server.listen)
        .arg("--addresses-file")
        .arg(&addr_file)
        .args([
            "--set",
            "segment_bytes=4194304",
            "--set",
            "metrics_listen=\"\"",
            "--set",
            "resp_listen=\"127.0.0.1:0\"",
        ])
        .args(&server.extra)
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null());
    match &server.log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            cmd.env("EVRING_LOG", "info").stderr(file);
        }
        None => {
            cmd.env("EVRING_LOG", "warn").stderr(Stdio::inherit());
        }
    }
    let mut child = cmd.spawn().expect("start evringd");
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("client=")) {
                return (child, addr.to_string());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("evringd exited during start-up: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "evringd did not become ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An event with a type, data and value.
pub fn ev(event_type: &str, data: &[u8]) -> evring::protocol::Event {
    evring::client::event(event_type, data.to_vec())
}

/// Runs evringd with `args` and returns (exit success, stderr); fails the test if it serves.
pub fn start_failure(
    args: &[&str],
    setup: impl FnOnce(&mut std::process::Command),
) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_evringd"));
    cmd.args(args)
        .args(["--set", "metrics_listen=\"\"", "--set", "resp_listen=\"\""])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    setup(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("evringd started where it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

// Raw protocol access, for tests that send what the client library never would.

pub fn raw_connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

pub fn send(s: &mut TcpStream, id: u64, req: &Request) {
    let mut buf = Vec::new();
    encode_request(&mut buf, id, req);
    s.write_all(&buf).unwrap();
}

pub fn hello() -> Request {
    Request::Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        client_name: "raw".into(),
        auth_token: "".into(),
    }
}

/// Reads one reply, or None when the server closed the connection.
pub fn recv(s: &mut TcpStream) -> Option<(u64, Response)> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    s.read_exact(&mut header).ok()?;
    let h = FrameHeader::parse(&header).unwrap();
    let mut body = vec![0u8; h.body_len()];
    s.read_exact(&mut body).ok()?;
    Some((
        h.request_id,
        protocol::decode_response(h.opcode, &body).unwrap(),
    ))
}

/// Reads one reply, or None once the server closed the connection (EOF or a reset); fails
/// the test if the socket's read timeout passes first.
pub fn recv_or_closed(s: &mut TcpStream) -> Option<(u64, Response)> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    if let Err(e) = s.read_exact(&mut header) {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => return None,
            _ => panic!("no reply and no EOF: {e}"),
        }
    }
    let h = FrameHeader::parse(&header).unwrap();
    let mut body = vec![0u8; h.body_len()];
    s.read_exact(&mut body).expect("a whole frame");
    Some((
        h.request_id,
        protocol::decode_response(h.opcode, &body).unwrap(),
    ))
}

/// Reads error `want`, then requires the server to close the connection: the next read
/// returns end of file (0 bytes) or a reset. A read that times out means the server kept the
/// connection open, and fails the test, as do further bytes.
pub fn expect_error_then_close(s: &mut TcpStream, want: u16) {
    match recv(s) {
        Some((_, Response::Error { code, .. })) => assert_eq!(code, want),
        other => panic!("expected error {want}, got {other:?}"),
    }
    expect_closed(s);
}

/// Fails unless the peer closed `s`: a read returns 0 bytes (EOF) or ECONNRESET within the
/// socket's read timeout (set to 10 s here if none is set).
pub fn expect_closed(s: &mut TcpStream) {
    if s.read_timeout().unwrap().is_none() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(_) => panic!("expected the connection to be closed, got more bytes"),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!(
                "the server kept the connection open ({:?} without EOF)",
                s.read_timeout().unwrap().unwrap()
            )
        }
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

/// Copies a directory tree, leaving out files named in `skip` (a data directory's `LOCK`,
/// a fixture's `expected.json`).
pub fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target, skip);
        } else if !skip.iter().any(|s| e.file_name() == *s) {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// `evring-inspect`, built next to evringd by `cargo test --workspace`.
pub fn inspect_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_evringd")).with_file_name("evring-inspect");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        path.display()
    );
    path
}
