//! Consumer groups are durable, on the real evringd with the `redis` crate: producers XADD
//! to a few streams (on both partitions) while consumers of one group XREADGROUP `>` and
//! XACK part of what they got, and the server is stopped in the middle — kill -9 (recovery
//! from the journal), kill -9 once snapshots were taken during the load (recovery from a
//! snapshot and the journal after it), and SIGTERM (a clean stop, recovery from the
//! shutdown snapshot). Only replies that arrived count. After the restart:
//!
//! - every entry whose XACK reply arrived is not pending;
//! - every entry delivered by an XREADGROUP whose reply arrived, with no XACK sent for it,
//!   is pending with the consumer it was delivered to, delivered once;
//! - every XADD whose reply arrived is in the stream;
//! - the group's last-delivered-id is at least the largest ID delivered;
//! - a new XREADGROUP `>` delivers no entry delivered before.
//!
//! And XGROUP CREATE … MKSTREAM of an empty stream and XGROUP DESTROY survive restarts.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use redis::Value;

const PARTITIONS: u32 = 2;
const GROUP: &str = "g";

fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--partitions",
        "2",
        "--set",
        "shards=2",
        "--set",
        "pin_cpus=false",
    ];
    args.extend_from_slice(extra);
    Server::start(&dir.join("data"), &args)
}

/// A stream ID as (ms, seq).
type Id = (u64, u64);

fn id(s: &str) -> Id {
    let (ms, seq) = s.split_once('-').unwrap_or_else(|| panic!("an ID: {s}"));
    (ms.parse().unwrap(), seq.parse().unwrap())
}

fn show(i: Id) -> String {
    format!("{}-{}", i.0, i.1)
}

/// Four streams, two on each partition.
fn streams() -> Vec<String> {
    let mut names = Vec::new();
    for p in 0..PARTITIONS {
        names.extend(
            (0..)
                .map(|i| format!("s{i}"))
                .filter(|n| evring::protocol::partition_of(n, PARTITIONS) == p)
                .take(2),
        );
    }
    names
}

/// What the clients saw: only replies that arrived.
#[derive(Default)]
struct Log {
    /// XADD replies: stream → IDs.
    added: HashMap<String, Vec<Id>>,
    /// XREADGROUP replies: (stream, ID) → consumer.
    delivered: HashMap<(String, Id), String>,
    /// XACK sent (its reply may not have arrived).
    ack_sent: HashSet<(String, Id)>,
    /// XACK replies.
    acked: HashSet<(String, Id)>,
    /// XREADGROUP replies that delivered something.
    reads: usize,
}

type Delivery = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;

/// Runs the load (producers and consumers) until `stop` returns, which stops the server
/// while the load runs; returns what the clients saw.
fn load(server: &mut Server, stop: impl FnOnce(&mut Server)) -> Log {
    let names = streams();
    let mut c = server.redis();
    for s in &names {
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(s)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .exec(&mut c)
            .unwrap();
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in 0..3u64 {
        let mut c = server.redis();
        let (log, names, done) = (log.clone(), names.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            let mut k = 0u64;
            while !done.load(Ordering::Relaxed) {
                let s = &names[((p + k) % names.len() as u64) as usize];
                let r: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg(s)
                    .arg("*")
                    .arg("p")
                    .arg(p)
                    .arg("n")
                    .arg(k)
                    .query(&mut c);
                match r {
                    Ok(i) => log
                        .lock()
                        .unwrap()
                        .added
                        .entry(s.clone())
                        .or_default()
                        .push(id(&i)),
                    Err(_) => return,
                }
                k += 1;
            }
        }));
    }
    for n in 0..3 {
        let mut c = server.redis();
        let (log, names, done) = (log.clone(), names.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            let consumer = format!("c{n}");
            while !done.load(Ordering::Relaxed) {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(1 + n * 3)
                    .arg("STREAMS")
                    .arg(&names);
                for _ in &names {
                    cmd.arg(">");
                }
                let got: Delivery = match cmd.query(&mut c) {
                    Ok(got) => got,
                    Err(_) => return,
                };
                let Some(got) = got else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let mut to_ack: Vec<(String, Vec<Id>)> = Vec::new();
                {
                    let mut log = log.lock().unwrap();
                    log.reads += 1;
                    for (s, entries) in got {
                        let mut ack = Vec::new();
                        for (i, fields) in entries {
                            let i = id(&i);
                            let previous = log.delivered.insert((s.clone(), i), consumer.clone());
                            assert_eq!(previous, None, "{s} {} delivered twice by >", show(i));
                            // Acknowledge the entries with an even `n`, leave the rest pending.
                            let k: u64 = fields[3].parse().unwrap();
                            if k % 2 == 0 {
                                ack.push(i);
                            }
                        }
                        if !ack.is_empty() {
                            for i in &ack {
                                log.ack_sent.insert((s.clone(), *i));
                            }
                            to_ack.push((s, ack));
                        }
                    }
                }
                for (s, ids) in to_ack {
                    let r: redis::RedisResult<usize> = redis::cmd("XACK")
                        .arg(&s)
                        .arg(GROUP)
                        .arg(ids.iter().map(|i| show(*i)).collect::<Vec<_>>())
                        .query(&mut c);
                    match r {
                        Ok(n) => {
                            assert_eq!(n, ids.len(), "every ID was pending with {consumer}");
                            let mut log = log.lock().unwrap();
                            for i in ids {
                                log.acked.insert((s.clone(), i));
                            }
                        }
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    stop(server);
    done.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap()
}

/// Every entry of `s`, paged by COUNT.
fn xrange_all(c: &mut redis::Connection, s: &str) -> Vec<Id> {
    let mut out = Vec::new();
    let mut from = "-".to_string();
    loop {
        let page: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(s)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query(c)
            .unwrap();
        let n = page.len();
        out.extend(page.into_iter().map(|(i, _)| id(&i)));
        match out.last() {
            Some(last) if n == 1000 => from = format!("({}", show(*last)),
            _ => return out,
        }
    }
}

/// The group's pending entries (XPENDING's extended form over the whole range, paged):
/// ID → (consumer, deliveries).
fn pending_all(c: &mut redis::Connection, s: &str, group: &str) -> BTreeMap<Id, (String, u64)> {
    let mut out = BTreeMap::new();
    let mut from = "-".to_string();
    loop {
        let page: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(s)
            .arg(group)
            .arg(&from)
            .arg("+")
            .arg(1000)
            .query(c)
            .unwrap();
        let n = page.len();
        let mut last = None;
        for (i, consumer, _idle, count) in page {
            let i = id(&i);
            out.insert(i, (consumer, count));
            last = Some(i);
        }
        match last {
            Some(last) if n == 1000 => from = format!("({}", show(last)),
            _ => return out,
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Nil => "nil".into(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn groups(c: &mut redis::Connection, s: &str) -> Vec<HashMap<String, Value>> {
    redis::cmd("XINFO").arg("GROUPS").arg(s).query(c).unwrap()
}

/// Checks the restarted server against what the clients saw (module docs).
fn check(server: &Server, log: &Log, how: &str) {
    assert!(
        log.reads > 20 && log.acked.len() > 20,
        "{how}: too little load before the stop ({} reads, {} acknowledged)",
        log.reads,
        log.acked.len()
    );
    let mut c = server.redis();
    let (mut pending_checked, mut acked_checked) = (0, 0);
    for s in streams() {
        let all: HashSet<Id> = xrange_all(&mut c, &s).into_iter().collect();
        for i in log.added.get(&s).into_iter().flatten() {
            assert!(all.contains(i), "{how}: {s} {} lost", show(*i));
        }
        let pending = pending_all(&mut c, &s, GROUP);
        let mut max_delivered = (0, 0);
        for ((stream, i), consumer) in &log.delivered {
            if *stream != s {
                continue;
            }
            max_delivered = max_delivered.max(*i);
            let key = (s.clone(), *i);
            if log.acked.contains(&key) {
                assert!(
                    !pending.contains_key(i),
                    "{how}: {s} {} acknowledged, pending after the restart",
                    show(*i)
                );
                acked_checked += 1;
            } else if !log.ack_sent.contains(&key) {
                assert_eq!(
                    pending.get(i),
                    Some(&(consumer.clone(), 1)),
                    "{how}: {s} {} delivered to {consumer}, not acknowledged",
                    show(*i)
                );
                pending_checked += 1;
            }
        }
        for (i, (consumer, count)) in &pending {
            assert_eq!(*count, 1, "{how}: {s} {} delivered once", show(*i));
            assert!(
                all.contains(i),
                "{how}: {s} {} pending, not in the stream",
                show(*i)
            );
            if let Some(to) = log.delivered.get(&(s.clone(), *i)) {
                assert_eq!(to, consumer, "{how}: {s} {}'s consumer", show(*i));
            }
        }
        let info = groups(&mut c, &s);
        assert_eq!(info.len(), 1, "{how}: {s}: one group");
        assert_eq!(text(&info[0]["name"]), GROUP);
        assert_eq!(text(&info[0]["pending"]), pending.len().to_string());
        let last = id(&text(&info[0]["last-delivered-id"]));
        assert!(
            last >= max_delivered,
            "{how}: {s}: last-delivered-id {} below {} delivered",
            show(last),
            show(max_delivered)
        );
        // A new reader of the group gets only entries never delivered.
        let got: Delivery = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("fresh")
            .arg("COUNT")
            .arg(100_000)
            .arg("STREAMS")
            .arg(&s)
            .arg(">")
            .query(&mut c)
            .unwrap();
        for (_, entries) in got.into_iter().flatten() {
            for (i, _) in entries {
                let i = id(&i);
                assert!(
                    i > max_delivered && i > last,
                    "{how}: {s} {} delivered again by >",
                    show(i)
                );
            }
        }
    }
    assert!(pending_checked > 10 && acked_checked > 10, "{how}");
    eprintln!(
        "{how}: {} added, {} delivered, {acked_checked} acknowledged and {pending_checked} \
         pending checked",
        log.added.values().map(Vec::len).sum::<usize>(),
        log.delivered.len()
    );
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn group_state_survives_kill_9_under_load_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    // No snapshot in the run: recovery replays the journal from its start.
    let mut server = start(
        dir.path(),
        &[
            "--set",
            "snapshot_every_secs=0",
            "--set",
            "snapshot_every_events=0",
        ],
    );
    let log = load(&mut server, |s| {
        std::thread::sleep(Duration::from_millis(1500));
        s.kill();
    });
    assert!(!server.has_snapshot(0) && !server.has_snapshot(1));
    server.restart();
    check(&server, &log, "kill -9, journal");
}

#[test]
fn group_state_survives_kill_9_under_load_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &["--set", "snapshot_every_events=300"]);
    let log = load(&mut server, |s| {
        wait_for("snapshots during the load", || {
            s.has_snapshot(0) && s.has_snapshot(1)
        });
        // Group changes after the snapshot come from the journal.
        std::thread::sleep(Duration::from_millis(300));
        s.kill();
    });
    server.restart();
    check(&server, &log, "kill -9, snapshot");
}

#[test]
fn group_state_survives_a_clean_stop_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let log = load(&mut server, |s| {
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(s.terminate(), Some(0), "a clean stop");
    });
    server.restart();
    check(&server, &log, "SIGTERM");
}

fn group_names(c: &mut redis::Connection, s: &str) -> Vec<String> {
    groups(c, s).iter().map(|g| text(&g["name"])).collect()
}

fn key_type(c: &mut redis::Connection, s: &str) -> String {
    redis::cmd("TYPE").arg(s).query(c).unwrap()
}

#[test]
fn mkstream_and_destroy_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let mut c = server.redis();
    let ok = |c: &mut redis::Connection, cmd: &mut redis::Cmd| cmd.exec(c).unwrap();
    // An empty stream made by its group.
    ok(
        &mut c,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("empty")
            .arg("g1")
            .arg("$")
            .arg("MKSTREAM"),
    );
    // An empty stream whose only group is destroyed: the stream stays, as in Redis.
    ok(
        &mut c,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("bare")
            .arg("g")
            .arg("$")
            .arg("MKSTREAM"),
    );
    // A stream with entries, two groups, one destroyed after it had pending entries.
    for g in ["ga", "gb"] {
        ok(
            &mut c,
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg("full")
                .arg(g)
                .arg("0")
                .arg("MKSTREAM"),
        );
    }
    for _ in 0..5 {
        ok(
            &mut c,
            redis::cmd("XADD").arg("full").arg("*").arg("f").arg("v"),
        );
    }
    let _: Delivery = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("ga")
        .arg("alice")
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg("full")
        .arg(">")
        .query(&mut c)
        .unwrap();
    let n: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg("full")
        .arg("ga")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg("bare")
        .arg("g")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let check = |c: &mut redis::Connection, how: &str| {
        assert_eq!(key_type(c, "empty"), "stream", "{how}");
        assert_eq!(key_type(c, "bare"), "stream", "{how}");
        let info = groups(c, "empty");
        assert_eq!(info.len(), 1, "{how}");
        assert_eq!(text(&info[0]["name"]), "g1", "{how}");
        assert_eq!(text(&info[0]["last-delivered-id"]), "0-0", "{how}");
        assert_eq!(text(&info[0]["pending"]), "0", "{how}");
        assert!(group_names(c, "bare").is_empty(), "{how}");
        assert_eq!(group_names(c, "full"), ["gb"], "{how}");
        let xlen: i64 = redis::cmd("XLEN").arg("empty").query(c).unwrap();
        assert_eq!(xlen, 0, "{how}");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
        let keys: HashSet<String> = keys.into_iter().collect();
        assert_eq!(
            keys,
            ["empty", "bare", "full"].map(String::from).into(),
            "{how}"
        );
    };
    check(&mut c, "before the restarts");
    drop(c);
    // From the journal; from the shutdown snapshot; from that snapshot after more changes
    // in the journal.
    server.kill_and_restart();
    check(&mut server.redis(), "kill -9");
    assert_eq!(server.terminate(), Some(0));
    assert!(server.has_snapshot(0) || server.has_snapshot(1));
    server.restart();
    check(&mut server.redis(), "SIGTERM");
    let mut c = server.redis();
    ok(
        &mut c,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("later")
            .arg("g")
            .arg("$")
            .arg("MKSTREAM"),
    );
    let n: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg("empty")
        .arg("g1")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    drop(c);
    server.kill_and_restart();
    let mut c = server.redis();
    assert_eq!(key_type(&mut c, "later"), "stream");
    assert_eq!(group_names(&mut c, "later"), ["g"]);
    assert_eq!(key_type(&mut c, "empty"), "stream");
    assert!(group_names(&mut c, "empty").is_empty());
    assert_eq!(group_names(&mut c, "full"), ["gb"]);
}

/// XCLAIM answers in the order of its IDs, each entry with its own fields — also when the
/// IDs are given newest first and their entries have left the ring for the journal (whose
/// scan runs oldest first), and when the order is mixed.
#[test]
fn claimed_entries_keep_their_own_fields_in_any_order_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--set", "ring_capacity_events=16"]);
    let mut c = server.redis();
    // A shard that died on the request never answers: fail instead of waiting forever.
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut ids = Vec::new();
    for n in 0..100 {
        let added: String = redis::cmd("XADD")
            .arg("claims")
            .arg("*")
            .arg("n")
            .arg(n)
            .query(&mut c)
            .unwrap();
        ids.push(added);
    }
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("claims")
        .arg(GROUP)
        .arg("0")
        .exec(&mut c)
        .unwrap();
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("a")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg("claims")
        .arg(">")
        .query(&mut c)
        .unwrap();
    // Newest first, oldest first, mixed; the first ones are long out of the 16-event ring.
    for order in [vec![5, 3, 1, 0], vec![0, 1, 2, 3], vec![2, 7, 4, 90, 1]] {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg("claims").arg(GROUP).arg("b").arg(0);
        for &n in &order {
            cmd.arg(&ids[n]);
        }
        let Value::Array(entries) = cmd.query::<Value>(&mut c).unwrap() else {
            panic!("XCLAIM answers an array");
        };
        let got: Vec<(String, String)> = entries
            .iter()
            .map(|e| match e {
                Value::Array(pair) => match &pair[1] {
                    Value::Array(fields) => (text(&pair[0]), text(&fields[1])),
                    other => panic!("fields: {other:?}"),
                },
                other => panic!("an entry: {other:?}"),
            })
            .collect();
        let want: Vec<(String, String)> = order
            .iter()
            .map(|&n| (ids[n].clone(), n.to_string()))
            .collect();
        assert_eq!(got, want, "XCLAIM of entries {order:?}");
    }
}
