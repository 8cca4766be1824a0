//! The RESP port with a real Redis client (the `redis` crate) on the real evringd: streams
//! written and read with XADD, XLEN, XRANGE and XREVRANGE in Redis's terms, one keyspace with
//! the native protocol, databases, authentication, replies in request order under
//! pipelining, protocol errors, and every acknowledged XADD back after kill -9. XREAD with
//! Redis 7.0's own tests of it, blocked readers woken by XADD and by a native APPEND, timeouts,
//! closed connections and a server stop leaving no wait behind (`evring_xread_waits`), keys
//! on both shards. The keyspace commands (DBSIZE, EXISTS, TYPE, KEYS, SCAN) over every
//! partition and database, INFO (its commandstats and errorstats counted as redis-server 7.0
//! counts them), CONFIG GET/SET, and MULTI/EXEC/DISCARD (queued replies, EXECABORT,
//! CROSSSLOT, order on the wire).

mod common;

use std::collections::HashMap;
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

// XREAD, with Redis 7.0's tests of it (tests/unit/type/stream.tcl) as Rust tests: a second
// connection blocks while the first writes, as Redis's deferring client does.

/// XREAD's reply: per key with entries, the key and its entries; `None`: the null array.
type Streams = Vec<(String, Entries)>;

/// A server whose metrics endpoint shows how many XREADs wait at each partition.
fn start_with_metrics(dir: &std::path::Path) -> Server {
    start(dir, &["--set", "metrics_listen=\"127.0.0.1:0\""])
}

fn xread(c: &mut redis::Connection, args: &[&str]) -> Option<Streams> {
    redis::cmd("XREAD").arg(args).query(c).unwrap()
}

fn xadd(c: &mut redis::Connection, key: &str, id: &str, fields: &[&str]) -> String {
    redis::cmd("XADD")
        .arg(key)
        .arg(id)
        .arg(fields)
        .query(c)
        .unwrap()
}

fn xadd1(c: &mut redis::Connection, key: &str, id: &str, field: &str, value: &str) -> String {
    xadd(c, key, id, &[field, value])
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
        xadd1(&mut c, "s", &format!("{i}-0"), "i", &i.to_string());
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
    xadd1(&mut c, "gone", "*", "a", "1");
    xadd1(&mut c, "gone", "*", "a", "2");
    assert_eq!(int(&mut c, redis::cmd("DEL").arg("gone").arg("never")), 1);
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    xadd1(&mut c, "other-db", "*", "a", "1");
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
    assert_eq!(xadd1(&mut c, "gone", "1-1", "b", "1"), "1-1");
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
            xadd1(&mut c, &key, "*", "i", &i.to_string());
        }
    }
    let snapshots = || (0..4).filter(|&p| server.has_snapshot(p)).count();
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

/// Sends XREAD without waiting for its reply ([`reply`] reads it).
fn send_xread(c: &mut redis::Connection, args: &[&str]) {
    c.send_packed_command(&redis::cmd("XREAD").arg(args).get_packed_command())
        .unwrap();
}

fn reply(c: &mut redis::Connection) -> Option<Streams> {
    redis::from_owned_redis_value(c.recv_response().unwrap()).unwrap()
}

/// The XREADs waiting at the server's partitions (`evring_xread_waits`, summed).
fn waits(server: &Server) -> f64 {
    server.metric_sum("evring_xread_waits")
}

/// Waits until `n` XREAD waits are registered at the partitions (Redis's
/// `wait_for_blocked_clients_count`).
fn wait_for_waits(server: &Server, n: f64) {
    let started = std::time::Instant::now();
    while waits(server) != n {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{} XREAD waits, not {n}",
            waits(server)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

/// Redis's `insert_into_stream_key`: ten entries `item N otherfield foo`.
fn insert_into_stream_key(c: &mut redis::Connection, key: &str) {
    for i in 0..10 {
        xadd(c, key, "*", &["item", &i.to_string(), "otherfield", "foo"]);
    }
}

#[test]
fn xread_with_non_empty_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut r = server.redis();
    insert_into_stream_key(&mut r, "mystream");
    let res = xread(&mut r, &["COUNT", "1", "STREAMS", "mystream", "0-0"]).unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].0, "mystream");
    assert_eq!(res[0].1.len(), 1);
    assert_eq!(res[0].1[0].1[0], ("item".into(), "0".into()));
}

#[test]
fn non_blocking_xread_with_empty_streams() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut r = server.redis();
    let res: Value = redis::cmd("XREAD")
        .arg(&["STREAMS", "s1{t}", "s2{t}", "0-0", "0-0"])
        .query(&mut r)
        .unwrap();
    assert_eq!(res, Value::Nil);
}

#[test]
fn xread_with_non_empty_second_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut r = server.redis();
    insert_into_stream_key(&mut r, "mystream{t}");
    let res = xread(
        &mut r,
        &[
            "COUNT",
            "1",
            "STREAMS",
            "nostream{t}",
            "mystream{t}",
            "0-0",
            "0-0",
        ],
    )
    .unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].0, "mystream{t}");
    assert_eq!(res[0].1[0].1[0], ("item".into(), "0".into()));
}

#[test]
fn blocking_xread_waiting_new_data_then_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut r = server.redis();
    // Blocking XREAD waiting new data.
    xadd(&mut r, "s2{t}", "*", &["old", "abcd1234"]);
    let mut rd = server.redis();
    send_xread(
        &mut rd,
        &[
            "BLOCK", "20000", "STREAMS", "s1{t}", "s2{t}", "s3{t}", "$", "$", "$",
        ],
    );
    wait_for_waits(&server, waits_for(&["s1{t}", "s2{t}", "s3{t}"]));
    xadd(&mut r, "s2{t}", "*", &["new", "abcd1234"]);
    let res = reply(&mut rd).unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].0, "s2{t}");
    assert_eq!(res[0].1[0].1, fields(&[("new", "abcd1234")]));
    wait_for_waits(&server, 0.0);
    // Blocking XREAD waiting old data: served at once.
    let mut rd = server.redis();
    send_xread(
        &mut rd,
        &[
            "BLOCK", "20000", "STREAMS", "s1{t}", "s2{t}", "s3{t}", "$", "0-0", "$",
        ],
    );
    xadd(&mut r, "s2{t}", "*", &["foo", "abcd1234"]);
    let res = reply(&mut rd).unwrap();
    assert_eq!(res[0].0, "s2{t}");
    assert_eq!(res[0].1[0].1, fields(&[("old", "abcd1234")]));
}

/// The waits an XREAD on `keys` registers: one per partition its keys span (4 partitions).
fn waits_for(keys: &[&str]) -> f64 {
    let mut parts: Vec<u32> = keys
        .iter()
        .map(|k| evring::protocol::partition_of(k, 4))
        .collect();
    parts.sort_unstable();
    parts.dedup();
    parts.len() as f64
}

#[test]
fn blocking_xread_will_not_reply_with_an_empty_array() {
    // Redis's test deletes entry 667 (XDEL) so that the stream's last ID is above the one
    // asked for while no entry is; without deletion here, the stream ends at 666.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut r = server.redis();
    xadd(&mut r, "s1", "666", &["f", "v"]);
    let mut rd = server.redis();
    let started = std::time::Instant::now();
    let res: Value = redis::cmd("XREAD")
        .arg(&["BLOCK", "10", "STREAMS", "s1", "666"])
        .query(&mut rd)
        .unwrap();
    assert_eq!(res, Value::Nil);
    assert!(started.elapsed() >= std::time::Duration::from_millis(10));
}

/// Redis's "Blocking XREAD: key type changed with SET", and the same with a set made in a
/// transaction: a blocked XREAD keeps waiting when its key becomes a string or a set, and is
/// woken by the next stream entry once the key is a stream again.
#[test]
fn blocking_xread_waits_on_when_the_key_becomes_a_string_or_a_set() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut r = server.redis();
    for (round, replace) in ["SET", "EXEC"].iter().enumerate() {
        redis::cmd("DEL").arg("mystream").exec(&mut r).unwrap();
        xadd(&mut r, "mystream", "666", &["f", "v"]);
        let mut rd = server.redis();
        send_xread(&mut rd, &["BLOCK", "0", "STREAMS", "mystream", "$"]);
        wait_for_waits(&server, 1.0);
        if *replace == "SET" {
            redis::cmd("SET")
                .arg("mystream")
                .arg("val1")
                .exec(&mut r)
                .unwrap();
        } else {
            let _: Vec<Value> = redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg("mystream")
                .cmd("SADD")
                .arg("mystream")
                .arg("e1")
                .query(&mut r)
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(waits(&server), 1.0, "round {round}: still waiting");
        redis::cmd("DEL").arg("mystream").exec(&mut r).unwrap();
        xadd(&mut r, "mystream", "667", &["f", "v"]);
        assert_eq!(
            reply(&mut rd),
            Some(vec![(
                "mystream".to_string(),
                vec![("667-0".to_string(), fields(&[("f", "v")]))]
            )]),
            "round {round}"
        );
        wait_for_waits(&server, 0.0);
    }
}

#[test]
fn blocking_xread_for_stream_that_ran_dry_issue_5299() {
    // As Redis's test, with entry 666 kept (no XDEL here): released on timeout, XADD at or
    // below the last ID refused, then woken by the next entry.
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut r = server.redis();
    xadd(&mut r, "mystream", "666", &["key", "value"]);
    let mut rd = server.redis();
    let res: Value = redis::cmd("XREAD")
        .arg(&["BLOCK", "10", "STREAMS", "mystream", "666"])
        .query(&mut rd)
        .unwrap();
    assert_eq!(res, Value::Nil);
    for id in ["665", "666"] {
        let e = redis::cmd("XADD")
            .arg(&["mystream", id, "key", "value"])
            .query::<Value>(&mut r);
        assert!(error_text(e).contains("equal or smaller"));
    }
    send_xread(&mut rd, &["BLOCK", "0", "STREAMS", "mystream", "666"]);
    wait_for_waits(&server, 1.0);
    xadd(&mut r, "mystream", "667", &["key", "value"]);
    assert_eq!(
        reply(&mut rd),
        Some(vec![(
            "mystream".to_string(),
            vec![("667-0".to_string(), fields(&[("key", "value")]))]
        )])
    );
}

#[test]
fn xread_with_same_stream_name_multiple_times_should_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut r = server.redis();
    xadd(&mut r, "s2", "*", &["old", "abcd1234"]);
    let mut rd = server.redis();
    send_xread(
        &mut rd,
        &["BLOCK", "20000", "STREAMS", "s2", "s2", "s2", "$", "$", "$"],
    );
    wait_for_waits(&server, 1.0);
    xadd(&mut r, "s2", "*", &["new", "abcd1234"]);
    let res = reply(&mut rd).unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].0, "s2");
    assert_eq!(res[0].1[0].1, fields(&[("new", "abcd1234")]));
    // Without BLOCK, a key given twice is read twice.
    let res = xread(&mut r, &["STREAMS", "s2", "s2", "0", "$"]).unwrap();
    assert_eq!(res.len(), 1);
    let res = xread(&mut r, &["STREAMS", "s2", "s2", "0", "0"]).unwrap();
    assert_eq!(res.len(), 2);
    assert_eq!(res[0], res[1]);
}

#[test]
fn xread_stream_id_edge_no_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut r = server.redis();
    xadd(&mut r, "x", "1-1", &["f", "v"]);
    xadd(&mut r, "x", "1-18446744073709551615", &["f", "v"]);
    xadd(&mut r, "x", "2-1", &["f", "v"]);
    let res = xread(
        &mut r,
        &["BLOCK", "0", "STREAMS", "x", "1-18446744073709551615"],
    )
    .unwrap();
    assert_eq!(res[0].1[0], ("2-1".to_string(), fields(&[("f", "v")])));
}

#[test]
fn xread_stream_id_edge_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut r = server.redis();
    let mut rd = server.redis();
    send_xread(
        &mut rd,
        &["BLOCK", "0", "STREAMS", "x", "1-18446744073709551615"],
    );
    wait_for_waits(&server, 1.0);
    xadd(&mut r, "x", "1-1", &["f", "v"]);
    xadd(&mut r, "x", "1-18446744073709551615", &["f", "v"]);
    xadd(&mut r, "x", "2-1", &["f", "v"]);
    let res = reply(&mut rd).unwrap();
    assert_eq!(res[0].1[0], ("2-1".to_string(), fields(&[("f", "v")])));
}

#[test]
fn a_native_append_wakes_a_blocked_xread() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut rd = server.redis();
    send_xread(&mut rd, &["BLOCK", "0", "STREAMS", "orders", "$"]);
    wait_for_waits(&server, 1.0);
    server
        .client()
        .append("orders", expected::ANY, vec![ev("Shipped", b"{}")])
        .unwrap();
    let res = reply(&mut rd).unwrap();
    assert_eq!(res[0].0, "orders");
    assert_eq!(res[0].1.len(), 1);
    assert_eq!(
        res[0].1[0].1,
        fields(&[("type", "Shipped"), ("data", "{}")])
    );
    wait_for_waits(&server, 0.0);
}

#[test]
fn a_block_timeout_replies_nil_and_leaves_no_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut r = server.redis();
    xadd(&mut r, "quiet", "*", &["a", "1"]);
    let started = std::time::Instant::now();
    let res: Value = redis::cmd("XREAD")
        .arg(&[
            "COUNT", "5", "BLOCK", "200", "STREAMS", "quiet", "other", "$", "$",
        ])
        .query(&mut r)
        .unwrap();
    let took = started.elapsed();
    assert_eq!(res, Value::Nil);
    assert!(
        took >= std::time::Duration::from_millis(200) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
    wait_for_waits(&server, 0.0);
    // The connection goes on.
    assert_eq!(xlen(&mut r, "quiet"), 1);
}

#[test]
fn a_connection_closed_while_blocked_leaves_no_wait_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let keys = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"];
    let mut args = vec!["BLOCK", "0", "STREAMS"];
    args.extend_from_slice(&keys);
    args.extend(keys.iter().map(|_| "$"));
    for _ in 0..3 {
        let mut rd = server.redis();
        send_xread(&mut rd, &args);
        wait_for_waits(&server, waits_for(&keys));
        drop(rd);
        wait_for_waits(&server, 0.0);
    }
    // A write pipelined behind a blocked XREAD is not run once the connection closes (Redis
    // never runs it either).
    let mut rd = server.redis();
    let mut pipe = redis::pipe();
    pipe.cmd("XREAD").arg(&args);
    pipe.cmd("XADD").arg(&["held", "*", "a", "1"]);
    rd.send_packed_command(&pipe.get_packed_pipeline()).unwrap();
    wait_for_waits(&server, waits_for(&keys));
    drop(rd);
    wait_for_waits(&server, 0.0);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(xlen(&mut server.redis(), "held"), 0);
    // Ten blocked at once, closed at once.
    let blocked: Vec<redis::Connection> = (0..10)
        .map(|_| {
            let mut rd = server.redis();
            send_xread(&mut rd, &args);
            rd
        })
        .collect();
    wait_for_waits(&server, 10.0 * waits_for(&keys));
    drop(blocked);
    wait_for_waits(&server, 0.0);
    // The server goes on: writes, and a new blocked XREAD woken by one.
    let mut r = server.redis();
    let mut rd = server.redis();
    send_xread(&mut rd, &args);
    wait_for_waits(&server, waits_for(&keys));
    let id = xadd(&mut r, "c5", "*", &["a", "1"]);
    let res = reply(&mut rd).unwrap();
    assert_eq!(
        res,
        vec![("c5".to_string(), vec![(id, fields(&[("a", "1")]))])]
    );
    wait_for_waits(&server, 0.0);
}

/// Keys, one per partition of 4 (partitions 0 and 2 on shard 0, 1 and 3 on shard 1).
fn one_key_per_partition() -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; 4];
    for i in 0.. {
        let k = format!("key{i}");
        let p = evring::protocol::partition_of(&k, 4) as usize;
        if keys[p].is_none() {
            keys[p] = Some(k);
        }
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    keys.into_iter().map(Option::unwrap).collect()
}

#[test]
fn xread_over_keys_on_both_shards() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut r = server.redis();
    let keys = one_key_per_partition();
    let k: Vec<&str> = keys.iter().map(String::as_str).collect();
    for (i, key) in k.iter().enumerate() {
        for j in 0..3 {
            xadd(
                &mut r,
                key,
                &format!("{}-{j}", i + 1),
                &["n", &j.to_string()],
            );
        }
    }
    // Every key, in the order given, COUNT per key.
    let mut args = vec!["COUNT", "2", "STREAMS"];
    args.extend([k[3], k[0], k[2], k[1]]);
    args.extend(["0", "1-0", "0", "2-1"]);
    let res = xread(&mut r, &args).unwrap();
    let names: Vec<&str> = res.iter().map(|(k, _)| k.as_str()).collect();
    // k[0]'s entries are 1-x: none above 1-0 but 1-1 and 1-2; k[1]'s above 2-1: 2-2 only.
    assert_eq!(names, [k[3], k[0], k[2], k[1]]);
    assert_eq!(res[0].1.len(), 2);
    let ids = |e: &Entries| e.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&res[1].1), ["1-1", "1-2"]);
    assert_eq!(ids(&res[3].1), ["2-2"]);
    // Blocked on all four: woken by an entry on either shard; the other waits are cancelled.
    let mut args = vec!["BLOCK", "20000", "STREAMS"];
    args.extend(&k);
    args.extend(["$", "$", "$", "$"]);
    for (p, key) in k.iter().enumerate() {
        let mut rd = server.redis();
        send_xread(&mut rd, &args);
        wait_for_waits(&server, 4.0);
        let id = xadd(&mut r, key, "*", &["woke", &p.to_string()]);
        let res = reply(&mut rd).unwrap();
        assert_eq!(
            res,
            vec![(
                key.to_string(),
                vec![(id, fields(&[("woke", &p.to_string())]))]
            )]
        );
        wait_for_waits(&server, 0.0);
    }
    // A connection on either shard (the loop above opened several): the same.
    assert_eq!(xlen(&mut r, k[2]), 4);
}

#[test]
fn xread_errors_are_redis_7_0_s() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut r = server.redis();
    let err = |r: &mut redis::Connection, args: &[&str]| {
        error_text(redis::cmd("XREAD").arg(args).query::<Value>(r))
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["STREAMS", "a", "b", "0"],
            "Unbalanced XREAD list of streams: for each stream key an ID or '$' must be \
             specified.",
        ),
        (
            &["STREAMS", "a", "x"],
            "Invalid stream ID specified as stream command argument",
        ),
        (
            &["STREAMS", "a", "+"],
            "Invalid stream ID specified as stream command argument",
        ),
        (
            &["STREAMS", "a", "-"],
            "Invalid stream ID specified as stream command argument",
        ),
        (
            &["STREAMS", "a", "1-"],
            "Invalid stream ID specified as stream command argument",
        ),
        (&["BLOCK", "-1", "STREAMS", "a", "0"], "timeout is negative"),
        (
            &["BLOCK", "x", "STREAMS", "a", "0"],
            "timeout is not an integer or out of range",
        ),
        (
            &["COUNT", "x", "STREAMS", "a", "0"],
            "value is not an integer or out of range",
        ),
        (&["COUNT", "1", "a", "0"], "syntax error"),
        (&["COUNT", "1", "STREAMS"], "syntax error"),
        (
            &["STREAMS", "a", ">"],
            "The > ID can be specified only when calling XREADGROUP",
        ),
        (
            &["GROUP", "g", "c", "STREAMS", "a", "0"],
            "The GROUP option is only supported by XREADGROUP",
        ),
        (
            &["STREAMS", "a"],
            "wrong number of arguments for 'xread' command",
        ),
    ];
    for (args, want) in cases {
        let got = err(&mut r, args);
        assert!(got.contains(want), "{args:?}: {got}");
    }
    // An evring limit: at most 10,000 keys.
    let many: Vec<String> = (0..10_001).map(|i| format!("k{i}")).collect();
    let mut args = vec!["STREAMS"];
    args.extend(many.iter().map(String::as_str));
    args.extend(many.iter().map(|_| "0"));
    let got = err(&mut r, &args);
    assert!(got.contains("at most 10000 keys"), "{got}");
    args.retain(|a| a != &"k10000");
    args.pop();
    assert_eq!(xread(&mut r, &args), None);
    // COUNT 0 or below: no limit.
    xadd(&mut r, "a", "1", &["f", "v"]);
    xadd(&mut r, "a", "2", &["f", "v"]);
    let res = xread(&mut r, &["COUNT", "-5", "STREAMS", "a", "0"]).unwrap();
    assert_eq!(res[0].1.len(), 2);
    let res = xread(&mut r, &["COUNT", "0", "STREAMS", "a", "1"]).unwrap();
    assert_eq!(res[0].1.len(), 1);
}

#[test]
fn a_blocked_xread_holds_later_replies_and_commands_of_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let mut c = server.redis();
    // Pipelined behind a blocked XREAD, an XADD to the same stream runs once the XREAD is
    // answered (its timeout here), as Redis runs it: it does not wake the XREAD.
    let mut pipe = redis::pipe();
    pipe.cmd("XREAD")
        .arg(&["BLOCK", "300", "STREAMS", "self", "$"]);
    pipe.cmd("XADD").arg(&["self", "*", "a", "1"]);
    pipe.cmd("PING");
    let replies: Vec<Value> = pipe.query(&mut c).unwrap();
    assert_eq!(replies[0], Value::Nil);
    assert!(matches!(replies[1], Value::BulkString(_)), "{replies:?}");
    assert!(matches!(&replies[2], Value::SimpleString(s) if s == "PONG"));
    // Another connection's write wakes it; the PING after it is answered after it.
    let mut w = server.redis();
    let mut pipe = redis::pipe();
    pipe.cmd("XREAD")
        .arg(&["BLOCK", "0", "STREAMS", "self", "$"]);
    pipe.cmd("PING");
    c.send_packed_command(&pipe.get_packed_pipeline()).unwrap();
    wait_for_waits(&server, 1.0);
    let id = xadd(&mut w, "self", "*", &["b", "2"]);
    assert_eq!(
        reply(&mut c),
        Some(vec![(
            "self".to_string(),
            vec![(id, fields(&[("b", "2")]))]
        )])
    );
    assert!(matches!(c.recv_response().unwrap(), Value::SimpleString(s) if s == "PONG"));
}

#[test]
fn xread_replies_in_resp3() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    xadd(&mut c, "k", "1-1", &["f", "v"]);
    let mut raw = std::net::TcpStream::connect(server.resp_addr()).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    raw.write_all(b"HELLO 3\r\nXREAD STREAMS k none 0 0\r\nXREAD STREAMS none 0\r\nXREAD BLOCK 10 STREAMS none $\r\nPING\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"+PONG\r\n") {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.ends_with(
            "%1\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n_\r\n+PONG\r\n"
        ),
        "{text}"
    );
}

#[test]
fn a_server_stop_ends_a_blocked_xread() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_with_metrics(dir.path());
    let mut rd = server.redis();
    send_xread(
        &mut rd,
        &["BLOCK", "0", "STREAMS", "a", "b", "c", "$", "$", "$"],
    );
    wait_for_waits(&server, waits_for(&["a", "b", "c"]));
    let started = std::time::Instant::now();
    assert_eq!(server.terminate(), Some(0));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The SHUTDOWN error, or (had the connection closed first) no reply.
    match rd.recv_response() {
        Ok(Value::ServerError(e)) => {
            assert_eq!(e.code(), "SHUTDOWN");
            assert!(e.details().unwrap().contains("shutting down"), "{e:?}");
        }
        Err(e) => assert!(e.is_io_error() || e.is_connection_dropped(), "{e}"),
        Ok(v) => panic!("another reply: {v:?}"),
    }
}

#[test]
fn readers_following_streams_with_blocking_xread_see_every_entry_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_metrics(dir.path());
    let keys = one_key_per_partition();
    const WRITES: usize = 400;
    // Readers, each following one key or all of them from 0, COUNT 7, BLOCK 5 s.
    let readers: Vec<_> = (0..6)
        .map(|r| {
            let mut c = server.redis();
            let follow: Vec<String> = if r < 4 {
                vec![keys[r].clone()]
            } else {
                keys.clone()
            };
            std::thread::spawn(move || {
                let mut last: Vec<String> = follow.iter().map(|_| "0".to_string()).collect();
                let mut seen: Vec<Vec<String>> = follow.iter().map(|_| Vec::new()).collect();
                let want = if follow.len() == 1 {
                    WRITES / 4
                } else {
                    WRITES
                };
                while seen.iter().map(Vec::len).sum::<usize>() < want {
                    let mut args = vec!["COUNT", "7", "BLOCK", "5000", "STREAMS"];
                    args.extend(follow.iter().map(String::as_str));
                    args.extend(last.iter().map(String::as_str));
                    let got = xread(&mut c, &args).expect("entries before the timeout");
                    for (key, entries) in got {
                        assert!(!entries.is_empty() && entries.len() <= 7);
                        let k = follow.iter().position(|f| *f == key).unwrap();
                        for (id, _) in entries {
                            seen[k].push(id.clone());
                            last[k] = id;
                        }
                    }
                }
                (follow, seen)
            })
        })
        .collect();
    let mut w = server.redis();
    let mut written: Vec<Vec<String>> = vec![Vec::new(); 4];
    for i in 0..WRITES {
        let k = i % 4;
        written[k].push(xadd(&mut w, &keys[k], "*", &["i", &i.to_string()]));
        if i % 50 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    for r in readers {
        let (follow, seen) = r.join().unwrap();
        for (key, ids) in follow.iter().zip(seen) {
            let k = keys.iter().position(|x| x == key).unwrap();
            assert_eq!(ids, written[k], "{key}");
        }
    }
    wait_for_waits(&server, 0.0);
}

fn xadd_fv(c: &mut redis::Connection, key: &str, id: &str) -> String {
    redis::cmd("XADD")
        .arg(key)
        .arg(id)
        .arg("f")
        .arg("v")
        .query(c)
        .unwrap()
}

fn keys(c: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS").arg(pattern).query(c).unwrap();
    k.sort();
    k
}

/// Every key SCAN returns from cursor 0 to the end, `count` at a time, in the order given;
/// `between` runs between calls.
fn scan_all(
    c: &mut redis::Connection,
    extra: &[&str],
    mut between: impl FnMut(&mut redis::Connection),
) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut all = Vec::new();
    let mut calls = 0;
    loop {
        let (next, batch): (String, Vec<String>) =
            redis::cmd("SCAN").arg(&cursor).arg(extra).query(c).unwrap();
        all.extend(batch);
        calls += 1;
        assert!(calls < 10_000, "SCAN does not end");
        if next == "0" {
            return all;
        }
        cursor = next;
        between(c);
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// DBSIZE and INFO keyspace count the streams of the index by database without listing
/// them: asked again and again while new streams are being made (each counted from when its
/// first entry is durable), every answer agrees with a listing of the same moment (the
/// partition asserts it with so few streams), and the last is the number of keys made.
#[test]
fn key_counts_hold_while_new_streams_are_made() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut c = server.redis();
            c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            std::thread::spawn(move || {
                for batch in 0..20 {
                    let mut pipe = redis::pipe();
                    for i in 0..16 {
                        let key = format!("w{w}-{batch}-{i}");
                        pipe.cmd("XADD")
                            .arg(key)
                            .arg("*")
                            .arg("f")
                            .arg("v")
                            .ignore();
                    }
                    pipe.cmd("SELECT").arg(1 + w % 2).ignore();
                    pipe.cmd("XADD")
                        .arg(format!("d{w}-{batch}"))
                        .arg("*")
                        .arg("f")
                        .arg("v");
                    pipe.cmd("SELECT").arg(0).ignore();
                    let _: Vec<String> = pipe.query(&mut c).unwrap();
                }
            })
        })
        .collect();
    let mut c = server.redis();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut last = 0u64;
    while writers.iter().any(|w| !w.is_finished()) {
        let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert!(n >= last, "keys are only added: {n} after {last}");
        last = n;
        let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
        assert!(info.contains("# Keyspace"), "{info}");
    }
    for w in writers {
        w.join().unwrap();
    }
    let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 4 * 20 * 16);
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(info.contains("db0:keys=1280,"), "{info}");
    assert!(
        info.contains("db1:keys=40,") && info.contains("db2:keys=40,"),
        "{info}"
    );
    // After a crash and restart, recovered from the journal, they count the same.
    drop(c);
    server.kill_and_restart();
    let mut c = server.redis();
    let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 4 * 20 * 16);
}

/// A SCAN call reads a bounded number of names in each partition it asks
/// (`SCAN_NAMES_PER_KEY` × COUNT, at least `SCAN_NAMES_MIN`): with a MATCH that one key of
/// many passes, calls end with fewer keys than COUNT, even none, and a cursor that goes on,
/// and the whole scan still finds the key, once.
#[test]
fn a_scan_call_reads_a_bounded_number_of_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let partitions = 4;
    let per_partition = evring::server::SCAN_NAMES_MIN * 3 / 2;
    let mut pipe = redis::pipe();
    for i in 0..partitions * per_partition {
        pipe.cmd("XADD")
            .arg(format!("k{i}"))
            .arg("*")
            .arg("f")
            .arg("v")
            .ignore();
    }
    pipe.cmd("XADD")
        .arg("needle")
        .arg("*")
        .arg("f")
        .arg("v")
        .ignore();
    let () = pipe.query(&mut c).unwrap();
    let (cursor, first): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("needle")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_ne!(cursor, "0", "a call does not read every name");
    assert!(first.len() <= 1);
    let (cursor, none): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("no-such-key")
        .query(&mut c)
        .unwrap();
    assert!(none.is_empty());
    assert_ne!(
        cursor, "0",
        "a call that finds nothing stops at its bound of names too"
    );
    let mut calls = 0;
    let got = scan_all(&mut c, &["MATCH", "needle", "COUNT", "1"], |_| calls += 1);
    assert_eq!(got, ["needle"]);
    assert!(
        calls >= partitions,
        "at least one call per partition: {calls}"
    );
    // Without MATCH, a call has its COUNT.
    let (_, batch): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(500)
        .query(&mut c)
        .unwrap();
    assert!(batch.len() >= 500, "{}", batch.len());
}

#[test]
fn keyspace_commands_see_every_partition_and_only_the_database_selected() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    // 30 keys over the 4 partitions of 2 shards, a stream written natively, and 10 keys of
    // database 1 (some of the same names).
    let mut db0: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for k in &db0 {
        xadd_fv(&mut c, k, "*");
    }
    server
        .client()
        .append("orders", expected::ANY, vec![ev("Placed", b"{}")])
        .unwrap();
    db0.push("orders".into());
    db0.sort();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    let db1: Vec<String> = sorted((20..30).map(|i| format!("k{i}")).collect());
    for k in &db1 {
        xadd_fv(&mut c, k, "*");
    }
    let dbsize = |c: &mut redis::Connection| -> u64 { redis::cmd("DBSIZE").query(c).unwrap() };
    assert_eq!(dbsize(&mut c), 10);
    assert_eq!(keys(&mut c, "*"), db1);
    assert_eq!(sorted(scan_all(&mut c, &[], |_| {})), db1);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    assert_eq!(dbsize(&mut c), 31);
    assert_eq!(keys(&mut c, "*"), db0);
    let _: () = redis::cmd("SELECT").arg(2).query(&mut c).unwrap();
    assert_eq!(dbsize(&mut c), 0);
    assert!(keys(&mut c, "*").is_empty());
    assert!(scan_all(&mut c, &[], |_| {}).is_empty());
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();

    // Glob patterns, as Redis matches them.
    assert_eq!(
        keys(&mut c, "k?"),
        (0..10).map(|i| format!("k{i}")).collect::<Vec<_>>()
    );
    assert_eq!(keys(&mut c, "k2[0-2]"), ["k20", "k21", "k22"]);
    assert_eq!(
        keys(&mut c, "k[^1]?"),
        (20..30).map(|i| format!("k{i}")).collect::<Vec<_>>()
    );
    assert_eq!(keys(&mut c, "ord*"), ["orders"]);
    assert_eq!(keys(&mut c, "o\\rders"), ["orders"]);
    assert!(keys(&mut c, "nothing*").is_empty());

    // EXISTS counts (a key named twice twice), TYPE.
    let n: u64 = redis::cmd("EXISTS")
        .arg("k1")
        .arg("orders")
        .arg("nope")
        .arg("k1")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 3);
    let t: String = redis::cmd("TYPE").arg("k1").query(&mut c).unwrap();
    assert_eq!(t, "stream");
    let t: String = redis::cmd("TYPE").arg("nope").query(&mut c).unwrap();
    assert_eq!(t, "none");

    // SCAN: every key once, whatever COUNT; MATCH and TYPE filter.
    for count in ["1", "3", "10", "1000"] {
        let got = scan_all(&mut c, &["COUNT", count], |_| {});
        assert_eq!(got.len(), db0.len(), "COUNT {count}: each key once");
        assert_eq!(sorted(got), db0, "COUNT {count}");
    }
    let got = scan_all(&mut c, &["MATCH", "k1*", "COUNT", "2"], |_| {});
    let want: Vec<String> = ["k1".to_string()]
        .into_iter()
        .chain((10..20).map(|i| format!("k{i}")))
        .collect();
    assert_eq!(sorted(got), sorted(want));
    assert_eq!(sorted(scan_all(&mut c, &["TYPE", "STREAM"], |_| {})), db0);
    assert!(scan_all(&mut c, &["TYPE", "string"], |_| {}).is_empty());
    // A call returns COUNT keys while that many are left.
    let (_, first): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(7)
        .query(&mut c)
        .unwrap();
    assert_eq!(first.len(), 7);

    // Keys present for the whole scan come back even while keys are added between calls.
    let mut added = 0;
    let got = scan_all(&mut c, &["COUNT", "2"], |c| {
        xadd_fv(c, &format!("new{added}"), "*");
        added += 1;
    });
    for k in &db0 {
        assert!(got.contains(k), "{k} missing from a scan with writes");
    }

    // Errors in Redis's words.
    let e = |r: RedisResult<Value>| error_text(r);
    assert!(e(redis::cmd("SCAN").arg("x").query(&mut c)).contains("invalid cursor"));
    assert!(e(redis::cmd("SCAN").arg("-1").query(&mut c)).contains("invalid cursor"));
    assert!(
        e(redis::cmd("SCAN").arg(0).arg("COUNT").arg(0).query(&mut c)).contains("syntax error")
    );
    assert!(e(redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg("x")
        .query(&mut c))
    .contains("value is not an integer or out of range"));
    assert!(e(redis::cmd("SCAN").arg(0).arg("MATCH").query(&mut c)).contains("syntax error"));
    assert!(e(redis::cmd("SCAN").arg(0).arg("NOPE").arg(1).query(&mut c)).contains("syntax error"));
    assert!(e(redis::cmd("SCAN").query(&mut c)).contains("wrong number of arguments for 'scan'"));
    assert!(e(redis::cmd("KEYS").query(&mut c)).contains("wrong number of arguments for 'keys'"));
    assert!(e(redis::cmd("KEYS").arg("a").arg("b").query(&mut c))
        .contains("wrong number of arguments for 'keys'"));
    assert!(e(redis::cmd("DBSIZE").arg("x").query(&mut c))
        .contains("wrong number of arguments for 'dbsize'"));
    assert!(
        e(redis::cmd("EXISTS").query(&mut c)).contains("wrong number of arguments for 'exists'")
    );
    assert!(e(redis::cmd("TYPE").query(&mut c)).contains("wrong number of arguments for 'type'"));
}

/// INFO's text as `field -> value`, and its section headers.
fn info(c: &mut redis::Connection, sections: &[&str]) -> (Vec<String>, HashMap<String, String>) {
    let text: String = redis::cmd("INFO").arg(sections).query(c).unwrap();
    assert!(text.ends_with("\r\n"), "{text:?}");
    let mut headers = Vec::new();
    let mut fields = HashMap::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some(h) = line.strip_prefix("# ") {
            headers.push(h.to_string());
        } else {
            let (k, v) = line.split_once(':').expect("field:value");
            fields.insert(k.to_string(), v.to_string());
        }
    }
    (headers, fields)
}

#[test]
fn info_reports_the_server_its_clients_persistence_stats_and_keyspace() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let (headers, f) = info(&mut c, &[]);
    assert_eq!(
        headers,
        [
            "Server",
            "Clients",
            "Persistence",
            "Stats",
            "Replication",
            "Errorstats",
            "Keyspace"
        ]
    );
    assert_eq!(f["redis_version"], "7.0.15");
    assert_eq!(f["redis_mode"], "standalone");
    assert_eq!(f["arch_bits"], "64");
    assert!(f["os"].starts_with("Linux "), "{}", f["os"]);
    assert_eq!(
        f["tcp_port"],
        server.resp_addr().rsplit(':').next().unwrap()
    );
    assert_eq!(
        f["process_id"],
        server.child.as_ref().unwrap().id().to_string()
    );
    assert!(f["uptime_in_seconds"].parse::<u64>().is_ok());
    assert_eq!(f["evring_version"], env!("CARGO_PKG_VERSION"));
    assert!(f["connected_clients"].parse::<u64>().unwrap() >= 1);
    assert_eq!(f["aof_enabled"], "1");
    assert_eq!(f["appendfsync"], "always");
    assert_eq!(f["loading"], "0");
    assert_eq!(f["role"], "master");
    assert!(!f.keys().any(|k| k.starts_with("db")), "an empty keyspace");

    for i in 0..3 {
        xadd_fv(&mut c, &format!("a{i}"), "*");
    }
    let _: () = redis::cmd("SELECT").arg(5).query(&mut c).unwrap();
    xadd_fv(&mut c, "a0", "*");
    let (headers, f) = info(&mut c, &["keyspace"]);
    assert_eq!(headers, ["Keyspace"]);
    assert_eq!(f["db0"], "keys=3,expires=0,avg_ttl=0");
    assert_eq!(f["db5"], "keys=1,expires=0,avg_ttl=0");
    assert_eq!(f.len(), 2);
    let (headers, _) = info(&mut c, &["SERVER", "stats", "nosuchsection"]);
    assert_eq!(headers, ["Server", "Stats"]);
    let (headers, _) = info(&mut c, &["all"]);
    assert_eq!(headers.len(), 8);

    // Commands are counted, and CONFIG RESETSTAT starts the count again.
    let (_, f) = info(&mut c, &["stats"]);
    let before: u64 = f["total_commands_processed"].parse().unwrap();
    assert!(before >= 8, "{before}");
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let (_, f) = info(&mut c, &["stats"]);
    let after: u64 = f["total_commands_processed"].parse().unwrap();
    assert!(after < before, "{after} after RESETSTAT, {before} before");
}

/// The `cmdstat_<name>` line of INFO commandstats (as the suites' `cmdrstat` reads it).
fn cmdstat(c: &mut redis::Connection, name: &str) -> Option<String> {
    let (_, f) = info(c, &["commandstats"]);
    f.get(&format!("cmdstat_{name}")).cloned()
}

/// `calls=…,rejected_calls=…,failed_calls=…` of a commandstats line (no timings).
fn counts(line: &str) -> String {
    line.split(',')
        .filter(|kv| !kv.starts_with("usec"))
        .collect::<Vec<_>>()
        .join(",")
}

/// On one shard every XADD is placed as it is read (its partition is local); its INFO
/// commandstats time runs from its receive to its answer, across its durable write, so it
/// is never zero.
#[test]
fn a_placed_xadd_counts_its_time_to_its_durable_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--set", "shards=1"]);
    let mut c = server.redis();
    for _ in 0..3 {
        xadd_fv(&mut c, "s", "*");
    }
    let xadd = cmdstat(&mut c, "xadd").expect("cmdstat_xadd");
    assert_eq!(
        counts(&xadd),
        "calls=3,rejected_calls=0,failed_calls=0",
        "{xadd}"
    );
    let usec: u64 = xadd
        .split(",usec=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no usec in {xadd}"));
    assert!(usec >= 3, "{xadd}");
}

#[test]
fn info_counts_calls_rejections_failures_and_errors_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    // Connections on both shards: the counts are the server's.
    let mut others: Vec<redis::Connection> = (0..4).map(|_| server.redis()).collect();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let (headers, f) = info(&mut c, &["commandstats", "errorstats", "stats"]);
    assert_eq!(headers, ["Stats", "Commandstats", "Errorstats"]);
    assert_eq!(f["total_error_replies"], "0");
    let cmdstats: Vec<_> = f.keys().filter(|k| k.starts_with("cmdstat_")).collect();
    assert_eq!(cmdstats, ["cmdstat_config|resetstat"], "{f:?}");
    assert!(!f.keys().any(|k| k.starts_with("errorstat_")));

    for o in others.iter_mut() {
        xadd_fv(o, "s", "*");
    }
    let r: RedisResult<Value> = redis::cmd("XADD").arg("s").arg("*").arg("f").query(&mut c);
    assert!(error_text(r).contains("wrong number of arguments for 'xadd'"));
    let _: u64 = redis::cmd("RPUSH").arg("l").arg("x").query(&mut c).unwrap();
    let r: RedisResult<Value> = redis::cmd("XADD")
        .arg("l")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut others[0]);
    assert!(error_text(r).contains("WRONGTYPE"));
    // As Redis 7.0 counts them (checked against redis-server 7.0.15).
    let xadd = cmdstat(&mut c, "xadd").expect("cmdstat_xadd");
    assert_eq!(
        counts(&xadd),
        "calls=5,rejected_calls=1,failed_calls=1",
        "{xadd}"
    );
    assert!(xadd.contains(",usec="), "{xadd}");
    assert!(xadd.contains(",usec_per_call="), "{xadd}");
    assert_eq!(
        counts(&cmdstat(&mut c, "rpush").unwrap()),
        "calls=1,rejected_calls=0,failed_calls=0"
    );
    let (_, f) = info(&mut c, &["errorstats", "stats"]);
    assert_eq!(f["errorstat_ERR"], "count=1");
    assert_eq!(f["errorstat_WRONGTYPE"], "count=1");
    assert_eq!(f["total_error_replies"], "2");
    assert_eq!(f.keys().filter(|k| k.starts_with("errorstat_")).count(), 2);

    // Subcommands by their Redis names; an unknown command counts only its error.
    let _: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut c)
        .unwrap();
    let r: RedisResult<Value> = redis::cmd("CONFIG").arg("GET").query(&mut c);
    assert!(error_text(r).contains("'config|get'"));
    let r: RedisResult<Value> = redis::cmd("NOSUCH").query(&mut c);
    assert!(error_text(r).contains("unknown command"));
    assert_eq!(
        counts(&cmdstat(&mut c, "config|get").unwrap()),
        "calls=1,rejected_calls=1,failed_calls=0"
    );
    assert!(cmdstat(&mut c, "nosuch").is_none());
    let (_, f) = info(&mut c, &["errorstats", "stats"]);
    assert_eq!(f["errorstat_ERR"], "count=3");
    assert_eq!(f["total_error_replies"], "4");

    // Transactions: a command refused while queueing is rejected and EXEC fails with
    // EXECABORT; a command failing inside EXEC fails, EXEC does not.
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let r: RedisResult<Value> = redis::cmd("XADD").arg("s").arg("*").arg("f").query(&mut c);
    assert!(error_text(r).contains("wrong number of arguments"));
    let r: RedisResult<Value> = redis::cmd("EXEC").query(&mut c);
    assert!(error_text(r).contains("Transaction discarded"));
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: Value = redis::cmd("XADD")
        .arg("l")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: Value = redis::cmd("LLEN").arg("l").query(&mut c).unwrap();
    // (The client gives an EXEC reply holding an error as that error.)
    let r: RedisResult<Value> = redis::cmd("EXEC").query(&mut c);
    assert!(error_text(r).contains("WRONGTYPE"));
    let want = [
        ("exec", "calls=2,rejected_calls=0,failed_calls=1"),
        ("xadd", "calls=1,rejected_calls=1,failed_calls=1"),
        ("llen", "calls=1,rejected_calls=0,failed_calls=0"),
        ("multi", "calls=2,rejected_calls=0,failed_calls=0"),
        (
            "config|resetstat",
            "calls=1,rejected_calls=0,failed_calls=0",
        ),
    ];
    let (_, f) = info(&mut c, &["everything"]);
    let cmdstats = f.keys().filter(|k| k.starts_with("cmdstat_")).count();
    assert_eq!(cmdstats, want.len(), "{f:?}");
    for (name, line) in want {
        assert_eq!(counts(&f[&format!("cmdstat_{name}")]), line, "{name}");
    }
    assert_eq!(f["errorstat_ERR"], "count=1");
    assert_eq!(f["errorstat_EXECABORT"], "count=1");
    assert_eq!(f["errorstat_WRONGTYPE"], "count=1");
    assert_eq!(f["total_error_replies"], "3");
}

#[test]
fn config_get_and_set_know_the_settings_redis_clients_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let get = |c: &mut redis::Connection, p: &str| -> HashMap<String, String> {
        redis::cmd("CONFIG").arg("GET").arg(p).query(c).unwrap()
    };
    let all = get(&mut c, "*");
    let want: HashMap<String, String> = [
        ("stream-node-max-bytes", "4096"),
        ("stream-node-max-entries", "100"),
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("save", ""),
        ("databases", "16"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(all, want);
    assert_eq!(get(&mut c, "stream-node-*").len(), 2);
    assert_eq!(get(&mut c, "APPEND*").len(), 2, "patterns ignore case");
    assert_eq!(
        get(&mut c, "APPENDONLY")["APPENDONLY"],
        "yes",
        "the name as asked"
    );
    assert!(get(&mut c, "maxmemory").is_empty());
    let two: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .arg("databases")
        .arg("save")
        .query(&mut c)
        .unwrap();
    assert_eq!(two.len(), 2);

    // SET remembers the stream node limits for the server: another connection (maybe on
    // the other shard) sees them.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(50)
        .arg("stream-node-max-bytes")
        .arg("8kb")
        .query(&mut c)
        .unwrap();
    for _ in 0..4 {
        let mut other = server.redis();
        let got = get(&mut other, "stream-node-max-*");
        assert_eq!(got["stream-node-max-entries"], "50");
        assert_eq!(got["stream-node-max-bytes"], "8192");
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query(&mut c)
        .unwrap();

    let e = |c: &mut redis::Connection, args: &[&str]| {
        error_text(redis::cmd("CONFIG").arg(args).query::<Value>(c))
    };
    assert!(e(&mut c, &["SET", "nope", "1"])
        .contains("Unknown option or number of arguments for CONFIG SET - 'nope'"));
    assert!(e(&mut c, &["SET", "appendonly", "no"])
        .contains("CONFIG SET failed (possibly related to argument 'appendonly')"));
    assert!(e(&mut c, &["SET", "appendfsync", "everysec"]).contains("'appendfsync'"));
    assert!(e(&mut c, &["SET", "databases", "16"]).contains("can't set immutable config"));
    assert!(e(&mut c, &["SET", "stream-node-max-entries", "x"])
        .contains("argument couldn't be parsed into an integer"));
    assert!(e(&mut c, &["SET", "stream-node-max-entries", "-1"])
        .contains("argument must be between 0 and 9223372036854775807 inclusive"));
    assert!(e(&mut c, &["SET", "stream-node-max-bytes", "12qb"])
        .contains("argument must be a memory value"));
    assert!(e(
        &mut c,
        &[
            "SET",
            "stream-node-max-entries",
            "1",
            "stream-node-max-entries",
            "2"
        ]
    )
    .contains("duplicate parameter"));
    assert!(e(&mut c, &["SET", "stream-node-max-entries", "1", "x"]).contains("syntax error"));
    assert!(e(&mut c, &["SET", "stream-node-max-entries"])
        .contains("wrong number of arguments for 'config|set' command"));
    assert!(e(&mut c, &["GET"]).contains("wrong number of arguments for 'config|get' command"));
    assert!(e(&mut c, &[]).contains("wrong number of arguments for 'config' command"));
    assert!(e(&mut c, &["FLY"]).contains("unknown subcommand 'FLY'. Try CONFIG HELP."));
    assert!(e(&mut c, &["REWRITE"]).contains("TOML"));
    // A failed SET changes nothing.
    assert!(e(
        &mut c,
        &[
            "SET",
            "stream-node-max-entries",
            "7",
            "stream-node-max-bytes",
            "x"
        ]
    )
    .contains("argument must be a memory value"));
    assert_eq!(
        get(&mut c, "stream-node-max-entries")["stream-node-max-entries"],
        "50"
    );
}

/// Two keys of different partitions, and two of one.
fn keys_by_partition(partitions: u32) -> (String, String, String) {
    let p = |k: &str| evring::protocol::partition_of(k, partitions);
    let a = "t0".to_string();
    let other = (1..)
        .map(|i| format!("t{i}"))
        .find(|k| p(k) != p(&a))
        .unwrap();
    let same = (1..)
        .map(|i| format!("t{i}"))
        .find(|k| p(k) == p(&a))
        .unwrap();
    (a, other, same)
}

#[test]
fn multi_exec_queues_commands_and_runs_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let (a, other, same) = keys_by_partition(4);

    // A transaction as redis clients send it (MULTI … EXEC in one pipeline): each command
    // sees the ones before it.
    let (id, len, entries, n): (String, u64, Entries, u64) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&a)
        .arg("1-1")
        .arg("f")
        .arg("v")
        .cmd("XLEN")
        .arg(&a)
        .cmd("XRANGE")
        .arg(&a)
        .arg("-")
        .arg("+")
        .cmd("EXISTS")
        .arg(&a)
        .arg(&same)
        .query(&mut c)
        .unwrap();
    assert_eq!(id, "1-1");
    assert_eq!(len, 1);
    assert_eq!(
        entries,
        vec![("1-1".to_string(), vec![("f".into(), "v".into())])]
    );
    assert_eq!(n, 1);

    // Step by step: +QUEUED for each, then EXEC's array of each command's own reply, errors
    // at run time included.
    let ok: String = redis::cmd("MULTI").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let q: String = redis::cmd("XADD")
        .arg(&same)
        .arg("2-1")
        .arg("g")
        .arg("w")
        .query(&mut c)
        .unwrap();
    assert_eq!(q, "QUEUED");
    let q: String = redis::cmd("XADD")
        .arg(&same)
        .arg("1-0")
        .arg("g")
        .arg("w")
        .query(&mut c)
        .unwrap();
    assert_eq!(q, "QUEUED");
    let nested = redis::cmd("MULTI").query::<Value>(&mut c);
    assert!(error_text(nested).contains("MULTI calls can not be nested"));
    let q: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(q, "QUEUED");
    let q: String = redis::cmd("KEYS").arg("t*").query(&mut c).unwrap();
    assert_eq!(q, "QUEUED");
    let unwatch: String = redis::cmd("UNWATCH").query(&mut c).unwrap();
    assert_eq!(unwatch, "QUEUED");
    // (`query` would turn the error inside the reply into an error of its own.)
    let exec = redis::ConnectionLike::req_command(&mut c, &redis::cmd("EXEC")).unwrap();
    let Value::Array(replies) = exec else {
        panic!("{exec:?}");
    };
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert_eq!(replies[0], Value::BulkString(b"2-1".to_vec()));
    assert!(
        matches!(&replies[1], Value::ServerError(e) if format!("{e:?}").contains("equal or smaller")),
        "{:?}",
        replies[1]
    );
    assert_eq!(replies[2], Value::SimpleString("PONG".into()));
    let Value::Array(listed) = &replies[3] else {
        panic!("{:?}", replies[3]);
    };
    assert_eq!(listed.len(), 2);
    assert_eq!(replies[4], Value::Okay);

    // A command refused while queueing aborts the transaction: nothing runs.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&a)
        .arg("*")
        .arg("x")
        .arg("y")
        .query(&mut c)
        .unwrap();
    let arity = redis::cmd("XLEN").query::<Value>(&mut c);
    assert!(error_text(arity).contains("wrong number of arguments for 'xlen' command"));
    let unknown = redis::cmd("NOSUCH").arg(1).query::<Value>(&mut c);
    assert!(error_text(unknown).contains("unknown command 'NOSUCH'"));
    let aborted = redis::cmd("EXEC").query::<Value>(&mut c);
    assert!(
        error_text(aborted).contains("Transaction discarded because of previous errors"),
        "EXECABORT"
    );
    assert_eq!(xlen(&mut c, &a), 1);

    // Keys of two partitions: CROSSSLOT, and the transaction is gone.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&a)
        .arg("*")
        .arg("x")
        .arg("y")
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("XLEN").arg(&other).query(&mut c).unwrap();
    let cross = redis::cmd("EXEC").query::<Value>(&mut c);
    assert!(error_text(cross).contains("Keys in request don't hash to the same slot"));
    assert_eq!(xlen(&mut c, &a), 1);
    let again = redis::cmd("EXEC").query::<Value>(&mut c);
    assert!(error_text(again).contains("EXEC without MULTI"));
    // The same key in two databases is two streams, which may be in two partitions: a
    // queued SELECT counts.
    let db3 = (0..)
        .map(|i| format!("u{i}"))
        .find(|k| {
            evring::protocol::partition_of(k, 4)
                != evring::protocol::partition_of(&format!("\0{}\0{k}", 3), 4)
        })
        .unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("XLEN").arg(&db3).query(&mut c).unwrap();
    let _: String = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let _: String = redis::cmd("XLEN").arg(&db3).query(&mut c).unwrap();
    let cross = redis::cmd("EXEC").query::<Value>(&mut c);
    assert!(error_text(cross).contains("Keys in request don't hash to the same slot"));

    // DISCARD drops what was queued.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&a)
        .arg("*")
        .arg("x")
        .arg("y")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("DISCARD").query(&mut c).unwrap();
    assert_eq!(xlen(&mut c, &a), 1);
    let e = |c: &mut redis::Connection, name: &str| error_text(redis::cmd(name).query::<Value>(c));
    assert!(e(&mut c, "DISCARD").contains("DISCARD without MULTI"));
    assert!(e(&mut c, "EXEC").contains("EXEC without MULTI"));
    let watch = redis::cmd("WATCH").arg(&a).query::<Value>(&mut c);
    assert!(error_text(watch).contains("WATCH is not supported by this server"));
    let _: () = redis::cmd("UNWATCH").query(&mut c).unwrap();

    // A queued SELECT holds for the commands after it, and after EXEC.
    let _: () = redis::pipe()
        .atomic()
        .cmd("SELECT")
        .arg(7)
        .ignore()
        .cmd("XADD")
        .arg(&a)
        .arg("*")
        .arg("x")
        .arg("y")
        .ignore()
        .query(&mut c)
        .unwrap();
    assert_eq!(xlen(&mut c, &a), 1, "database 7");
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    assert_eq!(xlen(&mut c, &a), 1, "database 0");
}

/// Reads from `s` until what was read ends with `end`.
fn read_until(s: &mut std::net::TcpStream, end: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(end) {
        let n = s.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "{e}: the rest of the replies after {:?}",
                String::from_utf8_lossy(&got)
            )
        });
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn queued_replies_and_exec_keep_request_order_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut raw = std::net::TcpStream::connect(server.resp_addr()).unwrap();
    // One write: the replies come in request order, each queued command answered +QUEUED
    // in its turn, and the XLEN after EXEC waits for EXEC's write.
    raw.write_all(
        b"PING\r\nMULTI\r\nXADD q 5-1 a 1\r\nXLEN q\r\nNOSUCHCMD\r\nEXEC\r\nXLEN q\r\n\
          MULTI\r\nXADD q 5-2 a 2\r\nXLEN q\r\nPING hi\r\nEXEC\r\nXLEN q\r\nXRANGE q - +\r\n",
    )
    .unwrap();
    let want = "+PONG\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n\
                -ERR unknown command 'NOSUCHCMD', with args beginning with: \r\n\
                -EXECABORT Transaction discarded because of previous errors.\r\n:0\r\n\
                +OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
                *3\r\n$3\r\n5-2\r\n:1\r\n$2\r\nhi\r\n:1\r\n\
                *1\r\n*2\r\n$3\r\n5-2\r\n*2\r\n$1\r\na\r\n$1\r\n2\r\n";
    let got = read_until(&mut raw, b"$1\r\n2\r\n");
    assert_eq!(String::from_utf8_lossy(&got), want);

    // Pipelined transactions and plain writes after them keep their order.
    let mut burst = Vec::new();
    for i in 0..50 {
        burst.extend_from_slice(format!("MULTI\r\nXADD p {i}-1 i {i}\r\nEXEC\r\n").as_bytes());
        burst.extend_from_slice(format!("XADD p {i}-2 j {i}\r\n").as_bytes());
    }
    burst.extend_from_slice(b"PING\r\n");
    raw.write_all(&burst).unwrap();
    let mut want = String::new();
    for i in 0..50 {
        let id = format!("{i}-1");
        want.push_str(&format!(
            "+OK\r\n+QUEUED\r\n*1\r\n${}\r\n{id}\r\n",
            id.len()
        ));
        let id = format!("{i}-2");
        want.push_str(&format!("${}\r\n{id}\r\n", id.len()));
    }
    want.push_str("+PONG\r\n");
    let got = read_until(&mut raw, b"+PONG\r\n");
    assert_eq!(String::from_utf8_lossy(&got), want);
    raw.write_all(b"XLEN p\r\n").unwrap();
    assert_eq!(read_until(&mut raw, b"\r\n"), b":100\r\n");

    // WATCH inside MULTI is refused and leaves the transaction going; RESET discards it.
    raw.write_all(b"MULTI\r\nXADD r 1-1 a 1\r\nWATCH r\r\nRESET\r\nEXEC\r\nXLEN r\r\n")
        .unwrap();
    let got = read_until(&mut raw, b":0\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+QUEUED\r\n-ERR WATCH inside MULTI is not allowed\r\n+RESET\r\n\
         -ERR EXEC without MULTI\r\n:0\r\n"
    );

    // RESP3: CONFIG GET answers a map, INFO a verbatim string.
    let mut raw3 = std::net::TcpStream::connect(server.resp_addr()).unwrap();
    raw3.write_all(b"HELLO 3\r\nCONFIG GET appendonly\r\nINFO persistence\r\n")
        .unwrap();
    let got = read_until(&mut raw3, b"appendfsync:always\r\n\r\n");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("%1\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n=")
            && text.contains("txt:# Persistence\r\n"),
        "{text}"
    );
}

#[test]
fn a_transaction_larger_than_a_request_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--set", "request_frame_bytes_max=4096"]);
    let mut c = server.redis();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let value = "x".repeat(1000);
    let mut refused = None;
    for _ in 0..5 {
        match redis::cmd("XADD")
            .arg("big")
            .arg("*")
            .arg("v")
            .arg(&value)
            .query::<Value>(&mut c)
        {
            Ok(v) => assert_eq!(v, Value::SimpleString("QUEUED".into())),
            Err(e) => refused = Some(e.to_string()),
        }
    }
    let refused = refused.expect("the fifth 1 KB command is beyond 4096 bytes");
    assert!(refused.contains("request_frame_bytes_max"), "{refused}");
    let aborted = redis::cmd("EXEC").query::<Value>(&mut c);
    assert!(error_text(aborted).contains("Transaction discarded because of previous errors"));
    assert_eq!(xlen(&mut c, "big"), 0);
}

#[test]
fn xinfo_stream_describes_a_stream_as_redis_7_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    for i in 1..=5 {
        xadd1(&mut c, "s", &format!("{i}-0"), "i", &i.to_string());
    }
    let _: i64 = redis::cmd("XDEL")
        .arg("s")
        .arg("4-0")
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("XTRIM")
        .arg("s")
        .arg("MINID")
        .arg("2")
        .query(&mut c)
        .unwrap();
    let info: HashMap<String, Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg("s")
        .query(&mut c)
        .unwrap();
    let text = |k: &str| match &info[k] {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    assert_eq!(text("length"), "3");
    assert_eq!(text("last-generated-id"), "5-0");
    assert_eq!(text("max-deleted-entry-id"), "4-0");
    assert_eq!(text("entries-added"), "5");
    assert_eq!(text("recorded-first-entry-id"), "2-0");
    assert_eq!(text("groups"), "0");
    let first: (String, Vec<(String, String)>) =
        redis::from_redis_value(&info["first-entry"]).unwrap();
    assert_eq!(
        first,
        ("2-0".to_string(), vec![("i".to_string(), "2".to_string())])
    );
    let last: (String, Vec<(String, String)>) =
        redis::from_redis_value(&info["last-entry"]).unwrap();
    assert_eq!(last.0, "5-0");
    let none = redis::cmd("XINFO")
        .arg("STREAM")
        .arg("nothing")
        .query::<Value>(&mut c);
    assert!(error_text(none).contains("no such key"));
    let help = redis::cmd("XINFO")
        .arg("HELP")
        .arg("x")
        .query::<Value>(&mut c);
    assert!(error_text(help).contains("wrong number of arguments"));
    // An exclusive bound cannot be - or +.
    let bad = redis::cmd("XRANGE")
        .arg("s")
        .arg("(-")
        .arg("+")
        .query::<Value>(&mut c);
    assert!(error_text(bad).contains("invalid start ID for the interval"));
    let bad = redis::cmd("XRANGE")
        .arg("s")
        .arg("-")
        .arg("(+")
        .query::<Value>(&mut c);
    assert!(error_text(bad).contains("invalid end ID for the interval"));
}

/// A read pipelined behind writes of the same connection sees them (it runs once they are
/// answered), while the writes share frames.
#[test]
fn a_read_pipelined_after_writes_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    for round in 1..=20u64 {
        let mut pipe = redis::pipe();
        for i in 0..10 {
            pipe.cmd("XADD").arg("rw").arg("*").arg("i").arg(i);
        }
        pipe.cmd("XLEN").arg("rw");
        pipe.cmd("XRANGE").arg("rw").arg("-").arg("+");
        let replies: Vec<Value> = pipe.query(&mut c).unwrap();
        assert_eq!(replies[10], Value::Int(10 * round as i64), "round {round}");
        let Value::Array(entries) = &replies[11] else {
            panic!("{:?}", replies[11]);
        };
        assert_eq!(entries.len() as u64, 10 * round);
    }
}

/// On a fixed RESP port (as a deployment runs it), a restart after kill -9 serves the same
/// port again with what was acknowledged.
#[test]
fn a_fixed_resp_port_is_served_again_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let setting = format!("resp_listen=\"127.0.0.1:{port}\"");
    let mut server = start(dir.path(), &["--set", &setting]);
    assert_eq!(server.resp_addr(), format!("127.0.0.1:{port}"));
    let mut c = server.redis();
    xadd1(&mut c, "fixed", "1-1", "a", "1");
    drop(c);
    server.kill_and_restart();
    assert_eq!(server.resp_addr(), format!("127.0.0.1:{port}"));
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(xlen(&mut c, "fixed"), 1);
}
