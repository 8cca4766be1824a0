//! `evring-bench journal`: the journal alone, on one pinned glommio executor, fed by `K`
//! producer tasks that each append one record of `record_bytes` and wait for it to be
//! durable, then append the next. Group commit gathers the concurrent records into frames of
//! up to `frame_bytes_max`; `in_flight` frames are written and fdatasync'ed at once.
//!
//! Counted: records acknowledged (durable) per second, frames and journal bytes per second
//! (padded frames, what the disk took), and append latency (call → durable).

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

use evring::journal::{DiskStorage, Journal, JournalConfig, RecordRef, WriteMode};
use evring::shard::run_local;

use crate::report;

pub struct JournalResult {
    pub records: u64,
    pub frames: u64,
    pub bytes: u64,
    pub segments_created: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl JournalResult {
    pub fn row(&self, name: &str) -> report::Row {
        let secs = self.elapsed.as_secs_f64();
        report::Row::new(name)
            .cell("records/s", format!("{:.0}", self.records as f64 / secs))
            .cell("flushes/s", format!("{:.0}", self.frames as f64 / secs))
            .cell("MB/s", format!("{:.1}", self.bytes as f64 / secs / 1e6))
            .cell(
                "records/frame",
                format!("{:.1}", self.records as f64 / self.frames.max(1) as f64),
            )
            .cell("segments", self.segments_created.to_string())
            .latency(&self.latency)
    }
}

pub struct JournalParams {
    pub record_bytes: usize,
    pub producers: usize,
    pub frame_bytes_max: usize,
    pub in_flight: usize,
    pub pipeline_min_bytes: usize,
    pub segment_bytes: u64,
    pub duration: Duration,
    pub write_mode: WriteMode,
}

pub fn run(dir: &Path, p: &JournalParams) -> anyhow::Result<JournalResult> {
    let _ = std::fs::remove_dir_all(dir);
    let storage = DiskStorage::open(dir)
        .with_context(|| format!("create {}", dir.display()))?
        .with_write_mode(p.write_mode);
    let mut cfg = JournalConfig::new(*b"evring-benchmark", 0);
    cfg.frame_bytes_max = p.frame_bytes_max;
    cfg.in_flight_max = p.in_flight;
    cfg.pipeline_min_bytes = p.pipeline_min_bytes;
    cfg.segment_bytes = p.segment_bytes;
    let (producers, record_bytes, duration) = (p.producers, p.record_bytes, p.duration);
    let result = run_local(async move {
        let (journal, _) = Journal::open(storage, cfg, |_, _| {}).await?;
        let latency = Rc::new(RefCell::new(report::histogram()));
        let records = Rc::new(Cell::new(0u64));
        let before = journal.stats();
        let t0 = Instant::now();
        let deadline = t0 + duration;
        let mut tasks = Vec::with_capacity(producers);
        for i in 0..producers {
            let journal = journal.clone();
            let latency = latency.clone();
            let records = records.clone();
            let data = vec![b'a' + (i % 26) as u8; record_bytes];
            let stream = format!("bench-{}", i % 64);
            tasks.push(glommio::spawn_local(async move {
                // One clock read per record: each append starts when the previous one ended.
                let mut start = Instant::now();
                while start < deadline {
                    let rec = RecordRef::event(stream.as_bytes(), b"bench", &data);
                    journal.append(&[rec]).await?;
                    let end = Instant::now();
                    report::record(&mut latency.borrow_mut(), end - start);
                    records.set(records.get() + 1);
                    start = end;
                }
                Ok(())
            }));
        }
        for t in tasks {
            t.await?;
        }
        let elapsed = t0.elapsed();
        let after = journal.stats();
        journal.close().await;
        let latency = latency.borrow().clone();
        Ok::<_, evring::error::JournalError>(JournalResult {
            records: records.get(),
            frames: after.frames_written - before.frames_written,
            bytes: after.bytes_written - before.bytes_written,
            segments_created: after.segments_created - before.segments_created,
            elapsed,
            latency,
        })
    });
    let _ = std::fs::remove_dir_all(dir);
    Ok(result?)
}
