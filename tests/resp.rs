//! The RESP port with a real Redis client (the `redis` crate) on the real evringd: streams
//! written and read with XADD, XLEN, XRANGE and XREVRANGE in Redis's terms, one keyspace with
//! the native protocol, databases, authentication, replies in request order under
//! pipelining, protocol errors, and every acknowledged XADD back after kill -9; the keyspace
//! commands (DBSIZE, EXISTS, TYPE, KEYS, SCAN) over every partition and database, INFO,
//! CONFIG GET/SET, and MULTI/EXEC/DISCARD (queued replies, EXECABORT, CROSSSLOT, order on
//! the wire).

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

fn xadd(c: &mut redis::Connection, key: &str, id: &str) -> String {
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

#[test]
fn keyspace_commands_see_every_partition_and_only_the_database_selected() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    // 30 keys over the 4 partitions of 2 shards, a stream written natively, and 10 keys of
    // database 1 (some of the same names).
    let mut db0: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for k in &db0 {
        xadd(&mut c, k, "*");
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
        xadd(&mut c, k, "*");
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
        xadd(c, &format!("new{added}"), "*");
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
        xadd(&mut c, &format!("a{i}"), "*");
    }
    let _: () = redis::cmd("SELECT").arg(5).query(&mut c).unwrap();
    xadd(&mut c, "a0", "*");
    let (headers, f) = info(&mut c, &["keyspace"]);
    assert_eq!(headers, ["Keyspace"]);
    assert_eq!(f["db0"], "keys=3,expires=0,avg_ttl=0");
    assert_eq!(f["db5"], "keys=1,expires=0,avg_ttl=0");
    assert_eq!(f.len(), 2);
    let (headers, _) = info(&mut c, &["SERVER", "stats", "nosuchsection"]);
    assert_eq!(headers, ["Server", "Stats"]);
    let (headers, _) = info(&mut c, &["all"]);
    assert_eq!(headers.len(), 6);

    // Commands are counted, and CONFIG RESETSTAT starts the count again.
    let (_, f) = info(&mut c, &["stats"]);
    let before: u64 = f["total_commands_processed"].parse().unwrap();
    assert!(before >= 8, "{before}");
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let (_, f) = info(&mut c, &["stats"]);
    let after: u64 = f["total_commands_processed"].parse().unwrap();
    assert!(after < before, "{after} after RESETSTAT, {before} before");
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
