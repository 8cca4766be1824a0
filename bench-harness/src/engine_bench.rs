//! `evring-bench engine`: the event-sourced engine's durable command rate (`execute` from K
//! concurrent tasks, each waiting for its command to be durable and applied) and its replay
//! rate at restart (the journal read and every command applied again), on one glommio
//! executor, with a small counter model.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use evring::engine::{Command, Context, DomainError, Engine, Model};

use crate::report;

#[derive(clap::Args)]
pub struct EngineArgs {
    /// Concurrent tasks executing commands.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// How long commands are executed.
    #[arg(long, default_value = "5s", value_parser = report::parse_duration)]
    duration: Duration,
    /// Directory for the engine's journal (on the disk to measure).
    #[arg(long, default_value = "./target/evring-bench")]
    dir: PathBuf,
    /// One JSON object per result row.
    #[arg(long)]
    json: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct Counters {
    counts: HashMap<u32, u64>,
}
impl Model for Counters {}

#[derive(Serialize, Deserialize)]
struct Add {
    key: u32,
    by: u64,
}
impl Command<Counters> for Add {
    const NAME: &'static str = "Add";
    type Output = u64;
    fn execute(&self, m: &mut Counters, _: &mut Context) -> Result<u64, DomainError> {
        let c = m.counts.entry(self.key).or_default();
        *c += self.by;
        Ok(*c)
    }
}

async fn open(dir: &std::path::Path) -> anyhow::Result<Engine<Counters>> {
    Engine::<Counters>::builder("bench", *b"evring-bench-eng")
        .command::<Add>()
        .open(dir)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn main(a: EngineArgs) -> anyhow::Result<()> {
    let dir = a.dir.join("engine-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (tasks, duration) = (a.tasks.max(1), a.duration);
    let rows = evring::shard::run_local(async move {
        let engine = Rc::new(open(&dir).await?);
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let e = engine.clone();
            handles.push(glommio::spawn_local(async move {
                let mut h = report::histogram();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    e.execute(Add {
                        key: t as u32 % 1024,
                        by: 1,
                    })
                    .await
                    .expect("execute");
                    report::record(&mut h, t0.elapsed());
                    n += 1;
                }
                (n, h)
            }));
        }
        let mut total = 0;
        let mut latency = report::histogram();
        for h in handles {
            let (n, hist) = h.await;
            total += n;
            latency.add(&hist).expect("same bounds");
        }
        let elapsed = started.elapsed().as_secs_f64();
        engine.close().await;
        drop(engine);
        let t0 = Instant::now();
        let again = open(&dir).await?;
        let replay = t0.elapsed().as_secs_f64();
        let sum: u64 = again.read(|m| m.counts.values().sum())?;
        anyhow::ensure!(
            sum == total,
            "replay gave {sum} commands, {total} were executed"
        );
        again.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok::<_, anyhow::Error>(vec![
            report::Row::new(format!("engine execute, {tasks} tasks"))
                .cell("commands/s", format!("{:.0}", total as f64 / elapsed))
                .cell("commands", total.to_string())
                .latency(&latency),
            report::Row::new("engine replay at restart")
                .cell("commands/s", format!("{:.0}", total as f64 / replay))
                .cell("commands", total.to_string())
                .cell("seconds", format!("{replay:.3}")),
        ])
    })?;
    report::print(&rows[..1], a.json);
    report::print(&rows[1..], a.json);
    Ok(())
}
