//! `evring-bench`: load runs for evring, measured side by side in one run.
//!
//! - `disk`: the raw ceiling — O_DIRECT write + fdatasync through io_uring, N in flight.
//! - `journal`: the journal alone, K producers; prints the raw ceiling at the same frame size
//!   and depth first, then the journal, then their ratio.
//! - `network`: the real `evringd` over TCP: C connections × P requests in flight.
//! - `compare`: a workload file against evring (its own protocol and its RESP port), Redis
//!   (AOF always / no persistence), PostgreSQL and the raw disk — or, for PING workloads, a
//!   minimal io_uring server of our own (`floor.rs`) — interleaved round by round, with JSON
//!   and SVG charts.
//! - `recovery`: restart time of evringd after N events.
//! - `engine`: the event-sourced engine's durable commands/s and replay speed.
//! - `views`: a partition read on a shard that does not own it (through its stable view)
//!   against reading it on its owner, and what such readers cost the owner's appends.
//! - `groups`: AGGREGATE_GROUPS over 1M events end to end (value and JSON-field sums,
//!   grouped top-K), on one partition, on four, and on each of the four alone.
//!
//! Figures are medians of `--runs` runs where a run is repeated (the machine is noisy); every
//! run's figures are printed too. docs/BENCHMARKS.md records results and commands.

mod charts;
mod codecs;
mod compare;
mod consume;
mod disk;
mod driver;
mod engine_bench;
mod floor;
mod groups;
mod journal;
mod network;
mod peers;
mod recovery;
mod report;
mod views;
mod workload;

use disk::DiskResult;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "evring-bench", version, about = "Load runs for evring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw device ceiling: O_DIRECT write + fdatasync via io_uring.
    Disk(DiskArgs),
    /// The journal alone, side by side with the raw ceiling at the same frame size and depth.
    Journal(JournalArgs),
    /// The evringd server over TCP.
    Network(network::NetworkArgs),
    /// One workload against evring, Redis, PostgreSQL and the raw disk, interleaved.
    Compare(compare::CompareArgs),
    /// Time to restart evringd after N events (journal replay).
    Recovery(recovery::RecoveryArgs),
    /// The event-sourced engine: durable commands/s and replay speed.
    Engine(engine_bench::EngineArgs),
    /// Two shards: AGGREGATE and catch-up of a partition served by its view on the other
    /// shard vs on its owner (and through the owner, with views=false), per-stream READ
    /// through the owner from the other shard vs on the owner, and the owner's append rate
    /// with and without readers on the other shard.
    Views(views::ViewsArgs),
    /// AGGREGATE_GROUPS end to end over 1M events: value and JSON-field sums, grouped top-K
    /// by type, stream and field, on one partition, on four, and on each of the four alone.
    Groups(groups::GroupsArgs),
    /// The floor server alone (compare's `floor` targets), for other clients such as
    /// redis-benchmark: prints its address, then serves until it is killed.
    Floor(floor::FloorArgs),
}

#[derive(Args, Clone)]
pub struct Common {
    /// Directory for benchmark files (on the disk to measure; not tmpfs).
    #[arg(long, default_value = "./target/evring-bench")]
    dir: PathBuf,
    /// Length of each run.
    #[arg(long, default_value = "5s", value_parser = report::parse_duration)]
    duration: Duration,
    /// Repetitions; the median run is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// One JSON object per result row.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DiskArgs {
    #[command(flatten)]
    common: Common,
    /// Bytes per write.
    #[arg(long, default_value = "64KiB", value_parser = report::parse_bytes)]
    frame_bytes: u64,
    /// Writes (each with its fdatasync) in flight.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Size of the preallocated, pre-written file.
    #[arg(long, default_value = "256MiB", value_parser = report::parse_bytes)]
    file_bytes: u64,
    /// Open with O_DSYNC: one write per slot, durable on completion, no fdatasync.
    #[arg(long)]
    dsync: bool,
}

#[derive(Args)]
struct JournalArgs {
    #[command(flatten)]
    common: Common,
    /// Data bytes per record (the record header adds 72).
    #[arg(long, default_value = "100", value_parser = report::parse_bytes)]
    record_bytes: u64,
    /// Concurrent producer tasks, each with one append outstanding.
    #[arg(long, default_value_t = 1000)]
    producers: usize,
    /// Largest group-commit frame.
    #[arg(long, default_value = "1MiB", value_parser = report::parse_bytes)]
    frame_bytes_max: u64,
    /// Frames being written at once.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Bytes a frame must hold before it is written while others are in flight (the
    /// server's `pipeline_min_bytes`, 64 KiB by default there). 0 here: every frame as soon
    /// as `--in-flight` allows, the same depth as the raw-disk run it is compared with.
    #[arg(long, default_value = "0", value_parser = report::parse_bytes)]
    pipeline_min_bytes: u64,
    /// Journal segment size.
    #[arg(long, default_value = "256MiB", value_parser = report::parse_bytes)]
    segment_bytes: u64,
    /// Skip the raw-disk run.
    #[arg(long)]
    no_disk: bool,
    /// How the journal makes a frame durable: dsync (O_DSYNC writes) or fdatasync.
    #[arg(long, default_value = "dsync")]
    write_mode: String,
}

/// The run with the median of `key` among `runs`.
pub fn median_by<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Disk(a) => {
            std::fs::create_dir_all(&a.common.dir)?;
            let file = a.common.dir.join("disk-bench.dat");
            let mut rows = Vec::new();
            let mut results = Vec::new();
            for i in 0..a.common.runs.max(1) {
                let r = disk::run(
                    &file,
                    a.file_bytes,
                    a.frame_bytes as usize,
                    a.depth,
                    a.common.duration,
                    a.dsync,
                )?;
                rows.push(r.row(&format!("disk run {}", i + 1)));
                results.push(r);
            }
            let med = median_by(results, |r| r.flushes as f64 / r.elapsed.as_secs_f64());
            let mode = if a.dsync {
                "O_DSYNC write"
            } else {
                "write+fdatasync"
            };
            rows.push(med.row(&format!(
                "disk {mode} {}B x{} median",
                a.frame_bytes, a.depth
            )));
            report::print(&rows, a.common.json);
        }
        Command::Journal(a) => {
            std::fs::create_dir_all(&a.common.dir)?;
            let params = journal::JournalParams {
                record_bytes: a.record_bytes as usize,
                producers: a.producers,
                frame_bytes_max: a.frame_bytes_max as usize,
                in_flight: a.in_flight,
                pipeline_min_bytes: a.pipeline_min_bytes as usize,
                segment_bytes: a.segment_bytes,
                duration: a.common.duration,
                write_mode: match a.write_mode.as_str() {
                    "dsync" => evring::journal::WriteMode::Dsync,
                    "fdatasync" => evring::journal::WriteMode::Fdatasync,
                    other => anyhow::bail!("--write-mode {other:?}: use dsync or fdatasync"),
                },
            };
            let mut disk_runs = Vec::new();
            let mut journal_runs = Vec::new();
            // Alternate the two so both see the same disk weather. The raw run uses the
            // journal run's mean frame size (rounded up to 4 KiB) and its depth: the same
            // frame size and depth, whatever the producers made of the frame cap.
            for _ in 0..a.common.runs.max(1) {
                let j = journal::run(&a.common.dir.join("journal"), &params)?;
                if !a.no_disk {
                    let mean = (j.bytes / j.frames.max(1)).div_ceil(4096).max(1) * 4096;
                    let file = a.common.dir.join("disk-bench.dat");
                    for dsync in [false, true] {
                        let d = disk::run(
                            &file,
                            a.segment_bytes,
                            mean as usize,
                            a.in_flight,
                            a.common.duration,
                            dsync,
                        )?;
                        disk_runs.push((mean, dsync, d));
                    }
                }
                journal_runs.push(j);
            }
            let mut rows = Vec::new();
            for (i, r) in journal_runs.iter().enumerate() {
                rows.push(r.row(&format!("journal run {}", i + 1)));
            }
            let key = |r: &journal::JournalResult| r.records as f64 / r.elapsed.as_secs_f64();
            let j = median_by(journal_runs, key);
            rows.push(j.row(&format!(
                "journal {}B records, {} producers, median",
                a.record_bytes, a.producers
            )));
            report::print(&rows, a.common.json);
            if !disk_runs.is_empty() {
                let jf = j.frames as f64 / j.elapsed.as_secs_f64();
                let mut rows = Vec::new();
                let mut ratios = Vec::new();
                for dsync in [false, true] {
                    let mode = if dsync {
                        "O_DSYNC write"
                    } else {
                        "write+fdatasync"
                    };
                    let mine: Vec<(u64, DiskResult)> = disk_runs
                        .iter_mut()
                        .filter(|(_, d, _)| *d == dsync)
                        .map(|(mean, _, r)| (*mean, std::mem::replace(r, DiskResult::empty())))
                        .collect();
                    for (i, (mean, r)) in mine.iter().enumerate() {
                        rows.push(r.row(&format!(
                            "disk {mode} run {} ({mean}B x{})",
                            i + 1,
                            a.in_flight
                        )));
                    }
                    let (_, d) =
                        median_by(mine, |(_, r)| r.flushes as f64 / r.elapsed.as_secs_f64());
                    rows.push(d.row(&format!("disk {mode} median")));
                    let df = d.flushes as f64 / d.elapsed.as_secs_f64();
                    ratios.push(
                        report::Row::new(format!("journal / disk {mode} (medians)"))
                            .cell("flushes/s ratio", format!("{:.2}", jf / df)),
                    );
                }
                report::print(&rows, a.common.json);
                report::print(&ratios, a.common.json);
            }
        }
        Command::Network(a) => network::main(a)?,
        Command::Compare(a) => compare::main(a)?,
        Command::Recovery(a) => recovery::main(a)?,
        Command::Engine(a) => engine_bench::main(a)?,
        Command::Views(a) => views::main(a)?,
        Command::Groups(a) => groups::main(a)?,
        Command::Floor(a) => floor::main(a)?,
    }
    Ok(())
}
