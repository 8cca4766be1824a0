//! `serve_model`: a user's model served by evringd through EXECUTE/QUERY (JSON), durable
//! across a restart, with bad commands refused and evringd's own models still served.

use std::collections::BTreeMap;

use evring::engine::{Command, Context, DomainError, Model, Query};
use evring::server::served_model::{factory, ServedModel};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Tally {
    votes: BTreeMap<String, u64>,
}
impl Model for Tally {}

#[derive(Serialize, Deserialize)]
enum Vote {
    For { option: String },
}
impl Command<Tally> for Vote {
    const NAME: &'static str = "vote";
    type Output = u64;
    fn execute(&self, m: &mut Tally, ctx: &mut Context) -> Result<u64, DomainError> {
        let Vote::For { option } = self;
        if option.is_empty() {
            return Err(DomainError::new("empty option"));
        }
        let v = m.votes.entry(option.clone()).or_default();
        *v += 1;
        ctx.raise("tally", "Voted", option.clone());
        Ok(*v)
    }
}

#[derive(Serialize, Deserialize)]
enum Ask {
    Count {
        option: String,
    },
    /// A buggy query: it panics.
    Boom,
}
impl Query<Tally> for Ask {
    type Output = u64;
    fn run(&self, m: &Tally) -> u64 {
        match self {
            Ask::Count { option } => m.votes.get(option).copied().unwrap_or(0),
            Ask::Boom => panic!("a bug in the query"),
        }
    }
}

impl ServedModel for Tally {
    const NAME: &'static str = "tally";
    type Cmd = Vote;
    type Q = Ask;
}

fn config(dir: &std::path::Path) -> evring::config::Config {
    evring::config::Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        resp_listen: String::new(),
        segment_bytes: 4 << 20,
        partitions: 2,
        ..Default::default()
    }
}

#[test]
fn a_users_model_is_served_durably_next_to_the_built_in_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        evring::server::start_serving(config(dir.path()), Some(factory::<Tally>())).unwrap();
    let c = evring::client::BlockingClient::connect(server.client_addr, "t", "").unwrap();
    for _ in 0..3 {
        c.execute("tally", br#"{"For":{"option":"tea"}}"#.to_vec())
            .unwrap();
    }
    let n = c
        .execute("tally", br#"{"For":{"option":"coffee"}}"#.to_vec())
        .unwrap();
    assert_eq!(n, b"1");
    // Refused and malformed commands: error 12, the connection goes on.
    let e = c
        .execute("tally", br#"{"For":{"option":""}}"#.to_vec())
        .unwrap_err();
    assert_eq!(e.code(), Some(12), "{e}");
    let e = c
        .execute("tally", b"{\"Against\":{}}".to_vec())
        .unwrap_err();
    assert_eq!(e.code(), Some(12), "{e}");
    assert_eq!(
        c.query("tally", br#"{"Count":{"option":"tea"}}"#.to_vec())
            .unwrap(),
        b"3"
    );
    // evringd's own key-value model is still there.
    c.execute("kv", br#"{"op":"set","key":"k","value":"v"}"#.to_vec())
        .unwrap();
    drop(c);
    server.stop().unwrap();
    let server =
        evring::server::start_serving(config(dir.path()), Some(factory::<Tally>())).unwrap();
    let c = evring::client::BlockingClient::connect(server.client_addr, "t", "").unwrap();
    assert_eq!(
        c.query("tally", br#"{"Count":{"option":"tea"}}"#.to_vec())
            .unwrap(),
        b"3"
    );
    assert_eq!(
        c.query("tally", br#"{"Count":{"option":"coffee"}}"#.to_vec())
            .unwrap(),
        b"1"
    );
    drop(c);
    server.stop().unwrap();
}
