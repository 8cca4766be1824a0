//! The RESP port with a real Redis client (the `redis` crate) on the real evringd: streams
//! written and read with XADD, XLEN, XRANGE and XREVRANGE in Redis's terms, one keyspace with
//! the native protocol, databases, authentication, replies in request order under
//! pipelining, protocol errors, and every acknowledged XADD back after kill -9.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{ev, Server};
use evring::protocol::{expected, Direction};
use redis::{RedisResult, Value};

type Entries = Vec<(String, Vec<(String, String)>)>;

fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--partitions",
        "4",
        "--set",
        "shards=2",
        "--set",
        "pin_cpus=false",
    ];
    args.extend_from_slice(extra);
    Server::start(&dir.join("data"), &args)
}

fn xrange(c: &mut redis::Connection, key: &str, start: &str, end: &str) -> Entries {
    redis::cmd("XRANGE")
        .arg(key)
        .arg(start)
        .arg(end)
        .query(c)
        .unwrap()
}

fn xlen(c: &mut redis::Connection, key: impl redis::ToRedisArgs) -> u64 {
    redis::cmd("XLEN").arg(key).query(c).unwrap()
}

fn error_text(r: RedisResult<Value>) -> String {
    let e = r.expect_err("an error reply");
    e.to_string()
}

#[test]
fn xadd_xlen_xrange_and_xrevrange_behave_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let id: String = redis::cmd("XADD")
        .arg("s")
        .arg("1-1")
        .arg("a")
        .arg("1")
        .query(&mut c)
        .unwrap();
    assert_eq!(id, "1-1");
    let id: String = redis::cmd("XADD")
        .arg("s")
        .arg("1-*")
        .arg("b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(id, "1-2");
    let id: String = redis::cmd("XADD")
        .arg("s")
        .arg("5")
        .arg("c")
        .arg("3")
        .query(&mut c)
        .unwrap();
    assert_eq!(id, "5-0");
    let auto: String = redis::cmd("XADD")
        .arg("s")
        .arg("*")
        .arg("d")
        .arg("4")
        .arg("e")
        .arg("5")
        .query(&mut c)
        .unwrap();
    let (ms, seq) = auto.split_once('-').unwrap();
    assert!(
        ms.parse::<u64>().unwrap() > 1_700_000_000_000 && seq == "0",
        "{auto}"
    );
    assert_eq!(xlen(&mut c, "s"), 4);
    assert_eq!(xlen(&mut c, "nothing"), 0);
    let all = xrange(&mut c, "s", "-", "+");
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], ("1-1".into(), vec![("a".into(), "1".into())]));
    assert_eq!(
        all[3].1,
        vec![("d".into(), "4".into()), ("e".into(), "5".into())]
    );
    // Exclusive and incomplete bounds, COUNT, and the reverse order.
    let ids = |e: &Entries| e.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&xrange(&mut c, "s", "(1-1", "5")), ["1-2", "5-0"]);
    assert_eq!(ids(&xrange(&mut c, "s", "1", "1")), ["1-1", "1-2"]);
    let rev: Entries = redis::cmd("XREVRANGE")
        .arg("s")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(2)
        .query(&mut c)
        .unwrap();
    assert_eq!(ids(&rev), [auto.as_str(), "5-0"]);
    // Errors in Redis's words.
    let small = redis::cmd("XADD")
        .arg("s")
        .arg("5-0")
        .arg("x")
        .arg("y")
        .query(&mut c);
    assert!(error_text(small).contains("equal or smaller than the target stream top item"),);
    let zero = redis::cmd("XADD")
        .arg("t")
        .arg("0-0")
        .arg("x")
        .arg("y")
        .query(&mut c);
    assert!(error_text(zero).contains("must be greater than 0-0"));
    let arity = redis::cmd("XADD").arg("s").arg("*").arg("x").query(&mut c);
    assert!(error_text(arity).contains("wrong number of arguments for 'xadd' command"));
    let bad = redis::cmd("XRANGE")
        .arg("s")
        .arg("x")
        .arg("+")
        .query(&mut c);
    assert!(error_text(bad).contains("Invalid stream ID"));
    let unknown = redis::cmd("NOSUCH").arg("a").query(&mut c);
    assert!(error_text(unknown).contains("unknown command 'NOSUCH', with args beginning with: 'a'"));
    // NOMKSTREAM: no stream, no entry.
    let none: Option<String> = redis::cmd("XADD")
        .arg("fresh")
        .arg("NOMKSTREAM")
        .arg("*")
        .arg("a")
        .arg("1")
        .query(&mut c)
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(xlen(&mut c, "fresh"), 0);
}

#[test]
fn one_keyspace_with_the_native_protocol_and_separate_databases() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let native = server.client();
    let mut e = ev("OrderPlaced", b"{\"qty\":3}");
    e.value = 2.5;
    native.append("orders", expected::ANY, vec![e]).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("orders")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let entries = xrange(&mut c, "orders", "-", "+");
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0].1,
        vec![
            ("type".into(), "OrderPlaced".into()),
            ("data".into(), "{\"qty\":3}".into()),
            ("value".into(), "2.5".into()),
        ]
    );
    assert_eq!(entries[1].1, vec![("f".into(), "v".into())]);
    let (events, _) = native.read("orders", 0, 10, Direction::Forward).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event.event_type, "$fields");
    assert_eq!(events[1].event.data, b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
    // Database 9 is its own namespace.
    let _: () = redis::cmd("SELECT").arg(9).query(&mut c).unwrap();
    assert_eq!(xlen(&mut c, "orders"), 0);
    let _: String = redis::cmd("XADD")
        .arg("orders")
        .arg("*")
        .arg("g")
        .arg("w")
        .query(&mut c)
        .unwrap();
    assert_eq!(xlen(&mut c, "orders"), 1);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    assert_eq!(xlen(&mut c, "orders"), 2);
    let out = redis::cmd("SELECT").arg(16).query::<Value>(&mut c);
    assert!(error_text(out).contains("DB index is out of range"));
}

#[test]
fn pipelined_replies_come_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let mut pipe = redis::pipe();
    for i in 0..200 {
        // Keys over every partition, so the writes complete on both shards in any order.
        pipe.cmd("XADD")
            .arg(format!("k{}", i % 7))
            .arg("*")
            .arg("i")
            .arg(i);
        if i % 50 == 0 {
            pipe.cmd("PING");
            pipe.cmd("XLEN").arg(format!("k{}", i % 7));
        }
    }
    let replies: Vec<Value> = pipe.query(&mut c).unwrap();
    let mut i = 0;
    for n in 0..200 {
        assert!(
            matches!(replies[i], Value::BulkString(_)),
            "{n}: {:?}",
            replies[i]
        );
        i += 1;
        if n % 50 == 0 {
            assert!(
                matches!(&replies[i], Value::SimpleString(s) if s == "PONG" ),
                "{:?}",
                replies[i]
            );
            assert!(
                matches!(replies[i + 1], Value::Int(_)),
                "{:?}",
                replies[i + 1]
            );
            i += 2;
        }
    }
    let total: u64 = (0..7).map(|k| xlen(&mut c, format!("k{k}"))).sum();
    assert_eq!(total, 200);
}

#[test]
fn auth_is_required_when_the_server_has_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--set", "auth_token=\"s3cret\""]);
    let mut c = redis::Client::open(format!("redis://{}/", server.resp_addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    let refused = redis::cmd("XLEN").arg("s").query::<Value>(&mut c);
    assert!(error_text(refused).contains("Authentication required"));
    let wrong = redis::cmd("AUTH").arg("nope").query::<Value>(&mut c);
    assert!(error_text(wrong).contains("WRONGPASS"));
    let _: () = redis::cmd("AUTH").arg("s3cret").query(&mut c).unwrap();
    assert_eq!(xlen(&mut c, "s"), 0);
    let mut with_url = redis::Client::open(format!("redis://:s3cret@{}/", server.resp_addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(xlen(&mut with_url, "s"), 0);
}

#[test]
fn a_protocol_error_closes_that_connection_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut good = server.redis();
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg("*")
        .arg("a")
        .arg("1")
        .query(&mut good)
        .unwrap();
    let mut raw = std::net::TcpStream::connect(server.resp_addr()).unwrap();
    raw.write_all(b"PING\r\n*1\r\n$x\r\n").unwrap();
    let mut got = Vec::new();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    raw.read_to_end(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    assert_eq!(xlen(&mut good, "s"), 1);
}

#[test]
fn every_acknowledged_xadd_comes_back_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let acked: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop) = (acked.clone(), stop.clone());
            let mut c = server.redis();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{}", (w + i) % 6);
                    let value = format!("{w}:{i}");
                    let r: RedisResult<String> = redis::cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("v")
                        .arg(&value)
                        .query(&mut c);
                    match r {
                        Ok(id) => acked.lock().unwrap().push((key, id, value)),
                        Err(_) => return,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 2000 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    server.restart();
    let mut c = server.redis();
    let acked = acked.lock().unwrap();
    for k in 0..6 {
        let key = format!("w{k}");
        let entries = xrange(&mut c, &key, "-", "+");
        let have: std::collections::HashMap<&str, &str> = entries
            .iter()
            .map(|(id, f)| (id.as_str(), f[0].1.as_str()))
            .collect();
        for (_, id, value) in acked.iter().filter(|(k2, _, _)| *k2 == key) {
            assert_eq!(have.get(id.as_str()), Some(&value.as_str()), "{key} {id}");
        }
    }
    eprintln!("{} acknowledged XADDs came back", acked.len());
}

fn xadd(c: &mut redis::Connection, key: &str, id: &str, field: &str, value: &str) -> String {
    redis::cmd("XADD")
        .arg(key)
        .arg(id)
        .arg(field)
        .arg(value)
        .query(c)
        .unwrap()
}

fn int(c: &mut redis::Connection, cmd: &mut redis::Cmd) -> i64 {
    cmd.query(c).unwrap()
}

/// XDEL, XTRIM, XADD MAXLEN/MINID, DEL and FLUSHDB are journaled: what they deleted stays
/// deleted after kill -9 (recovered from the journal) and after a restart from a snapshot;
/// a deleted stream's name starts again from nothing.
#[test]
fn deletions_and_trims_are_durable_and_deleted_entries_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &["--set", "snapshot_every_events=60"]);
    let mut c = server.redis();
    for i in 1..=20 {
        xadd(&mut c, "s", &format!("{i}-0"), "i", &i.to_string());
    }
    assert_eq!(
        int(
            &mut c,
            redis::cmd("XDEL").arg("s").arg("3-0").arg("5").arg("99-0")
        ),
        2
    );
    assert_eq!(int(&mut c, redis::cmd("XDEL").arg("s").arg("3-0")), 0);
    assert_eq!(
        int(&mut c, redis::cmd("XTRIM").arg("s").arg("MAXLEN").arg(15)),
        3
    );
    assert_eq!(
        int(&mut c, redis::cmd("XTRIM").arg("s").arg("MINID").arg("8")),
        2
    );
    let err = redis::cmd("XTRIM")
        .arg("s")
        .arg("MAXLEN")
        .arg(1)
        .arg("LIMIT")
        .arg(1)
        .query::<Value>(&mut c);
    assert!(error_text(err).contains("LIMIT cannot be used without the special ~ option"));
    let id: String = redis::cmd("XADD")
        .arg("capped")
        .arg("MAXLEN")
        .arg(2)
        .arg("*")
        .arg("a")
        .arg(1)
        .query(&mut c)
        .unwrap();
    for _ in 0..4 {
        let _: String = redis::cmd("XADD")
            .arg("capped")
            .arg("MAXLEN")
            .arg("=")
            .arg(2)
            .arg("*")
            .arg("a")
            .arg(1)
            .query(&mut c)
            .unwrap();
    }
    assert_eq!(xlen(&mut c, "capped"), 2);
    assert!(!xrange(&mut c, "capped", "-", "+")
        .iter()
        .any(|(i, _)| *i == id));
    xadd(&mut c, "gone", "*", "a", "1");
    xadd(&mut c, "gone", "*", "a", "2");
    assert_eq!(int(&mut c, redis::cmd("DEL").arg("gone").arg("never")), 1);
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    xadd(&mut c, "other-db", "*", "a", "1");
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    assert_eq!(xlen(&mut c, "other-db"), 0);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    let want = |c: &mut redis::Connection| {
        let ids: Vec<String> = xrange(c, "s", "-", "+")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let expect: Vec<String> = (8..=20).map(|i| format!("{i}-0")).collect();
        assert_eq!(ids, expect);
        assert_eq!(xlen(c, "s"), 13);
        assert_eq!(xlen(c, "capped"), 2);
    };
    want(&mut c);
    assert_eq!(xlen(&mut c, "gone"), 0);
    // A deleted stream's name starts again from nothing.
    assert_eq!(xadd(&mut c, "gone", "1-1", "b", "1"), "1-1");
    let native = server.client();
    let (events, _) = native.read("gone", 0, 10, Direction::Forward).unwrap();
    assert_eq!((events.len(), events[0].stream_version), (1, 0));
    let (events, _) = native.read("s", 0, 100, Direction::Forward).unwrap();
    assert_eq!(events.len(), 13, "READ passes over deleted versions");
    assert_eq!(events[0].stream_version, 7);
    drop((c, native));
    // From the journal after kill -9, then with more entries from a snapshot.
    server.kill_and_restart();
    let mut c = server.redis();
    want(&mut c);
    let gone = xrange(&mut c, "gone", "-", "+");
    assert_eq!(
        gone,
        [("1-1".to_string(), vec![("b".to_string(), "1".to_string())])]
    );
    // Enough events in every partition for each to write a snapshot.
    for p in 0..4 {
        let key = (0..)
            .map(|k| format!("filler-{k}"))
            .find(|k| evring::protocol::partition_of(k, 4) == p)
            .unwrap();
        for i in 0..80 {
            xadd(&mut c, &key, "*", "i", &i.to_string());
        }
    }
    let snapshots = || {
        (0..4)
            .filter(|p| {
                std::fs::read_dir(server.data_dir.join(format!("p{p}")))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "snap"))
            })
            .count()
    };
    let started = std::time::Instant::now();
    while snapshots() < 4 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no snapshot"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(c);
    server.kill_and_restart();
    let mut c = server.redis();
    want(&mut c);
    assert_eq!(xlen(&mut c, "gone"), 1);
}
