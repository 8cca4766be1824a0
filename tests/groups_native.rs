//! Consumer groups over the native protocol (GROUP_* requests 0x40–0x49), on the real
//! evringd: competing consumers of one group get distinct entries; ACK removes entries from
//! the pending list; PENDING names each entry's consumer and delivery count; CLAIM and
//! AUTOCLAIM move entries; history reads flag entries deleted from the stream; a group made
//! through one protocol (native or RESP) is used through the other; the group state (pending
//! list, last-delivered ID, consumers) is the same after kill -9; errors carry their codes.

mod common;

use std::collections::BTreeSet;

use common::{ev, Server};
use evring::client::{
    BlockingClient, ClaimAt, EntryEvent, GroupClaim, GroupEntry, GroupStart, PendingRange,
    PendingReply, StreamId, TrimBy,
};
use evring::protocol::{code, expected};

fn start(dir: &std::path::Path) -> Server {
    Server::start(&dir.join("data"), &["--partitions", "4"])
}

/// Appends `n` events to `stream`, data "0", "1", ….
fn append_n(c: &BlockingClient, stream: &str, n: u64) {
    for i in 0..n {
        c.append(
            stream,
            expected::ANY,
            vec![ev("T", i.to_string().as_bytes())],
        )
        .unwrap();
    }
}

fn ids(entries: &[GroupEntry]) -> Vec<StreamId> {
    entries.iter().map(|e| e.id).collect()
}

fn data(e: &GroupEntry) -> String {
    match &e.event {
        EntryEvent::Event(r) => String::from_utf8(r.event.data.clone()).unwrap(),
        other => panic!("{:?}: expected an event, got {other:?}", e.id),
    }
}

fn code_of<T: std::fmt::Debug>(r: Result<T, evring::client::ClientError>) -> (u16, String) {
    let e = r.expect_err("the request fails");
    (e.code().expect("a server error"), e.to_string())
}

/// The pending entries of `group` as (ID, consumer, deliveries), without idle times.
fn pending_list(c: &BlockingClient, stream: &str, group: &str) -> Vec<(StreamId, String, u64)> {
    let range = PendingRange {
        min_idle_ms: 0,
        start: StreamId::ZERO,
        end: StreamId::MAX,
        count: 1000,
        consumer: None,
    };
    match c.group_pending(stream, group, Some(range)).unwrap() {
        PendingReply::Entries(list) => list
            .into_iter()
            .map(|e| (e.id, String::from_utf8(e.consumer).unwrap(), e.deliveries))
            .collect(),
        other => panic!("expected entries, got {other:?}"),
    }
}

fn claim(group: &str, consumer: &str, ids: Vec<StreamId>) -> GroupClaim {
    GroupClaim {
        group: group.into(),
        consumer: consumer.into(),
        min_idle_ms: 0,
        ids,
        at: ClaimAt::Now,
        retry_count: None,
        force: false,
        just_id: false,
        last_id: None,
    }
}

#[test]
fn competing_consumers_ack_pending_claim_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = server.client();
    append_n(&c, "orders", 6);
    c.group_create("orders", "g", GroupStart::Id(StreamId::ZERO), false)
        .unwrap();

    // Two consumers of one group: each entry goes to exactly one of them, in order.
    let a = c.group_read("orders", "g", "a", None, 3, false).unwrap();
    let b = c.group_read("orders", "g", "b", None, 10, false).unwrap();
    assert_eq!(a.iter().map(data).collect::<Vec<_>>(), ["0", "1", "2"]);
    assert_eq!(b.iter().map(data).collect::<Vec<_>>(), ["3", "4", "5"]);
    assert!(a[0].id < a[1].id && a[2].id < b[0].id, "IDs grow");
    match &a[0].event {
        EntryEvent::Event(r) => {
            assert_eq!(r.stream, "orders");
            assert_eq!(r.stream_version, 0);
        }
        other => panic!("{other:?}"),
    }
    let all: BTreeSet<StreamId> = ids(&a).into_iter().chain(ids(&b)).collect();
    assert_eq!(all.len(), 6, "distinct entries");
    assert!(c
        .group_read("orders", "g", "a", None, 10, false)
        .unwrap()
        .is_empty());

    // The summary and the list name each consumer, once delivered each.
    match c.group_pending("orders", "g", None).unwrap() {
        PendingReply::Summary {
            count,
            range,
            consumers,
        } => {
            assert_eq!(count, 6);
            assert_eq!(range, Some((a[0].id, b[2].id)));
            assert_eq!(consumers, [(b"a".to_vec(), 3), (b"b".to_vec(), 3)]);
        }
        other => panic!("{other:?}"),
    }
    let want: Vec<_> = ids(&a)
        .into_iter()
        .map(|id| (id, "a".to_string(), 1))
        .chain(ids(&b).into_iter().map(|id| (id, "b".to_string(), 1)))
        .collect();
    assert_eq!(pending_list(&c, "orders", "g"), want);

    // ACK removes from the pending list; acknowledging again counts nothing.
    assert_eq!(c.group_ack("orders", "g", &ids(&a)).unwrap(), 3);
    assert_eq!(c.group_ack("orders", "g", &ids(&a)).unwrap(), 0);
    assert_eq!(pending_list(&c, "orders", "g"), want[3..]);

    // CLAIM moves b's first entry to a, one more delivery; a's history shows it.
    let claimed = c
        .group_claim("orders", claim("g", "a", vec![b[0].id]))
        .unwrap();
    assert_eq!(ids(&claimed), [b[0].id]);
    assert_eq!(data(&claimed[0]), "3");
    let list = pending_list(&c, "orders", "g");
    assert_eq!(list[0], (b[0].id, "a".to_string(), 2));
    let history = c
        .group_read("orders", "g", "a", Some(StreamId::ZERO), 10, false)
        .unwrap();
    assert_eq!(ids(&history), [b[0].id]);

    // A claim that asks for more idle time than the entry has claims nothing.
    let mut idle = claim("g", "b", vec![b[0].id]);
    idle.min_idle_ms = 3_600_000;
    assert!(c.group_claim("orders", idle).unwrap().is_empty());

    // AUTOCLAIM gives b's remaining entries to a and says the scan is done.
    let auto = c
        .group_autoclaim("orders", "g", "a", 0, StreamId::ZERO, 10, true)
        .unwrap();
    assert_eq!(auto.next, StreamId::ZERO);
    assert_eq!(ids(&auto.entries), ids(&b));
    assert!(auto.entries.iter().all(|e| e.event == EntryEvent::IdOnly));
    assert!(pending_list(&c, "orders", "g").iter().all(|p| p.1 == "a"));

    // INFO: lag, entries read, last delivered, pending per group and consumer.
    let info = c.group_info("orders").unwrap();
    assert_eq!(info.len(), 1);
    let g = &info[0];
    assert_eq!(g.name, b"g");
    assert_eq!(g.last_delivered, b[2].id);
    assert_eq!(g.entries_read, Some(6));
    assert_eq!(g.lag, Some(0));
    assert_eq!(g.pending, 3);
    let consumers: Vec<_> = g
        .consumers
        .iter()
        .map(|c| (c.name.clone(), c.pending))
        .collect();
    assert_eq!(consumers, [(b"a".to_vec(), 3), (b"b".to_vec(), 0)]);

    // Entries deleted from the stream are flagged in a history read.
    c.trim("orders", TrimBy::KeepLast(0)).unwrap();
    let history = c
        .group_read("orders", "g", "a", Some(StreamId::ZERO), 10, false)
        .unwrap();
    assert_eq!(ids(&history), ids(&b));
    assert!(history.iter().all(|e| e.event == EntryEvent::Deleted));

    // Consumers: created once; deleting one drops its pending entries.
    assert!(c.group_create_consumer("orders", "g", "c").unwrap());
    assert!(!c.group_create_consumer("orders", "g", "c").unwrap());
    assert_eq!(c.group_delete_consumer("orders", "g", "a").unwrap(), 3);

    // Errors, each with its code and what to do.
    let (code, msg) = code_of(c.group_create("orders", "g", GroupStart::Last, false));
    assert_eq!(code, code::GROUP_EXISTS, "{msg}");
    assert!(msg.contains("GROUP_SETID"), "{msg}");
    let (code, msg) = code_of(c.group_read("orders", "nope", "a", None, 1, false));
    assert_eq!(code, code::NO_GROUP, "{msg}");
    assert!(msg.contains("GROUP_CREATE"), "{msg}");
    let (code, msg) = code_of(c.group_create("never", "g", GroupStart::Last, false));
    assert_eq!(code, code::STREAM_NOT_FOUND, "{msg}");
    assert!(msg.contains("mkstream"), "{msg}");
    assert_eq!(
        code_of(c.group_pending("never", "g", None)).0,
        code::NO_GROUP
    );
    assert_eq!(code_of(c.group_info("never")).0, code::STREAM_NOT_FOUND);
    let (code, msg) = code_of(c.group_autoclaim("orders", "g", "a", 0, StreamId::ZERO, 0, false));
    assert_eq!(code, code::INVALID_ARGUMENT, "{msg}");

    // mkstream makes the stream; $ starts after its last entry; destroy answers whether.
    c.group_create("fresh", "g", GroupStart::Last, true)
        .unwrap();
    assert!(c
        .group_read("fresh", "g", "a", None, 10, false)
        .unwrap()
        .is_empty());
    append_n(&c, "fresh", 2);
    assert_eq!(
        c.group_read("fresh", "g", "a", None, 10, false)
            .unwrap()
            .len(),
        2
    );
    c.group_setid("fresh", "g", GroupStart::Id(StreamId::ZERO))
        .unwrap();
    assert_eq!(
        c.group_read("fresh", "g", "b", None, 10, true)
            .unwrap()
            .len(),
        2
    );
    assert!(c.group_destroy("fresh", "g").unwrap());
    assert!(!c.group_destroy("fresh", "g").unwrap());
}

/// One RESP reply's entry IDs (XREADGROUP: `[[key, [[id, fields], …]]]`).
fn resp_ids(v: &redis::Value) -> Vec<String> {
    let redis::Value::Array(keys) = v else {
        panic!("expected an array: {v:?}")
    };
    let redis::Value::Array(kv) = &keys[0] else {
        panic!("{v:?}")
    };
    let redis::Value::Array(entries) = &kv[1] else {
        panic!("{v:?}")
    };
    entries
        .iter()
        .map(|e| match e {
            redis::Value::Array(pair) => match &pair[0] {
                redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_group_made_through_one_protocol_is_used_through_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = server.client();
    let mut r = server.redis();
    append_n(&c, "s", 4);

    // Native GROUP_CREATE, then XREADGROUP and XACK over RESP.
    c.group_create("s", "native", GroupStart::Id(StreamId::ZERO), false)
        .unwrap();
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("native")
        .arg("r1")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg("s")
        .arg(">")
        .query(&mut r)
        .unwrap();
    let read = resp_ids(&v);
    assert_eq!(read.len(), 2);
    // The native client sees what RESP delivered as pending for r1, and reads the rest.
    let list = pending_list(&c, "s", "native");
    assert_eq!(
        list.iter()
            .map(|p| (p.0.to_string(), p.1.as_str()))
            .collect::<Vec<_>>(),
        [(read[0].clone(), "r1"), (read[1].clone(), "r1")]
    );
    let rest = c.group_read("s", "native", "n1", None, 10, false).unwrap();
    assert_eq!(rest.iter().map(data).collect::<Vec<_>>(), ["2", "3"]);
    let acked: i64 = redis::cmd("XACK")
        .arg("s")
        .arg("native")
        .arg(rest[0].id.to_string())
        .query(&mut r)
        .unwrap();
    assert_eq!(acked, 1);
    assert_eq!(pending_list(&c, "s", "native").len(), 3);

    // XGROUP CREATE over RESP, then native GROUP_READ and GROUP_ACK; XPENDING agrees.
    let ok: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("s")
        .arg("resp")
        .arg("0")
        .query(&mut r)
        .unwrap();
    assert_eq!(ok, "OK");
    let got = c.group_read("s", "resp", "n", None, 10, false).unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(c.group_ack("s", "resp", &ids(&got[..3])).unwrap(), 3);
    let summary: (i64, String, String, Vec<(String, String)>) = redis::cmd("XPENDING")
        .arg("s")
        .arg("resp")
        .query(&mut r)
        .unwrap();
    assert_eq!(summary.0, 1);
    assert_eq!(summary.1, got[3].id.to_string());
    assert_eq!(summary.3, [("n".to_string(), "1".to_string())]);
    let names: Vec<Vec<u8>> = c
        .group_info("s")
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, [b"native".to_vec(), b"resp".to_vec()]);
}

#[test]
fn group_state_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let c = server.client();
    append_n(&c, "k", 10);
    c.group_create("k", "g", GroupStart::Id(StreamId::ZERO), false)
        .unwrap();
    let a = c.group_read("k", "g", "a", None, 4, false).unwrap();
    let b = c.group_read("k", "g", "b", None, 3, false).unwrap();
    c.group_ack("k", "g", &[a[1].id, b[0].id]).unwrap();
    c.group_claim("k", claim("g", "b", vec![a[0].id])).unwrap();
    let before = pending_list(&c, "k", "g");
    let info_before = c.group_info("k").unwrap();
    assert_eq!(before.len(), 5);
    assert_eq!(info_before[0].last_delivered, b[2].id);
    drop(c);

    server.kill_and_restart();
    let c = server.client();
    assert_eq!(pending_list(&c, "k", "g"), before);
    let info = c.group_info("k").unwrap();
    assert_eq!(info[0].last_delivered, b[2].id);
    assert_eq!(info[0].entries_read, info_before[0].entries_read);
    assert_eq!(info[0].lag, Some(3));
    let pend = |g: &evring::client::ConsumerGroupInfo| {
        g.consumers
            .iter()
            .map(|c| (c.name.clone(), c.pending))
            .collect::<Vec<_>>()
    };
    assert_eq!(pend(&info[0]), pend(&info_before[0]));
    // The group goes on where it was: the next read gets the three not yet delivered.
    let next = c.group_read("k", "g", "a", None, 10, false).unwrap();
    assert_eq!(next.iter().map(data).collect::<Vec<_>>(), ["7", "8", "9"]);
}

/// A GROUP_READ with a block waits for the next entry (appended by another client while it
/// waits) and gets it pending; one that nothing wakes answers no entries once its time
/// passes; one whose group is destroyed meanwhile gets error 13, as XREADGROUP's BLOCK.
#[test]
fn a_blocking_group_read_waits_for_the_next_entry() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = server.client();
    c.group_create("jobs", "g", GroupStart::Last, true).unwrap();
    let block = std::time::Duration::from_secs(30);
    let waiter = {
        let w = server.client();
        std::thread::spawn(move || w.group_read_blocking("jobs", "g", "w", None, 5, false, block))
    };
    // The append comes once the read waits (the group has delivered nothing yet either way:
    // an append before the wait would be delivered at once, which the test would also see).
    std::thread::sleep(std::time::Duration::from_millis(300));
    append_n(&c, "jobs", 1);
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(got.iter().map(data).collect::<Vec<_>>(), ["0"]);
    assert_eq!(
        pending_list(&c, "jobs", "g").len(),
        1,
        "delivered, so pending"
    );

    // Nothing new: the time passes, no entries.
    let short = std::time::Duration::from_millis(200);
    let began = std::time::Instant::now();
    let none = c
        .group_read_blocking("jobs", "g", "w", None, 5, false, short)
        .unwrap();
    assert!(none.is_empty());
    // It waited its time out (an answer at once would be a read that did not block).
    assert!(
        began.elapsed() >= short,
        "answered after {:?}",
        began.elapsed()
    );

    // The group destroyed while a read waits: error 13.
    let waiter = {
        let w = server.client();
        std::thread::spawn(move || w.group_read_blocking("jobs", "g", "w", None, 5, false, block))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(c.group_destroy("jobs", "g").unwrap());
    let (code, text) = code_of(waiter.join().unwrap());
    assert_eq!(code, 13, "{text}");
}
