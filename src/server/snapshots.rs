//! Snapshot scheduling and retention: when each partition and model is snapshotted, the
//! snapshot itself (copied on the shard, encoded and written off it), the retries with
//! backoff, the journal segments retention removes, and the newest usable snapshot at
//! start-up.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::route::{Shard, Shared};
use crate::config::Config;
use crate::manifest::Manifest;
use crate::stream::{
    partition_image_of, partition_snapshot_owner, ImageError, Partition, PartitionLimits, Rebuild,
};

/// When partitions are snapshotted (config keys `snapshot_*`) and how much journal they
/// keep (`retention_*`).
#[derive(Clone, Copy, Debug)]
pub(super) struct SnapshotPolicy {
    pub(super) every_events: u64,
    pub(super) every: Option<Duration>,
    pub(super) keep: usize,
    pub(super) retention_bytes: u64,
    pub(super) retention_age: Option<Duration>,
}

impl SnapshotPolicy {
    pub(super) fn from_config(c: &Config) -> Self {
        SnapshotPolicy {
            every_events: c.snapshot_every_events,
            every: (c.snapshot_every_secs > 0)
                .then(|| Duration::from_secs(u64::from(c.snapshot_every_secs))),
            keep: c.snapshot_keep.max(1) as usize,
            retention_bytes: c.retention_max_bytes,
            retention_age: (c.retention_max_age_secs > 0)
                .then(|| Duration::from_secs(c.retention_max_age_secs)),
        }
    }
    pub(super) fn enabled(&self) -> bool {
        self.every_events > 0 || self.every.is_some()
    }
}

/// The newest usable snapshot of partition `p`, turned into a rebuild start and where the
/// journal scan resumes (`None`: from the first segment, for a snapshot written before images
/// said what time the events their ring lacks reach); snapshots that cannot be used are
/// logged with the reason and the next older one is tried.
pub(super) fn load_snapshot(
    dir: &std::path::Path,
    store: crate::journal::StoreId,
    p: u32,
    limits: &PartitionLimits,
) -> Option<(Rebuild, Option<crate::journal::Resume>, std::path::PathBuf)> {
    let loaded = crate::snapshot::load_newest_usable(
        dir,
        &partition_snapshot_owner(store, p),
        u64::MAX,
        |loaded| -> Result<_, ImageError> {
            let path = loaded.path.clone();
            let image = partition_image_of(&loaded)?;
            let resume = if image.needs_full_scan() {
                tracing::info!(
                    partition = p,
                    snapshot = %path.display(),
                    "the snapshot does not say what time the events its ring lacks reach \
                     (written by an older evringd): scanning the journal from its first \
                     segment for their timestamps (once: the next snapshot says it)"
                );
                None
            } else {
                Some(image.resume.clone())
            };
            let rebuild = Rebuild::from_image(image, limits.idempotency_window, limits.ring)?;
            Ok((rebuild, resume))
        },
        |path, reason| {
            tracing::warn!(
                partition = p,
                snapshot = %path.display(),
                %reason,
                "snapshot not usable; trying an older one (or the whole journal)"
            )
        },
    );
    match loaded {
        Ok(found) => found.map(|((rebuild, resume), _, path)| (rebuild, resume, path)),
        Err(e) => {
            tracing::warn!(partition = p, error = %e, "cannot list snapshots; replaying the whole journal");
            None
        }
    }
}

/// When the next snapshot of one partition or model is due, and the retry state after a
/// failure (exponential backoff with jitter).
pub(super) struct Schedule {
    pub(super) policy: SnapshotPolicy,
    pub(super) last_lsn: u64,
    pub(super) last_time: Instant,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    pub(super) seed: u64,
}

impl Schedule {
    pub(super) fn new(policy: SnapshotPolicy, last_lsn: u64, seed: u64) -> Schedule {
        Schedule {
            policy,
            last_lsn,
            last_time: Instant::now(),
            failures: 0,
            retry_at: None,
            seed,
        }
    }

    /// Whether a snapshot is due now that the state is at `position` (published or applied
    /// LSN).
    pub(super) fn due(&self, position: u64) -> bool {
        if position <= self.last_lsn || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        (self.policy.every_events > 0 && position - self.last_lsn >= self.policy.every_events)
            || self
                .policy
                .every
                .is_some_and(|every| self.last_time.elapsed() >= every)
            || self.retry_at.is_some()
    }

    pub(super) fn succeeded(&mut self, lsn: u64) {
        self.last_lsn = lsn;
        self.last_time = Instant::now();
        self.failures = 0;
        self.retry_at = None;
    }

    /// Records a failure; returns how long until the retry.
    pub(super) fn failed(&mut self) -> Duration {
        self.failures += 1;
        let wait = snapshot_backoff(self.failures, &mut self.seed);
        self.retry_at = Some(Instant::now() + wait);
        wait
    }
}

/// Runs `take` whenever the policy says a snapshot is due, given the state's position
/// (published or applied LSN) and the last snapshot's (`start` at first), until the server
/// stops. Failures are logged, counted and retried with exponential backoff and jitter; the
/// appends and commands the state serves never wait for them. One loop per partition's
/// streams and per model, at most `snapshot_max_jobs` of them taking a snapshot at once.
#[allow(clippy::too_many_arguments)]
pub(super) async fn snapshot_loop(
    what: &'static str,
    partition: u32,
    start: u64,
    seed: u64,
    policy: SnapshotPolicy,
    shared: Arc<Shared>,
    jobs: Rc<glommio::sync::Semaphore>,
    position: impl Fn() -> u64,
    take: impl AsyncFn() -> Result<u64, Box<dyn std::error::Error>>,
) {
    let mut schedule = Schedule::new(policy, start, u64::from(partition) ^ seed);
    while !shared.stop.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        if !schedule.due(position()) {
            continue;
        }
        let Ok(_permit) = jobs.acquire_static_permit(1).await else {
            return;
        };
        match take().await {
            Ok(lsn) => schedule.succeeded(lsn),
            Err(e) => {
                metrics::counter!(crate::metrics::SNAPSHOT_FAILURES, "partition" => partition.to_string())
                    .increment(1);
                let wait = schedule.failed();
                tracing::warn!(partition, error = %e, failures = schedule.failures, retry_in_ms = wait.as_millis() as u64, "{what} snapshot failed; writes are not affected");
            }
        }
    }
}

/// The wait before retrying a failed snapshot: 1 s, 2 s, 4 s … up to 5 min, times a jitter
/// in [0.5, 1.5) drawn from `seed` (so partitions that failed together retry apart).
pub(super) fn snapshot_backoff(failures: u32, seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let jitter = 0.5 + (*seed >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs(1 << failures.min(8))
        .min(Duration::from_secs(300))
        .mul_f64(jitter)
}

/// Deletes journal segments the retention policy no longer wants, but only those wholly
/// below the resume segment of the oldest snapshot kept (so every kept snapshot can still
/// be recovered from).
pub(super) async fn apply_retention(
    part: &Partition,
    dir: &std::path::Path,
    policy: SnapshotPolicy,
) {
    let mut bound = u64::MAX;
    for (_, path) in crate::snapshot::list(dir).unwrap_or_default() {
        match crate::snapshot::read_meta(&path) {
            Ok(m) => bound = bound.min(m.resume_segment),
            // A kept snapshot we cannot read: delete nothing.
            Err(_) => return,
        }
    }
    if bound == u64::MAX {
        return;
    }
    let result = part
        .journal()
        .remove_segments_below(bound, |_, total, age| {
            (policy.retention_bytes > 0 && total > policy.retention_bytes)
                || policy.retention_age.is_some_and(|max| age > max)
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(partition = part.id, error = %e, "retention could not remove a segment");
    }
}

/// Copies the partition's state (on the shard), then encodes, writes and prunes on glommio's
/// blocking pool. Returns the snapshot's LSN.
pub(super) async fn take_snapshot(
    part: &Partition,
    dir: &std::path::Path,
    store: crate::journal::StoreId,
    keep: usize,
) -> std::io::Result<u64> {
    let started = Instant::now();
    let image = part.image_yielding().await;
    let copied = started.elapsed();
    let lsn = image.lsn;
    let meta = crate::snapshot::SnapshotMeta {
        kind: crate::snapshot::KIND_PARTITION,
        codec: crate::snapshot::CODEC_BINARY,
        partition: part.id,
        store_id: store,
        lsn,
        resume_segment: image.resume.first_segment,
    };
    let dir = dir.to_path_buf();
    let inject = std::env::var_os("EVRINGD_INJECT_SNAPSHOT_FAILURE").is_some();
    // The image comes back to be freed here: its blocks are this shard's, and freed on the
    // blocking thread each free would take the lock of the shard's allocator arena, which
    // the shard's own allocations then wait for (`PartitionImage::free_yielding`).
    let (written, image) = glommio::executor()
        .spawn_blocking(move || {
            crate::shard::off_shard_cpus();
            let written = (|| -> std::io::Result<(std::path::PathBuf, usize)> {
                if inject {
                    return Err(std::io::Error::other("injected snapshot failure"));
                }
                let body = image.encode();
                let path = crate::snapshot::write(&dir, &meta, &body)?;
                crate::snapshot::prune(&dir, keep)?;
                Ok((path, body.len()))
            })();
            (written, image)
        })
        .await;
    image.free_yielding().await;
    let (path, bytes) = written?;
    let label = part.id.to_string();
    metrics::counter!(crate::metrics::SNAPSHOTS, "partition" => label.clone()).increment(1);
    metrics::histogram!(crate::metrics::SNAPSHOT_SECONDS, "partition" => label.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::gauge!(crate::metrics::SNAPSHOT_LSN, "partition" => label).set(lsn as f64);
    tracing::info!(
        partition = part.id,
        lsn,
        bytes,
        copy_ms = copied.as_secs_f64() * 1000.0,
        total_ms = started.elapsed().as_secs_f64() * 1000.0,
        path = %path.display(),
        "snapshot written"
    );
    Ok(lsn)
}

/// The snapshot loops of one shard: one per partition's streams and per model engine.
pub(super) struct SnapshotTasks {
    policy: SnapshotPolicy,
    store: crate::journal::StoreId,
    tasks: Vec<glommio::task::JoinHandle<()>>,
}

impl SnapshotTasks {
    /// Starts a loop per partition (snapshot, then retention) and per model, at most
    /// `snapshot_max_jobs` taking a snapshot at once; none when snapshots are off.
    pub(super) fn start(
        shard: &Rc<Shard>,
        data_dir: &std::path::Path,
        store: crate::journal::StoreId,
    ) -> SnapshotTasks {
        let shared = &shard.shared;
        let policy = SnapshotPolicy::from_config(&shared.config);
        let jobs = Rc::new(glommio::sync::Semaphore::new(u64::from(
            shared.config.snapshot_max_jobs.max(1),
        )));
        let mut tasks = Vec::new();
        if !policy.enabled() {
            return SnapshotTasks {
                policy,
                store,
                tasks,
            };
        }
        for (&id, part) in &shard.partitions {
            let dir = Manifest::partition_dir(data_dir, id);
            let newest = crate::snapshot::list(&dir)
                .ok()
                .and_then(|l| l.first().map(|x| x.0))
                .unwrap_or(0);
            let position = {
                let part = part.clone();
                move || part.published_lsn()
            };
            let part = part.clone();
            let take = async move || {
                let lsn = take_snapshot(&part, &dir, store, policy.keep).await?;
                if policy.retention_bytes > 0 || policy.retention_age.is_some() {
                    apply_retention(&part, &dir, policy).await;
                }
                Ok(lsn)
            };
            let task = snapshot_loop(
                "stream",
                id,
                newest,
                0x9E37_79B9_7F4A_7C15,
                policy,
                shared.clone(),
                jobs.clone(),
                position,
                take,
            );
            tasks.push(glommio::spawn_local(task).detach());
        }
        for (id, service) in shard.models() {
            let position = {
                let service = service.clone();
                move || service.applied_lsn()
            };
            let start = service.applied_lsn();
            let take = async move || service.snapshot(policy.keep).await.map_err(Into::into);
            let task = snapshot_loop(
                "model",
                id,
                start,
                0xD1B5_4A32_D192_ED03,
                policy,
                shared.clone(),
                jobs.clone(),
                position,
                take,
            );
            tasks.push(glommio::spawn_local(task).detach());
        }
        SnapshotTasks {
            policy,
            store,
            tasks,
        }
    }

    /// The clean stop of a shard's stores: the loops end, every journal closes (in-flight
    /// frames finish), each model closes, and — with `snapshot_on_shutdown` — a last
    /// snapshot of each.
    pub(super) async fn stop(self, shard: &Rc<Shard>, data_dir: &std::path::Path) {
        for t in self.tasks {
            t.await;
        }
        for p in shard.partitions.values() {
            p.journal().close().await;
        }
        let last = shard.shared.config.snapshot_on_shutdown;
        for (id, service) in shard.models() {
            service.close().await;
            if last && service.applied_lsn() > 0 {
                if let Err(e) = service.snapshot(self.policy.keep).await {
                    tracing::warn!(partition = id, error = %e, "final model snapshot failed");
                }
            }
        }
        if !last {
            return;
        }
        for (&id, part) in &shard.partitions {
            if part.published_lsn() == 0 {
                continue;
            }
            let dir = Manifest::partition_dir(data_dir, id);
            if let Err(e) = take_snapshot(part, &dir, self.store, self.policy.keep).await {
                tracing::warn!(partition = id, error = %e, "final snapshot failed");
            }
        }
    }
}

#[cfg(test)]
mod backoff_tests {
    #[test]
    fn snapshot_retries_back_off_exponentially_with_jitter_up_to_five_minutes() {
        let mut seed = 42;
        let waits: Vec<f64> = (1..=12)
            .map(|f| super::snapshot_backoff(f, &mut seed).as_secs_f64())
            .collect();
        for (i, w) in waits.iter().enumerate().take(8) {
            let base = f64::from(1u32 << (i + 1));
            assert!(
                *w >= 0.5 * base && *w < 1.5 * base,
                "failure {}: {w}",
                i + 1
            );
        }
        assert!(waits.iter().all(|w| *w < 1.5 * 300.0));
        let mut other = 7;
        assert_ne!(
            super::snapshot_backoff(3, &mut other),
            super::snapshot_backoff(3, &mut 42)
        );
    }
}
