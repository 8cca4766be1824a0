//! Stream state beyond entries on the RESP port, on the real evringd with the `redis` crate:
//! XSETID (last ID, entries added, largest deleted ID), Redis lists, strings and sets survive
//! kill -9, from the journal and from snapshots; WRONGTYPE both ways; SET replaces a key of
//! any type in one journal frame; an EXEC's writes are one journal frame (durable together).

mod common;

use common::Server;
use redis::Value;

fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--partitions",
        "1",
        "--set",
        "pin_cpus=false",
        "--set",
        "metrics_listen=\"127.0.0.1:0\"",
    ];
    args.extend_from_slice(extra);
    Server::start(&dir.join("data"), &args)
}

fn info(c: &mut redis::Connection, key: &str) -> std::collections::HashMap<String, Value> {
    redis::cmd("XINFO").arg("STREAM").arg(key).query(c).unwrap()
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn error(c: &mut redis::Connection, cmd: &redis::Cmd) -> String {
    cmd.query::<Value>(c)
        .expect_err("an error reply")
        .to_string()
}

/// What the test wrote, read back.
fn check(c: &mut redis::Connection) {
    let s = info(c, "s");
    assert_eq!(text(&s["last-generated-id"]), "900-6");
    assert_eq!(text(&s["entries-added"]), "43");
    assert_eq!(text(&s["max-deleted-entry-id"]), "900-6");
    assert_eq!(text(&s["length"]), "2");
    // Rewound below the IDs of entries all deleted since.
    let r = info(c, "rewound");
    assert_eq!(text(&r["last-generated-id"]), "5-0");
    assert_eq!(text(&r["length"]), "0");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("l")
        .arg(0)
        .arg(-1)
        .query(c)
        .unwrap();
    assert_eq!(list, ["c", "b", "a", "x", "y"]);
    let t: String = redis::cmd("TYPE").arg("l").query(c).unwrap();
    assert_eq!(t, "list");
    let t: String = redis::cmd("TYPE").arg("s").query(c).unwrap();
    assert_eq!(t, "stream");
}

#[test]
fn xsetid_and_lists_survive_kill_9_from_the_journal_and_from_snapshots() {
    for snapshot_every in [None, Some("5")] {
        let dir = tempfile::tempdir().unwrap();
        let owned;
        let args: Vec<&str> = match snapshot_every {
            Some(n) => {
                owned = format!("snapshot_every_events={n}");
                vec!["--set", &owned]
            }
            None => Vec::new(),
        };
        let mut server = start(dir.path(), &args);
        let mut c = server.redis();
        for id in ["1-0", "2-0", "3-0", "4-0"] {
            redis::cmd("XADD")
                .arg("s")
                .arg(id)
                .arg("f")
                .arg("v")
                .exec(&mut c)
                .unwrap();
        }
        redis::cmd("XDEL").arg("s").arg("3-0").exec(&mut c).unwrap();
        redis::cmd("XDEL").arg("s").arg("1-0").exec(&mut c).unwrap();
        // Refused: below the newest entry, below the length, below the largest deleted ID.
        assert!(error(&mut c, redis::cmd("XSETID").arg("s").arg("3-5")).contains("top item"));
        assert!(error(
            &mut c,
            redis::cmd("XSETID")
                .arg("s")
                .arg("9-0")
                .arg("ENTRIESADDED")
                .arg(1)
        )
        .contains("smaller than the target stream length"));
        assert!(error(&mut c, redis::cmd("XSETID").arg("nokey").arg("1-0")).contains("no such key"));
        redis::cmd("XSETID")
            .arg("s")
            .arg("900-5")
            .arg("ENTRIESADDED")
            .arg(42)
            .arg("MAXDELETEDID")
            .arg("3-0")
            .exec(&mut c)
            .unwrap();
        let s = info(&mut c, "s");
        assert_eq!(text(&s["last-generated-id"]), "900-5");
        assert_eq!(text(&s["entries-added"]), "42");
        assert_eq!(text(&s["max-deleted-entry-id"]), "3-0");
        // The next automatic ID follows the one XSETID set, not the entries'.
        let id: String = redis::cmd("XADD")
            .arg("s")
            .arg("900-*")
            .arg("f")
            .arg("v")
            .query(&mut c)
            .unwrap();
        assert_eq!(id, "900-6");
        redis::cmd("XDEL")
            .arg("s")
            .arg("900-6")
            .exec(&mut c)
            .unwrap();
        for id in ["10-0", "11-0"] {
            redis::cmd("XADD")
                .arg("rewound")
                .arg(id)
                .arg("f")
                .arg("v")
                .exec(&mut c)
                .unwrap();
        }
        redis::cmd("XTRIM")
            .arg("rewound")
            .arg("MAXLEN")
            .arg(0)
            .exec(&mut c)
            .unwrap();
        redis::cmd("XSETID")
            .arg("rewound")
            .arg("5-0")
            .exec(&mut c)
            .unwrap();
        let n: i64 = redis::cmd("LPUSH")
            .arg("l")
            .arg("a")
            .arg("b")
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 2);
        let n: i64 = redis::cmd("RPUSH")
            .arg("l")
            .arg("x")
            .arg("y")
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 4);
        let n: i64 = redis::cmd("LPUSH").arg("l").arg("c").query(&mut c).unwrap();
        assert_eq!(n, 5);
        // WRONGTYPE both ways; the list and the stream are unchanged.
        for cmd in [
            redis::cmd("XADD")
                .arg("l")
                .arg("*")
                .arg("f")
                .arg("v")
                .clone(),
            redis::cmd("XRANGE").arg("l").arg("-").arg("+").clone(),
            redis::cmd("XLEN").arg("l").clone(),
            redis::cmd("XDEL").arg("l").arg("1-0").clone(),
            redis::cmd("LPUSH").arg("s").arg("z").clone(),
            redis::cmd("LRANGE").arg("s").arg(0).arg(-1).clone(),
        ]
        .iter()
        .enumerate()
        {
            let e = error(&mut c, cmd.1);
            assert!(e.starts_with("WRONGTYPE"), "command {}: {e}", cmd.0);
        }
        check(&mut c);
        if snapshot_every.is_some() {
            let started = std::time::Instant::now();
            while !server.has_snapshot(0) {
                assert!(started.elapsed().as_secs() < 20, "no snapshot");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        drop(c);
        server.kill_and_restart();
        let mut c = server.redis();
        check(&mut c);
        // A deleted list's name makes a stream again.
        redis::cmd("DEL").arg("l").exec(&mut c).unwrap();
        redis::cmd("XADD")
            .arg("l")
            .arg("*")
            .arg("f")
            .arg("v")
            .exec(&mut c)
            .unwrap();
        let t: String = redis::cmd("TYPE").arg("l").query(&mut c).unwrap();
        assert_eq!(t, "stream");
    }
}

/// The partition's frames written so far.
fn frames(server: &Server) -> f64 {
    server.metric_sum("evring_frames_written_total")
}

#[test]
fn an_exec_of_writes_is_one_journal_frame() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    redis::cmd("XADD")
        .arg("warm")
        .arg("*")
        .arg("f")
        .arg("v")
        .exec(&mut c)
        .unwrap();
    for round in 0..3 {
        let before = frames(&server);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for i in 0..50 {
            pipe.cmd("XADD")
                .arg(format!("s{}", i % 7))
                .arg("MAXLEN")
                .arg(20)
                .arg("*")
                .arg("i")
                .arg(i);
        }
        pipe.cmd("XDEL").arg("s1").arg("0-1");
        pipe.cmd("DEL").arg("s2");
        pipe.cmd("LPUSH").arg(format!("list{round}")).arg("a");
        let replies: Vec<Value> = pipe.query(&mut c).unwrap();
        assert_eq!(replies.len(), 53);
        assert_eq!(
            frames(&server) - before,
            1.0,
            "round {round}: the transaction's 53 commands took one frame"
        );
    }
}

#[test]
fn a_range_reply_past_its_byte_bound_is_refused_and_count_pages_through() {
    let dir = tempfile::tempdir().unwrap();
    // 8 × 64 KiB: a reply may hold 512 KiB of entries.
    let server = start(dir.path(), &["--set", "max_read_bytes=65536"]);
    let mut c = server.redis();
    let big = "x".repeat(10_000);
    for _ in 0..60 {
        redis::cmd("XADD")
            .arg("big")
            .arg("*")
            .arg("f")
            .arg(&big)
            .exec(&mut c)
            .unwrap();
    }
    let e = error(&mut c, redis::cmd("XRANGE").arg("big").arg("-").arg("+"));
    assert!(e.contains("COUNT"), "{e}");
    // The connection goes on, and pages of COUNT read everything.
    let mut seen = 0;
    let mut start = "-".to_string();
    loop {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("big")
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(20)
            .query(&mut c)
            .unwrap();
        seen += page.len();
        match page.last() {
            Some((id, _)) if page.len() == 20 => start = format!("({id}"),
            _ => break,
        }
    }
    assert_eq!(seen, 60);
}

#[test]
fn a_huge_node_size_trims_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(i64::MAX)
        .exec(&mut c)
        .unwrap();
    for _ in 0..3 {
        redis::cmd("XADD")
            .arg("s")
            .arg("*")
            .arg("f")
            .arg("v")
            .exec(&mut c)
            .unwrap();
    }
    // One node holds everything: MAXLEN ~ 0 deletes it whole (as Redis), MAXLEN ~ 1 keeps the
    // one entry after it, and the server goes on.
    let n: i64 = redis::cmd("XTRIM")
        .arg("s")
        .arg("MAXLEN")
        .arg("~")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 3);
    let id: String = redis::cmd("XADD")
        .arg("s")
        .arg("MAXLEN")
        .arg("~")
        .arg(1)
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!(!id.is_empty());
    assert_eq!(redis::cmd("XLEN").arg("s").query::<i64>(&mut c).unwrap(), 1);
}

fn members(c: &mut redis::Connection, key: &str) -> Vec<String> {
    let mut m: Vec<String> = redis::cmd("SMEMBERS").arg(key).query(c).unwrap();
    m.sort();
    m
}

fn kind(c: &mut redis::Connection, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query(c).unwrap()
}

/// The strings and sets the test wrote, read back.
fn check_strings_and_sets(c: &mut redis::Connection) {
    let v: Option<String> = redis::cmd("GET").arg("str").query(c).unwrap();
    assert_eq!(v.as_deref(), Some("v3"));
    let v: Option<String> = redis::cmd("GET").arg("was-stream").query(c).unwrap();
    assert_eq!(v.as_deref(), Some("now a string"));
    let v: Option<String> = redis::cmd("GET").arg("nokey").query(c).unwrap();
    assert_eq!(v, None);
    assert_eq!(kind(c, "str"), "string");
    assert_eq!(kind(c, "was-stream"), "string");
    assert_eq!(kind(c, "set"), "set");
    assert_eq!(members(c, "set"), ["a", "b", "c", "d"]);
    let n: i64 = redis::cmd("SCARD").arg("set").query(c).unwrap();
    assert_eq!(n, 4);
    let n: i64 = redis::cmd("SISMEMBER")
        .arg("set")
        .arg("c")
        .query(c)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("SISMEMBER")
        .arg("set")
        .arg("z")
        .query(c)
        .unwrap();
    assert_eq!(n, 0);
    // A set replaced by a string, a string replaced by a set (DEL then SADD in EXEC).
    assert_eq!(kind(c, "set2"), "string");
    assert_eq!(kind(c, "str2"), "set");
    assert_eq!(members(c, "str2"), ["m"]);
    let xlen: i64 = redis::cmd("XLEN").arg("nostream").query(c).unwrap();
    assert_eq!(xlen, 0);
    let mut keys: Vec<String> = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .arg("TYPE")
        .arg("set")
        .query::<(String, Vec<String>)>(c)
        .unwrap()
        .1;
    keys.sort();
    assert_eq!(keys, ["set", "str2"]);
}

#[test]
fn strings_and_sets_survive_kill_9_from_the_journal_and_from_snapshots() {
    for snapshot_every in [None, Some("5")] {
        let dir = tempfile::tempdir().unwrap();
        let owned;
        let args: Vec<&str> = match snapshot_every {
            Some(n) => {
                owned = format!("snapshot_every_events={n}");
                vec!["--set", &owned]
            }
            None => Vec::new(),
        };
        let mut server = start(dir.path(), &args);
        let mut c = server.redis();
        for v in ["v1", "v2", "v3"] {
            let ok: String = redis::cmd("SET").arg("str").arg(v).query(&mut c).unwrap();
            assert_eq!(ok, "OK");
        }
        // Only the newest value is left: SET deleted the others.
        let n: i64 = redis::cmd("SADD")
            .arg("set")
            .arg("a")
            .arg("b")
            .arg("a")
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 2, "a member given twice is added once");
        let n: i64 = redis::cmd("SADD")
            .arg("set")
            .arg("b")
            .arg("c")
            .arg("d")
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 2, "only the members not present are added");
        let n: i64 = redis::cmd("SADD")
            .arg("set")
            .arg("a")
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 0);
        // SET replaces a stream: XLEN 0 (no stream), TYPE string.
        for id in ["1-0", "2-0"] {
            redis::cmd("XADD")
                .arg("was-stream")
                .arg(id)
                .arg("f")
                .arg("v")
                .exec(&mut c)
                .unwrap();
        }
        let frames_before = frames(&server);
        redis::cmd("SET")
            .arg("was-stream")
            .arg("now a string")
            .exec(&mut c)
            .unwrap();
        assert_eq!(
            frames(&server) - frames_before,
            1.0,
            "SET's deletion and append are one frame"
        );
        let e = error(&mut c, redis::cmd("XLEN").arg("was-stream"));
        assert!(e.starts_with("WRONGTYPE"), "{e}");
        redis::cmd("SADD")
            .arg("set2")
            .arg("x")
            .exec(&mut c)
            .unwrap();
        redis::cmd("SET").arg("set2").arg("y").exec(&mut c).unwrap();
        redis::cmd("SET").arg("str2").arg("y").exec(&mut c).unwrap();
        let replies: Vec<Value> = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg("str2")
            .cmd("SADD")
            .arg("str2")
            .arg("m")
            .cmd("SADD")
            .arg("str2")
            .arg("m")
            .query(&mut c)
            .unwrap();
        assert_eq!(replies, [Value::Int(1), Value::Int(1), Value::Int(0)]);
        // WRONGTYPE both ways; nothing is changed.
        redis::cmd("XADD")
            .arg("s")
            .arg("*")
            .arg("f")
            .arg("v")
            .exec(&mut c)
            .unwrap();
        redis::cmd("RPUSH").arg("l").arg("e").exec(&mut c).unwrap();
        for (i, cmd) in [
            redis::cmd("XADD")
                .arg("str")
                .arg("*")
                .arg("f")
                .arg("v")
                .clone(),
            redis::cmd("XRANGE").arg("set").arg("-").arg("+").clone(),
            redis::cmd("XLEN").arg("str").clone(),
            redis::cmd("XDEL").arg("set").arg("1-0").clone(),
            redis::cmd("XTRIM").arg("str").arg("MAXLEN").arg(0).clone(),
            redis::cmd("XSETID").arg("set").arg("9-0").clone(),
            redis::cmd("XREAD")
                .arg("STREAMS")
                .arg("str")
                .arg("0")
                .clone(),
            redis::cmd("LPUSH").arg("str").arg("z").clone(),
            redis::cmd("LPUSH").arg("set").arg("z").clone(),
            redis::cmd("LLEN").arg("set").clone(),
            redis::cmd("LRANGE").arg("str").arg(0).arg(-1).clone(),
            redis::cmd("GET").arg("set").clone(),
            redis::cmd("GET").arg("l").clone(),
            redis::cmd("GET").arg("s").clone(),
            redis::cmd("SADD").arg("str").arg("z").clone(),
            redis::cmd("SADD").arg("s").arg("z").clone(),
            redis::cmd("SADD").arg("l").arg("z").clone(),
            redis::cmd("SMEMBERS").arg("str").clone(),
            redis::cmd("SCARD").arg("s").clone(),
            redis::cmd("SISMEMBER").arg("l").arg("z").clone(),
        ]
        .iter()
        .enumerate()
        {
            let e = error(&mut c, cmd);
            assert!(e.starts_with("WRONGTYPE"), "command {i}: {e}");
        }
        // SET's options are refused, not ignored.
        let e = error(&mut c, redis::cmd("SET").arg("str").arg("v9").arg("NX"));
        assert!(e.contains("not served"), "{e}");
        check_strings_and_sets(&mut c);
        if snapshot_every.is_some() {
            let started = std::time::Instant::now();
            while !server.has_snapshot(0) {
                assert!(started.elapsed().as_secs() < 20, "no snapshot");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        drop(c);
        server.kill_and_restart();
        let mut c = server.redis();
        check_strings_and_sets(&mut c);
        // After recovery SADD still adds only what is absent.
        let n: i64 = redis::cmd("SADD")
            .arg("set")
            .arg("d")
            .arg("e")
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 1);
        // A deleted string's name makes a stream again.
        redis::cmd("DEL").arg("str").exec(&mut c).unwrap();
        redis::cmd("XADD")
            .arg("str")
            .arg("*")
            .arg("f")
            .arg("v")
            .exec(&mut c)
            .unwrap();
        assert_eq!(kind(&mut c, "str"), "stream");
        assert_eq!(kind(&mut c, "was-stream"), "string");
    }
}

#[test]
fn native_appends_keep_strings_and_sets_apart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let native = server.client();
    redis::cmd("SET").arg("str").arg("v").exec(&mut c).unwrap();
    redis::cmd("SADD").arg("set").arg("a").exec(&mut c).unwrap();
    let any = evring::protocol::expected::ANY;
    for (stream, events) in [
        ("str", vec![common::ev("$sadd", b"x")]),
        ("str", vec![common::ev("other", b"x")]),
        ("set", vec![common::ev("$set", b"x")]),
        ("set", vec![common::ev("$lpush", b"x")]),
        (
            "new",
            vec![common::ev("$set", b"x"), common::ev("$sadd", b"y")],
        ),
        (
            "new",
            vec![common::ev("$sadd", b"x"), common::ev("other", b"y")],
        ),
    ] {
        let e = native
            .append(stream, any, events)
            .expect_err("an append mixing kinds is refused");
        assert!(
            e.to_string().contains("Redis") || e.to_string().contains("event stream"),
            "{e}"
        );
    }
    // A native APPEND of `$sadd` events makes a set; a repeated member counts once.
    native
        .append(
            "native-set",
            any,
            vec![common::ev("$sadd", b"m"), common::ev("$sadd", b"m")],
        )
        .unwrap();
    native
        .append(
            "native-str",
            any,
            vec![common::ev("$set", b"one"), common::ev("$set", b"two")],
        )
        .unwrap();
    let t: String = redis::cmd("TYPE").arg("native-set").query(&mut c).unwrap();
    assert_eq!(t, "set");
    let n: i64 = redis::cmd("SCARD").arg("native-set").query(&mut c).unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("SADD")
        .arg("native-set")
        .arg("m")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0);
    let v: String = redis::cmd("GET").arg("native-str").query(&mut c).unwrap();
    assert_eq!(v, "two", "the newest $set event is the value");
    assert_eq!(
        redis::cmd("GET")
            .arg("new")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None,
        "nothing was made of the refused appends"
    );
}

#[test]
fn pipelined_sadds_to_one_set_each_add_only_what_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = server.redis();
    let mut pipe = redis::pipe();
    for i in 0..300 {
        // Members 0..100, each given three times across the pipeline.
        pipe.cmd("SADD").arg("p").arg(i % 100).arg((i + 1) % 100);
    }
    let added: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(added.iter().sum::<i64>(), 100);
    let n: i64 = redis::cmd("SCARD").arg("p").query(&mut c).unwrap();
    assert_eq!(n, 100);
}

/// The Redis 5 DUMP of Redis's own suite (*Loading from legacy persistence*): `XADD x 1-0 …
/// 6-0`, `XDEL x 3-0`, groups g1 and g2, `XREADGROUP GROUP g1 c11 COUNT 4`, `XTRIM x MAXLEN = 2`.
const DUMP_REDIS_5: &[u8] = b"\x0F\x01\x10\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\xC3\x40\x4A\x40\x57\x16\x57\x00\x00\x00\x23\x00\x02\x01\x04\x01\x01\x01\x84\x64\x61\x74\x61\x05\x00\x01\x03\x01\x00\x20\x01\x03\x81\x61\x02\x04\x20\x0A\x00\x01\x40\x0A\x00\x62\x60\x0A\x00\x02\x40\x0A\x00\x63\x60\x0A\x40\x22\x01\x81\x64\x20\x0A\x40\x39\x20\x0A\x00\x65\x60\x0A\x00\x05\x40\x0A\x00\x66\x20\x0A\x00\xFF\x02\x06\x00\x02\x02\x67\x31\x05\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x3E\xF7\x83\x43\x7A\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x3E\xF7\x83\x43\x7A\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x3E\xF7\x83\x43\x7A\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x3E\xF7\x83\x43\x7A\x01\x00\x00\x01\x01\x03\x63\x31\x31\x3E\xF7\x83\x43\x7A\x01\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x02\x67\x32\x00\x00\x00\x00\x09\x00\x3D\x52\xEF\x68\x67\x52\x1D\xFA";

/// RESTORE makes the stream, its counters and its groups in one transaction, checked against
/// the key in the same turn: without REPLACE a key that exists is BUSYKEY and stays as it
/// was; with REPLACE it is replaced; the restored state survives kill -9.
#[test]
fn restore_makes_a_stream_with_its_groups_and_busykey_keeps_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let mut c = server.redis();
    let restore = |key: &str, replace: bool| {
        let mut cmd = redis::cmd("RESTORE");
        cmd.arg(key).arg(0).arg(DUMP_REDIS_5);
        if replace {
            cmd.arg("REPLACE");
        }
        cmd
    };
    restore("x", false).exec(&mut c).unwrap();
    redis::cmd("XADD")
        .arg("y")
        .arg("9-9")
        .arg("f")
        .arg("v")
        .exec(&mut c)
        .unwrap();
    assert!(error(&mut c, &restore("y", false)).contains("BUSYKEY"));
    let ylen: u64 = redis::cmd("XLEN").arg("y").query(&mut c).unwrap();
    assert_eq!(ylen, 1, "a refused RESTORE leaves the key as it was");
    restore("y", true).exec(&mut c).unwrap();
    let check = |c: &mut redis::Connection| {
        for key in ["x", "y"] {
            let s = info(c, key);
            assert_eq!(text(&s["length"]), "2", "{key}");
            assert_eq!(text(&s["entries-added"]), "2", "{key}");
            assert_eq!(text(&s["last-generated-id"]), "6-0", "{key}");
            let groups: Vec<std::collections::HashMap<String, Value>> =
                redis::cmd("XINFO").arg("GROUPS").arg(key).query(c).unwrap();
            assert_eq!(groups.len(), 2, "{key}");
            assert_eq!(text(&groups[0]["name"]), "g1");
            assert_eq!(text(&groups[0]["pending"]), "4");
            assert_eq!(text(&groups[0]["entries-read"]), "1");
            assert_eq!(text(&groups[1]["lag"]), "2");
        }
    };
    check(&mut c);
    server.kill_and_restart();
    let mut c = server.redis();
    check(&mut c);
}
