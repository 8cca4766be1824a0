//! Hash tags on the real evringd: names with the same `{tag}` share a partition, so a RESP
//! transaction over them is allowed (and one journal write), while names without one are
//! spread; a stream found in a partition its name does not route to stops the start with a
//! message that says what to do.

mod common;

use common::{start_failure, Server};
use evring::protocol::partition_of;

#[test]
fn keys_with_one_hash_tag_share_a_partition_and_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--partitions",
            "8",
            "--set",
            "shards=2",
            "--set",
            "pin_cpus=false",
        ],
    );
    let mut c = server.redis();
    let keys: Vec<String> = (0..20).map(|i| format!("{{user7}}.stream{i}")).collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for k in &keys {
        pipe.cmd("XADD").arg(k).arg("*").arg("f").arg("v");
    }
    let ids: Vec<String> = pipe.query(&mut c).unwrap();
    assert_eq!(ids.len(), 20);
    // The same names without the tag spread over partitions: the transaction is refused.
    let plain: Vec<String> = (0..20).map(|i| format!("user7.stream{i}")).collect();
    assert!(plain
        .iter()
        .any(|k| partition_of(k, 8) != partition_of(&plain[0], 8)));
    redis::cmd("MULTI").exec(&mut c).unwrap();
    for k in &plain {
        let queued: String = redis::cmd("XADD")
            .arg(k)
            .arg("*")
            .arg("f")
            .arg("v")
            .query(&mut c)
            .unwrap();
        assert_eq!(queued, "QUEUED");
    }
    let err = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(err.contains("hash to the same slot"), "{err}");
    // The native protocol finds the tagged streams where the RESP port wrote them.
    let client = server.client();
    for k in &keys {
        let a = client.append(k, 0, vec![common::ev("a", b"{}")]).unwrap();
        assert_eq!(
            (a.partition, a.first_version),
            (partition_of("user7", 8), 1)
        );
    }
}

#[test]
fn a_stream_in_a_partition_its_name_does_not_route_to_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--partitions", "2", "--set", "pin_cpus=false"];
    let mut server = Server::start(&data, &args);
    let client = server.client();
    let name = (0..)
        .map(|i| format!("{{t{i}}}x"))
        .find(|n| partition_of(n, 2) == 1)
        .unwrap();
    client
        .append(&name, -1, vec![common::ev("a", b"{}")])
        .unwrap();
    drop(client);
    server.terminate();
    // Partition 1's journal (and snapshots) now read as partition 0's.
    std::fs::rename(data.join("p0"), data.join("px")).unwrap();
    std::fs::rename(data.join("p1"), data.join("p0")).unwrap();
    std::fs::rename(data.join("px"), data.join("p1")).unwrap();
    let data_arg = data.to_str().unwrap();
    let mut all = vec!["--data-dir", data_arg, "--listen", "127.0.0.1:0"];
    all.extend_from_slice(&args);
    let (ok, err) = start_failure(&all, |_| {});
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "partition 0 holds stream {name:?}, whose name routes to partition 1"
        )) && err.contains("Put the directories back"),
        "{err}"
    );
}
