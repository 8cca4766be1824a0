//! The EV commands of the RESP port with a real Redis client (the `redis` crate) on the real
//! evringd: EV.APPEND then EV.READ back (versions, stream IDs as XRANGE has them, event ids,
//! values), expected-version conflicts, an idempotent retry, EV.INFO, EV.AGG over appended
//! values, EV.EXEC and EV.QUERY of the key-value model, bad input answered with an error while
//! the connection goes on, reads that see the connection's earlier writes, MULTI, and every
//! acknowledged EV.APPEND back after kill -9.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::Server;
use redis::{from_redis_value, RedisResult, Value};

fn start(dir: &std::path::Path) -> Server {
    Server::start(
        &dir.join("data"),
        &[
            "--partitions",
            "4",
            "--set",
            "shards=2",
            "--set",
            "pin_cpus=false",
        ],
    )
}

type Map = HashMap<String, Value>;

/// A command's reply as a map (RESP2: a flat array of keys and values).
fn map(c: &mut redis::Connection, cmd: &redis::Cmd) -> Map {
    let v: Value = cmd.query(c).unwrap();
    from_redis_value(&v).unwrap()
}

fn int(m: &Map, key: &str) -> i64 {
    from_redis_value(&m[key]).unwrap_or_else(|e| panic!("{key}: {e} in {m:?}"))
}

fn string(m: &Map, key: &str) -> String {
    from_redis_value(&m[key]).unwrap_or_else(|e| panic!("{key}: {e} in {m:?}"))
}

fn float(m: &Map, key: &str) -> Option<f64> {
    match &m[key] {
        Value::Nil => None,
        v => Some(from_redis_value(v).unwrap()),
    }
}

fn error_text(r: RedisResult<Value>) -> String {
    r.expect_err("an error reply").to_string()
}

/// EV.APPEND stream expected type data (one event).
fn append(c: &mut redis::Connection, stream: &str, expected: &str, ty: &str, data: &str) -> Map {
    map(
        c,
        redis::cmd("EV.APPEND")
            .arg(stream)
            .arg(expected)
            .arg(ty)
            .arg(data),
    )
}

/// EV.READ's events as maps.
fn read(c: &mut redis::Connection, stream: &str, from: &str, count: u64, back: bool) -> Vec<Map> {
    let mut cmd = redis::cmd("EV.READ");
    cmd.arg(stream).arg(from).arg(count);
    if back {
        cmd.arg("BACKWARD");
    }
    let v: Vec<Value> = cmd.query(c).unwrap();
    v.iter().map(|e| from_redis_value(e).unwrap()).collect()
}

#[test]
fn appended_events_read_back_with_their_versions_ids_and_stream_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut c = server.redis();
    let id = "00112233445566778899aabbccddeeff";
    let a = map(
        &mut c,
        redis::cmd("EV.APPEND")
            .arg("orders-1")
            .arg("NO-STREAM")
            .arg("Created")
            .arg(r#"{"n":1}"#)
            .arg("ID")
            .arg(id)
            .arg("VALUE")
            .arg("2.5")
            .arg("METADATA")
            .arg("m")
            .arg("TIMESTAMP")
            .arg("1733472000s")
            .arg("Paid")
            .arg(b"\x00bin\xff".as_slice()),
    );
    assert_eq!(int(&a, "first-version"), 0);
    assert_eq!(int(&a, "last-version"), 1);
    assert_eq!(int(&a, "next-version"), 2);
    assert_eq!(int(&a, "lsn"), 0);
    let b = append(&mut c, "orders-1", "1", "Shipped", "{}");
    assert_eq!(int(&b, "first-version"), 2);
    assert_eq!(int(&b, "partition"), int(&a, "partition"));

    let events = read(&mut c, "orders-1", "0", 10, false);
    assert_eq!(events.len(), 3);
    let versions: Vec<i64> = events.iter().map(|e| int(e, "version")).collect();
    assert_eq!(versions, [0, 1, 2]);
    assert_eq!(string(&events[0], "type"), "Created");
    assert_eq!(string(&events[0], "data"), r#"{"n":1}"#);
    assert_eq!(events[0]["event-id"], Value::Nil);
    assert_eq!(float(&events[0], "value"), None);
    let paid = &events[1];
    assert_eq!(string(paid, "type"), "Paid");
    let data: Vec<u8> = from_redis_value(&paid["data"]).unwrap();
    assert_eq!(data, b"\x00bin\xff");
    assert_eq!(string(paid, "event-id"), id);
    assert_eq!(float(paid, "value"), Some(2.5));
    assert_eq!(string(paid, "metadata"), "m");
    assert_eq!(int(paid, "timestamp"), 1_733_472_000_000_000_000);
    assert!(int(&events[0], "timestamp") > 1_733_472_000_000_000_000);
    // Each event's stream ID is the ID XRANGE gives the same entry.
    let entries: Vec<(String, Value)> = redis::cmd("XRANGE")
        .arg("orders-1")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let ids: Vec<String> = events.iter().map(|e| string(e, "stream-id")).collect();
    let xids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, xids);

    // From a version, backward from the last (`+`), a count, a database of its own.
    let tail = read(&mut c, "orders-1", "1", 10, false);
    assert_eq!(tail.len(), 2);
    let back = read(&mut c, "orders-1", "+", 2, true);
    let versions: Vec<i64> = back.iter().map(|e| int(e, "version")).collect();
    assert_eq!(versions, [2, 1]);
    assert!(read(&mut c, "orders-1", "3", 10, false).is_empty());
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let e = error_text(
        redis::cmd("EV.READ")
            .arg("orders-1")
            .arg(0)
            .arg(10)
            .query(&mut c),
    );
    assert!(e.contains("not found"), "{e}");
    append(&mut c, "orders-1", "any", "Other", "x");
    assert_eq!(read(&mut c, "orders-1", "0", 10, false).len(), 1);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();

    // EV.INFO: STREAM_INFO.
    let info = map(&mut c, redis::cmd("EV.INFO").arg("orders-1"));
    assert_eq!(int(&info, "next-version"), 3);
    assert_eq!(int(&info, "first-lsn"), 0);
    assert_eq!(int(&info, "last-lsn"), int(&b, "lsn"));
    assert_eq!(int(&info, "partition"), int(&a, "partition"));
    let e = error_text(redis::cmd("EV.INFO").arg("nope").query(&mut c));
    assert!(e.contains("stream \"nope\" not found"), "{e}");

    // The native protocol sees the same events.
    let (native, _) = server
        .client()
        .read("orders-1", 0, 10, evring::protocol::Direction::Forward)
        .unwrap();
    assert_eq!(native.len(), 3);
    assert_eq!(native[1].event.id[15], 0xff);
}

#[test]
fn a_wrong_expected_version_names_the_current_one_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut c = server.redis();
    append(&mut c, "s", "no-stream", "A", "1");
    append(&mut c, "s", "0", "B", "2");
    let conflict = |c: &mut redis::Connection, expected: &str| {
        error_text(
            redis::cmd("EV.APPEND")
                .arg("s")
                .arg(expected)
                .arg("C")
                .arg("3")
                .query(c),
        )
    };
    let e = conflict(&mut c, "0");
    assert!(
        e.contains("wrong expected version") && e.contains("is at 1"),
        "{e}"
    );
    assert!(e.contains("expected version 1"), "{e}");
    let e = conflict(&mut c, "NO-STREAM");
    assert!(e.contains("is at 1"), "{e}");
    let e = error_text(
        redis::cmd("EV.APPEND")
            .arg("missing")
            .arg("EXISTS")
            .arg("C")
            .arg("3")
            .query(&mut c),
    );
    assert!(
        e.contains("is at -1") && e.contains("expected version NO-STREAM"),
        "{e}"
    );
    let info = map(&mut c, redis::cmd("EV.INFO").arg("s"));
    assert_eq!(int(&info, "next-version"), 2);
    let a = append(&mut c, "s", "1", "C", "3");
    assert_eq!(int(&a, "first-version"), 2);
}

#[test]
fn a_retry_with_the_same_event_ids_is_answered_with_the_original_versions() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut c = server.redis();
    let batch = |c: &mut redis::Connection, stream: &str| {
        redis::cmd("EV.APPEND")
            .arg(stream)
            .arg("any")
            .arg("ID")
            .arg("0000000000000000000000000000000a")
            .arg("A")
            .arg("1")
            .arg("ID")
            .arg("0000000000000000000000000000000b")
            .arg("B")
            .arg("2")
            .query::<Value>(c)
    };
    let first: Map = from_redis_value(&batch(&mut c, "r").unwrap()).unwrap();
    append(&mut c, "r", "any", "Later", "x");
    let again: Map = from_redis_value(&batch(&mut c, "r").unwrap()).unwrap();
    assert_eq!(int(&again, "first-version"), int(&first, "first-version"));
    assert_eq!(int(&again, "last-version"), 1);
    assert_eq!(int(&again, "lsn"), int(&first, "lsn"));
    assert_eq!(read(&mut c, "r", "0", 100, false).len(), 3);
    // The same ids for another stream are not a retry: refused, nothing written.
    let e = error_text(batch(&mut c, "other"));
    assert!(e.contains("not a retry"), "{e}");
    let e = error_text(redis::cmd("EV.INFO").arg("other").query(&mut c));
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn ev_agg_aggregates_appended_values_with_the_cli_options() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut c = server.redis();
    for (stream, values) in [("cpu-a", &[1.0, 2.0, 3.0][..]), ("cpu-b", &[10.0][..])] {
        for v in values {
            let _: Value = redis::cmd("EV.APPEND")
                .arg(stream)
                .arg("any")
                .arg("VALUE")
                .arg(v.to_string())
                .arg("Sample")
                .arg(format!(r#"{{"host":"{stream}","v":{v}}}"#))
                .query(&mut c)
                .unwrap();
        }
    }
    append(&mut c, "other", "any", "Note", "no value");
    let agg = |c: &mut redis::Connection, args: &[&str]| map(c, redis::cmd("EV.AGG").arg(args));
    let groups = |m: &Map| -> Vec<Map> {
        let v: Vec<Value> = from_redis_value(&m["groups"]).unwrap();
        v.iter().map(|g| from_redis_value(g).unwrap()).collect()
    };

    // Everything: one group; the event without a value is matched and missing.
    let all = agg(&mut c, &["SINCE", "1h"]);
    assert_eq!(int(&all, "matched"), 5);
    let g = groups(&all);
    assert_eq!(g.len(), 1);
    assert_eq!(int(&g[0], "count"), 4);
    assert_eq!(int(&g[0], "missing"), 1);
    assert_eq!(float(&g[0], "sum"), Some(16.0));
    assert_eq!(float(&g[0], "max"), Some(10.0));

    // Per stream, by prefix, top 1 by sum.
    let top = agg(
        &mut c,
        &[
            "SINCE",
            "1h",
            "STREAM-PREFIX",
            "cpu-",
            "GROUP-BY",
            "stream",
            "TOP",
            "1",
            "ORDER",
            "sum",
        ],
    );
    assert_eq!(int(&top, "groups-total"), 2);
    let g = groups(&top);
    assert_eq!(g.len(), 1);
    assert_eq!(string(&g[0], "key"), "cpu-b");
    assert_eq!(float(&g[0], "avg"), Some(10.0));

    // A field of the data, a where filter, buckets.
    let one = agg(
        &mut c,
        &[
            "SINCE",
            "1h",
            "BUCKET",
            "10m",
            "FIELD",
            "data.v",
            "WHERE",
            "data.host=cpu-a",
            "TYPE",
            "Sample",
        ],
    );
    assert_eq!(int(&one, "matched"), 3);
    let g = groups(&one);
    assert_eq!(float(&g[0], "avg"), Some(2.0));
    let buckets: Vec<Value> = from_redis_value(&g[0]["buckets"]).unwrap();
    assert!(
        buckets.len() >= 6 && buckets.len() <= 7,
        "{}",
        buckets.len()
    );
    assert_eq!(int(&one, "bucket"), 600_000_000_000);
    assert_eq!(int(&one, "from") % 600_000_000_000, 0);

    // Bad options: errors that name them, from the CLI's and the server's checks.
    for (args, says) in [
        (&["SINCE", "1x"][..], "SINCE \"1x\" is not a duration"),
        (&["SINCE"], "needs a value"),
        (&["BOGUS", "1"], "unknown EV.AGG option"),
        (&["FROM", "1733472000"], "give the unit"),
        (&["SINCE", "1h", "FIELD", "amount"], "amount"),
        (&["SINCE", "1h", "TOP", "-1"], "TOP"),
        (&["SINCE", "1d", "BUCKET", "1ns"], "buckets"),
    ] {
        let e = error_text(redis::cmd("EV.AGG").arg(args).query(&mut c));
        assert!(e.contains(says), "{args:?}: {e}");
    }
}

#[test]
fn ev_exec_and_ev_query_reach_the_served_model() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut c = server.redis();
    let set: String = redis::cmd("EV.EXEC")
        .arg("kv")
        .arg(r#"{"op":"set","key":"k","value":"v1"}"#)
        .query(&mut c)
        .unwrap();
    let set: serde_json::Value = serde_json::from_str(&set).unwrap();
    assert_eq!(set["version"], 1);
    let got: String = redis::cmd("EV.QUERY")
        .arg("kv")
        .arg(r#"{"op":"get","key":"k"}"#)
        .query(&mut c)
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["value"], "v1");
    let e = error_text(
        redis::cmd("EV.EXEC")
            .arg("kv")
            .arg(r#"{"op":"cas","key":"k","expected_version":5,"value":"x"}"#)
            .query(&mut c),
    );
    assert!(e.contains("version 1"), "{e}");
    let e = error_text(redis::cmd("EV.QUERY").arg("nope").arg("{}").query(&mut c));
    assert!(e.contains("no model named"), "{e}");
    let e = error_text(
        redis::cmd("EV.EXEC")
            .arg("kv")
            .arg("not json")
            .query(&mut c),
    );
    assert!(e.contains("bad kv request"), "{e}");
    // The native protocol's QUERY sees the same state.
    let native = server
        .client()
        .query("kv", br#"{"op":"get","key":"k"}"#.to_vec())
        .unwrap();
    let native: serde_json::Value = serde_json::from_slice(&native).unwrap();
    assert_eq!(native, got);
}

#[test]
fn bad_input_is_answered_with_an_error_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut c = server.redis();
    let cases: &[(&[&str], &str)] = &[
        (
            &["EV.APPEND", "s", "any", "T"],
            "wrong number of arguments for 'ev.append' command",
        ),
        (
            &["EV.APPEND", "s"],
            "wrong number of arguments for 'ev.append' command",
        ),
        (
            &["EV.READ", "s", "0"],
            "wrong number of arguments for 'ev.read' command",
        ),
        (
            &["EV.INFO"],
            "wrong number of arguments for 'ev.info' command",
        ),
        (
            &["EV.EXEC", "kv"],
            "wrong number of arguments for 'ev.exec' command",
        ),
        (&["EV.READ", "s", "x", "1"], "not an integer"),
        (&["EV.READ", "s", "-1", "1"], "not an integer"),
        (&["EV.READ", "s", "0", "0"], "max_read_count"),
        (&["EV.READ", "s", "0", "10001"], "max_read_count"),
        (
            &["EV.READ", "s", "0", "1", "SIDEWAYS"],
            "FORWARD or BACKWARD",
        ),
        (&["EV.READ", "s", "0", "1", "BACKWARD", "x"], "syntax error"),
        (&["EV.APPEND", "s", "maybe", "T", "d"], "expected version"),
        (&["EV.APPEND", "s", "-4", "T", "d"], "expected version"),
        (
            &["EV.APPEND", "s", "any", "ID", "123", "T", "d"],
            "32 hex digits",
        ),
        (&["EV.APPEND", "s", "any", "VALUE", "x", "T", "d"], "VALUE"),
        (&["EV.APPEND", "s", "any", "T", "d", "U"], "no data"),
        (
            &["EV.APPEND", "s", "any", "TIMESTAMP", "yesterday", "T", "d"],
            "RFC 3339",
        ),
        (&["EV.FROB", "x"], "unknown command 'EV.FROB'"),
    ];
    for (args, says) in cases {
        let e = error_text(redis::cmd(args[0]).arg(&args[1..]).query(&mut c));
        assert!(e.contains(says), "{args:?}: {e}");
    }
    // Nothing was written, and the connection still serves.
    let e = error_text(redis::cmd("EV.INFO").arg("s").query(&mut c));
    assert!(e.contains("not found"), "{e}");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let n: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(n >= 38, "{n}");
}

/// EV.READ, EV.INFO and EV.AGG pipelined right behind an EV.APPEND of the same connection see
/// it (they run alone: once the append before them is answered).
#[test]
fn reads_see_the_connections_earlier_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut c = server.redis();
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("EV.APPEND")
            .arg("seen")
            .arg("any")
            .arg("VALUE")
            .arg(1)
            .arg("T")
            .arg(i)
            .ignore();
        pipe.cmd("EV.INFO").arg("seen");
        pipe.cmd("EV.READ")
            .arg("seen")
            .arg("+")
            .arg(1)
            .arg("BACKWARD");
        pipe.cmd("EV.AGG").arg("STREAM").arg("seen");
    }
    let replies: Vec<Value> = pipe.query(&mut c).unwrap();
    for (i, r) in replies.chunks(3).enumerate() {
        let info: Map = from_redis_value(&r[0]).unwrap();
        assert_eq!(int(&info, "next-version"), i as i64 + 1, "EV.INFO {i}");
        let last: Vec<Map> = from_redis_value(&r[1]).unwrap();
        assert_eq!(int(&last[0], "version"), i as i64, "EV.READ {i}");
        let agg: Map = from_redis_value(&r[2]).unwrap();
        assert_eq!(int(&agg, "matched"), i as i64 + 1, "EV.AGG {i}");
    }
}

#[test]
fn ev_append_runs_in_a_transaction_and_the_commands_without_a_stream_abort_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut c = server.redis();
    let (a, info): (Map, Map) = redis::pipe()
        .atomic()
        .cmd("EV.APPEND")
        .arg("tx")
        .arg("no-stream")
        .arg("T")
        .arg("d")
        .cmd("EV.INFO")
        .arg("tx")
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&a, "first-version"), 0);
    assert_eq!(int(&info, "next-version"), 1);
    let _: String = redis::cmd("MULTI").query(&mut c).unwrap();
    let q: String = redis::cmd("EV.APPEND")
        .arg("tx")
        .arg("0")
        .arg("T")
        .arg("d")
        .query(&mut c)
        .unwrap();
    assert_eq!(q, "QUEUED");
    let e = error_text(redis::cmd("EV.AGG").arg("SINCE").arg("1h").query(&mut c));
    assert!(e.contains("not allowed inside MULTI"), "{e}");
    let e = error_text(redis::cmd("EXEC").query(&mut c));
    assert!(e.contains("Transaction discarded"), "{e}");
    let info = map(&mut c, redis::cmd("EV.INFO").arg("tx"));
    assert_eq!(int(&info, "next-version"), 1);
}

#[test]
fn every_acknowledged_ev_append_comes_back_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    // (stream, version, data) of each acknowledged append.
    let acked: Arc<Mutex<Vec<(String, i64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop) = (acked.clone(), stop.clone());
            let mut c = server.redis();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let stream = format!("k{}", (w + i) % 6);
                    let data = format!("{w}:{i}");
                    let r: RedisResult<Value> = redis::cmd("EV.APPEND")
                        .arg(&stream)
                        .arg("any")
                        .arg("T")
                        .arg(&data)
                        .query(&mut c);
                    match r {
                        Ok(v) => {
                            let m: Map = from_redis_value(&v).unwrap();
                            let version = int(&m, "first-version");
                            acked.lock().unwrap().push((stream, version, data));
                        }
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
        let stream = format!("k{k}");
        let mut have = HashMap::new();
        let mut from = 0;
        loop {
            let page = read(&mut c, &stream, &from.to_string(), 1000, false);
            for e in &page {
                have.insert(int(e, "version"), string(e, "data"));
            }
            if page.len() < 1000 {
                break;
            }
            from += 1000;
        }
        for (_, version, data) in acked.iter().filter(|(s, _, _)| *s == stream) {
            assert_eq!(have.get(version), Some(data), "{stream} {version}");
        }
    }
    eprintln!("{} acknowledged EV.APPENDs came back", acked.len());
}
