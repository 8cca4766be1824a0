//! Metric names in one place, the Prometheus recorder, and the text endpoint.
//!
//! Counters end in `_total`, units are in names (`_seconds`, `_bytes`), labels are few and
//! bounded (`partition`, `code`). The recorder is the `metrics` crate's global one, rendered
//! by `metrics-exporter-prometheus` without its HTTP stack; [`serve`] answers
//! `GET /metrics` on a plain thread (outside the shards, so a scrape never delays I/O).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const APPENDS_TOTAL: &str = "evring_appends_total";
pub const EVENTS_APPENDED_TOTAL: &str = "evring_events_appended_total";
pub const APPEND_BYTES_TOTAL: &str = "evring_append_bytes_total";
pub const FRAMES_WRITTEN_TOTAL: &str = "evring_frames_written_total";
pub const JOURNAL_BYTES_WRITTEN_TOTAL: &str = "evring_journal_bytes_written_total";
pub const FLUSH_LATENCY_SECONDS: &str = "evring_flush_latency_seconds";
pub const FRAMES_IN_FLIGHT: &str = "evring_frames_in_flight";
pub const RING_EVENTS: &str = "evring_ring_events";
pub const RING_BYTES: &str = "evring_ring_bytes";
pub const CONNECTIONS: &str = "evring_connections";
pub const ERRORS_TOTAL: &str = "evring_errors_total";
pub const PARTITION_POISONED: &str = "evring_partition_poisoned";
pub const SNAPSHOTS: &str = "evring_snapshots_total";
pub const SNAPSHOT_FAILURES: &str = "evring_snapshot_failures_total";
pub const SNAPSHOT_SECONDS: &str = "evring_snapshot_duration_seconds";
pub const SNAPSHOT_LSN: &str = "evring_snapshot_lsn";

/// Histogram buckets of the flush latency (write + fdatasync of one frame), in seconds.
const FLUSH_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// Histogram buckets of a snapshot's duration (copy, encode, write, fsync), in seconds.
const SNAPSHOT_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(FLUSH_LATENCY_SECONDS.into()), FLUSH_BUCKETS)
                .expect("flush buckets are non-empty")
                .set_buckets_for_metric(Matcher::Full(SNAPSHOT_SECONDS.into()), SNAPSHOT_BUCKETS)
                .expect("snapshot buckets are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests): then ours only renders
            // what it records, which is nothing; the handle still answers.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves the Prometheus text format on `addr` from a background thread.
pub fn serve(addr: &str, handle: PrometheusHandle) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("evring-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                // Drain the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let (status, body) = if request_line.starts_with("GET /metrics") {
                    ("200 OK", handle.render())
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_string())
                };
                let mut out = &stream;
                let _ = write!(
                    out,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(bound)
}
