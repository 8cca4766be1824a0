//! systemd readiness: evringd sends READY=1 to $NOTIFY_SOCKET only once it has recovered and
//! serves, and STOPPING=1 on SIGTERM before a clean exit.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use evring::protocol::Direction;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "expected.json" {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn run_case(socket_env: &str, sock: &UnixDatagram, dir: &std::path::Path) {
    // A data directory with history, so there is recovery to finish before READY.
    let data = dir.join("data");
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fixtures/torn-tail"),
        &data,
    );
    let addr_file = dir.join("addr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_evringd"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--set", "metrics_listen=\"\""])
        .args(["--set", "resp_listen=\"\""])
        .arg("--addresses-file")
        .arg(&addr_file)
        .env("NOTIFY_SOCKET", socket_env)
        .env("EVRING_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = recv(sock);
    assert!(ready.starts_with("READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready:?}"
    );
    // When READY arrives the server has recovered and serves the recovered history.
    let text = std::fs::read_to_string(&addr_file).expect("address written before READY");
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("client="))
        .unwrap();
    let c = evring::client::BlockingClient::connect(addr, "notify", "").unwrap();
    let (events, _) = c.read("order-0", 0, 1000, Direction::Forward).unwrap();
    assert!(!events.is_empty());
    drop(c);
    // SAFETY: signalling our own child by pid has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let stopping = recv(sock);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn ready_after_recovery_and_stopping_on_sigterm_path_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    run_case(path.to_str().unwrap(), &sock, dir.path());
}

#[test]
fn ready_and_stopping_through_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("evring-notify-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    run_case(&format!("@{name}"), &sock, dir.path());
}
