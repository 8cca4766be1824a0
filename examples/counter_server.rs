//! A stateful service binary around your own model, in a few lines: named counters served by
//! evringd under the model name "counters" (EXECUTE/QUERY with JSON), next to evringd's
//! streams and key-value store.
//!
//! ```sh
//! cargo run --release --example counter_server -- 127.0.0.1:7171 ./counter-data
//! evring --addr 127.0.0.1:7171 execute counters '{"Add":{"name":"visits","by":3}}'
//! evring --addr 127.0.0.1:7171 query counters '{"Get":{"name":"visits"}}'
//! ```

use std::collections::BTreeMap;

use evring::engine::{Command, Context, DomainError, Model, Query};
use evring::server::served_model::{serve_model, ServedModel};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counters {
    values: BTreeMap<String, i64>,
}
impl Model for Counters {}

#[derive(Serialize, Deserialize)]
enum CounterCommand {
    Add { name: String, by: i64 },
    Reset { name: String },
}

impl Command<Counters> for CounterCommand {
    const NAME: &'static str = "counter";
    type Output = i64;
    fn execute(&self, m: &mut Counters, _: &mut Context) -> Result<i64, DomainError> {
        match self {
            CounterCommand::Add { name, by } => {
                let v = m.values.entry(name.clone()).or_default();
                *v = v
                    .checked_add(*by)
                    .ok_or_else(|| DomainError::new("counter overflow"))?;
                Ok(*v)
            }
            CounterCommand::Reset { name } => Ok(m.values.remove(name).unwrap_or(0)),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum CounterQuery {
    Get { name: String },
}

impl Query<Counters> for CounterQuery {
    type Output = i64;
    fn run(&self, m: &Counters) -> i64 {
        match self {
            CounterQuery::Get { name } => m.values.get(name).copied().unwrap_or(0),
        }
    }
}

impl ServedModel for Counters {
    const NAME: &'static str = "counters";
    type Cmd = CounterCommand;
    type Q = CounterQuery;
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut config = evring::config::Config::default();
    let mut args = std::env::args().skip(1);
    if let Some(listen) = args.next() {
        config.listen = listen;
    }
    if let Some(dir) = args.next() {
        config.data_dir = dir.into();
    }
    config.metrics_listen = String::new();
    config.resp_listen = String::new();
    Ok(serve_model::<Counters>(config)?)
}
