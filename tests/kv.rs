//! The built-in key-value model through EXECUTE/QUERY against the real evringd: versions,
//! compare-and-set conflicts (error 10 with the current version), list by prefix over
//! every partition, time travel with `as_of`, bad requests, and everything surviving a
//! SIGKILL; plus the `evring kv` CLI.

mod common;

use common::Server;
use evring::protocol::code;
use serde_json::{json, Value};

fn exec(
    c: &evring::client::BlockingClient,
    v: Value,
) -> Result<Value, evring::client::ClientError> {
    c.execute("kv", v.to_string().into_bytes())
        .map(|b| serde_json::from_slice(&b).unwrap())
}

fn query(c: &evring::client::BlockingClient, v: Value) -> Value {
    serde_json::from_slice(&c.query("kv", v.to_string().into_bytes()).unwrap()).unwrap()
}

#[test]
fn keys_have_versions_cas_conflicts_lists_span_partitions_and_time_travel_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &["--partitions", "3"]);
    let c = server.client();
    let r = exec(&c, json!({"op":"set","key":"user:1","value":"ann"})).unwrap();
    assert_eq!(r["version"], 1);
    let first_lsn = r["lsn"].as_u64().unwrap();
    let r = exec(&c, json!({"op":"set","key":"user:1","value":"anna"})).unwrap();
    assert_eq!(r["version"], 2);
    // CAS with a stale version: error 10 carrying the current version; nothing changes.
    let e = exec(
        &c,
        json!({"op":"cas","key":"user:1","expected_version":1,"value":"x"}),
    )
    .unwrap_err();
    assert_eq!(e.code(), Some(10), "{e}");
    assert!(e.to_string().contains("version 2"), "{e}");
    let r = exec(
        &c,
        json!({"op":"cas","key":"user:1","expected_version":2,"value":"annie"}),
    )
    .unwrap();
    assert_eq!(r["version"], 3);
    for i in 2..40 {
        exec(
            &c,
            json!({"op":"set","key":format!("user:{i}"),"value":format!("u{i}")}),
        )
        .unwrap();
    }
    exec(&c, json!({"op":"set","key":"other","value":"o"})).unwrap();
    let got = query(&c, json!({"op":"get","key":"user:1"}));
    assert_eq!(got, json!({"key":"user:1","value":"annie","version":3}));
    // Time travel: right after the first set, and before it.
    let then = query(
        &c,
        json!({"op":"get","key":"user:1","as_of": first_lsn + 1}),
    );
    assert_eq!(then["value"], "ann");
    assert_eq!(
        query(&c, json!({"op":"get","key":"user:1","as_of": first_lsn})),
        Value::Null
    );
    // List by prefix: keys from all three partitions, in order.
    let list = query(&c, json!({"op":"list","prefix":"user:","limit":100}));
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 39);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        query(&c, json!({"op":"list","prefix":"user:","limit":5}))
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // Delete.
    assert_eq!(
        exec(&c, json!({"op":"delete","key":"other"})).unwrap()["deleted"],
        true
    );
    assert_eq!(query(&c, json!({"op":"get","key":"other"})), Value::Null);
    // Bad requests: an error reply, and the connection goes on.
    let e = c.execute("kv", b"{\"op\":\"put\"}".to_vec()).unwrap_err();
    assert_eq!(e.code(), Some(12), "{e}");
    let e = c.execute("nope", b"{}".to_vec()).unwrap_err();
    assert_eq!(e.code(), Some(12), "{e}");
    c.ping().unwrap();
    // Everything survives a SIGKILL.
    let before = query(&c, json!({"op":"list","prefix":"","limit":1000}));
    drop(c);
    server.kill_and_restart();
    let c = server.client();
    assert_eq!(
        query(&c, json!({"op":"list","prefix":"","limit":1000})),
        before
    );
    let r = exec(&c, json!({"op":"set","key":"user:1","value":"later"})).unwrap();
    assert_eq!(r["version"], 4);
}

#[test]
fn the_cli_sets_gets_and_travels_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_evring"))
            .args(["--addr", &server.addr, "--json"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let r = cli(&["kv", "set", "color", "red"]);
    let lsn = r["lsn"].as_u64().unwrap();
    cli(&["kv", "set", "color", "blue"]);
    assert_eq!(cli(&["kv", "get", "color"])["value"], "blue");
    let then = cli(&["kv", "get", "color", "--as-of", &(lsn + 1).to_string()]);
    assert_eq!(then["value"], "red");
    let q = cli(&[
        "query",
        "kv",
        r#"{"op":"get","key":"color"}"#,
        "--as-of",
        &(lsn + 1).to_string(),
    ]);
    assert_eq!(q["value"], "red");
    assert_eq!(cli(&["kv", "cas", "color", "2", "green"])["version"], 3);
    assert_eq!(cli(&["kv", "list", "col"]).as_array().unwrap().len(), 1);
    // Offline, the inspector replays the key-value journal to any LSN.
    let data = server.data_dir.clone();
    drop(server);
    let inspect =
        std::path::Path::new(env!("CARGO_BIN_EXE_evringd")).with_file_name("evring-inspect");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(&inspect)
            .arg("kv")
            .arg(&data)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(run(&[])["entries"][0]["value"], "green");
    let then = run(&["--as-of", &(lsn + 1).to_string()]);
    assert_eq!(then["entries"][0]["value"], "red");
}

#[test]
fn the_models_domain_events_are_delivered_catch_up_then_live_without_gaps() {
    use evring::client::SubscriptionItem;
    use evring::protocol::SubscribeTarget;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--partitions", "2"]);
    let c = server.client();
    // History: 20 sets, one failed CAS (no event), one delete.
    for i in 0..20 {
        exec(
            &c,
            json!({"op":"set","key":format!("k{}", i % 7),"value":format!("v{i}")}),
        )
        .unwrap();
    }
    let refused = exec(
        &c,
        json!({"op":"cas","key":"k1","expected_version":99,"value":"x"}),
    )
    .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(code::WRONG_EXPECTED_VERSION),
        "{refused}"
    );
    exec(&c, json!({"op":"delete","key":"k2"})).unwrap();
    let sub = c.subscribe(SubscribeTarget::Model, "kv", 0, "").unwrap();
    let live = server.client();
    for i in 20..35 {
        exec(
            &live,
            json!({"op":"set","key":format!("k{}", i % 7),"value":format!("v{i}")}),
        )
        .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 36 {
        match sub.next_timeout(Duration::from_secs(10)) {
            Some(SubscriptionItem::Events(events)) => got.extend(events),
            other => panic!("after {} events: {other:?}", got.len()),
        }
    }
    assert!(
        sub.next_timeout(Duration::from_millis(300)).is_none(),
        "no duplicates"
    );
    let sets = got
        .iter()
        .filter(|e| e.event.event_type == "KeySet")
        .count();
    let deletes = got
        .iter()
        .filter(|e| e.event.event_type == "KeyDeleted")
        .count();
    assert_eq!((sets, deletes), (35, 1));
    for p in 0..2 {
        let lsns: Vec<u64> = got
            .iter()
            .filter(|e| e.partition == p)
            .map(|e| e.lsn)
            .collect();
        assert!(
            lsns.windows(2).all(|w| w[0] < w[1]),
            "partition {p}: in LSN order, once"
        );
    }
    let last: Value = serde_json::from_slice(
        &got.iter()
            .rev()
            .find(|e| e.event.event_type == "KeySet")
            .unwrap()
            .event
            .data,
    )
    .unwrap();
    assert!(
        last["key"].as_str().unwrap().starts_with('k') && last["version"].as_u64().unwrap() >= 1
    );
    // From an LSN beyond what is applied: nothing to catch up, the server goes on, and
    // events below that LSN are skipped.
    let future = c
        .subscribe(SubscribeTarget::Model, "kv", 1_000_000, "")
        .unwrap();
    c.ping().unwrap();
    exec(&live, json!({"op":"set","key":"later","value":"x"})).unwrap();
    assert!(future.next_timeout(Duration::from_millis(300)).is_none());
    // Another model name publishes nothing: a clear error.
    match c.subscribe(SubscribeTarget::Model, "nope", 0, "") {
        Err(e) => assert_eq!(e.code(), Some(12), "{e}"),
        Ok(_) => panic!("a subscription to a model that publishes nothing"),
    }
}
