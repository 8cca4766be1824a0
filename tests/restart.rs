//! Restarting evringd on the same fixed port at once, while clients still hold connections
//! to the old process: after SIGKILL and after a clean stop (SIGTERM).
//!
//! The old server's side of each connection lingers in FIN-WAIT-2 or TIME-WAIT for up to a
//! minute. A listener made without SO_REUSEADDR leaves those sockets blocking every later
//! bind of the port, so systemd's `Restart=on-failure` and `systemctl restart` failed under
//! load. The test holds the connections open across the restart, as real clients do.

mod common;

use std::net::TcpStream;

use common::{ev, hello, raw_connect, recv, send, Server};
use evring::protocol::{expected, Direction, Response};

/// Five raw connections, each past HELLO, held open by the caller.
fn hold_connections(addr: &str) -> Vec<TcpStream> {
    (0..5)
        .map(|i| {
            let mut s = raw_connect(addr);
            send(&mut s, i, &hello());
            assert!(
                matches!(recv(&mut s), Some((_, Response::Hello { .. }))),
                "HELLO on held connection {i}"
            );
            s
        })
        .collect()
}

fn restart_with_clients_attached(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_fixed(&data, &[]);
    let before = server.addr.clone();
    let c = server.client();
    for i in 0..10 {
        c.append(
            "restart-1",
            expected::ANY,
            vec![ev("E", format!("{i}").as_bytes())],
        )
        .unwrap();
    }
    let held = hold_connections(&server.addr);
    match signal {
        "SIGKILL" => server.kill(),
        _ => assert_eq!(server.terminate(), Some(0), "a clean stop exits 0"),
    }
    // At once, with the old connections' server side still lingering.
    server.restart();
    assert_eq!(
        server.addr, before,
        "the restart serves the same fixed port"
    );
    let c = server.client();
    let (events, _) = c.read("restart-1", 0, 100, Direction::Forward).unwrap();
    assert_eq!(
        events.len(),
        10,
        "every acknowledged event after the {signal} restart"
    );
    c.append("restart-1", 9, vec![ev("E", b"10")]).unwrap();
    drop(held);
    // And once more, now with the first restart's clients attached too.
    let held = hold_connections(&server.addr);
    server.kill();
    server.restart();
    server.client().ping().unwrap();
    let (events, _) = server
        .client()
        .read("restart-1", 0, 100, Direction::Forward)
        .unwrap();
    assert_eq!(events.len(), 11);
    drop(held);
}

#[test]
fn a_restart_on_the_same_port_succeeds_at_once_after_sigkill_with_clients_attached() {
    restart_with_clients_attached("SIGKILL");
}

#[test]
fn a_restart_on_the_same_port_succeeds_at_once_after_sigterm_with_clients_attached() {
    restart_with_clients_attached("SIGTERM");
}

#[test]
fn a_restart_with_fixed_shard_ports_succeeds_at_once_after_sigkill_with_clients_attached() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Two shards, each with its own fixed port besides the client port.
    let base = loop {
        let p = common::free_port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let shard_ports = format!("shard_ports=\"{base}\"");
    let args = [
        "--partitions",
        "2",
        "--set",
        "shards=2",
        "--set",
        "pin_cpus=false",
        "--set",
        &shard_ports,
    ];
    let mut server = Server::start_fixed(&data, &args);
    server
        .client()
        .append("restart-2", expected::ANY, vec![ev("E", b"x")])
        .unwrap();
    let mut held = Vec::new();
    for port in [base, base + 1] {
        held.extend(hold_connections(&format!("127.0.0.1:{port}")));
    }
    held.extend(hold_connections(&server.addr));
    server.kill();
    server.restart();
    let (events, _) = server
        .client()
        .read("restart-2", 0, 10, Direction::Forward)
        .unwrap();
    assert_eq!(events.len(), 1);
    for port in [base, base + 1] {
        drop(hold_connections(&format!("127.0.0.1:{port}")));
    }
    drop(held);
}
