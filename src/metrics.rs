//! Metric names in one place, the Prometheus recorder, and the text endpoint.
//!
//! Counters end in `_total`, units are in names (`_seconds`, `_bytes`), labels are few and
//! bounded (`partition`, `code`). Every metric is listed in [`METRICS`] with its type and
//! help text, described to the recorder at install (so each has a `# HELP` line) and in
//! docs/OPERATIONS.md. The recorder is the `metrics` crate's global one, rendered by
//! `metrics-exporter-prometheus` without its HTTP stack.
//!
//! [`serve`] answers `GET /metrics` outside the shards (a scrape never delays I/O): one thread
//! accepts, and each connection is served on its own short-lived thread, at most
//! [`MAX_CONNECTIONS`] at once (beyond: `503` and close). A connection must send its request
//! head (request line and headers) within [`HEAD_DEADLINE`] in all, not per read, and in at
//! most [`MAX_HEAD_BYTES`] (beyond: `408` or `431` and close), so a client sending a byte at a
//! time cannot hold the endpoint and one sending endless bytes cannot grow memory. Only
//! `GET /metrics` is answered (`404` for other paths, `405` for other methods, `400` for a
//! request line that is not HTTP); every response closes the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
pub const RING_EVICTED: &str = "evring_ring_evicted_events_total";
pub const CONNECTIONS: &str = "evring_connections";
pub const ERRORS_TOTAL: &str = "evring_errors_total";
pub const PARTITION_POISONED: &str = "evring_partition_poisoned";
pub const SNAPSHOTS: &str = "evring_snapshots_total";
pub const SNAPSHOT_FAILURES: &str = "evring_snapshot_failures_total";
pub const SNAPSHOT_SECONDS: &str = "evring_snapshot_duration_seconds";
pub const SNAPSHOT_LSN: &str = "evring_snapshot_lsn";
pub const SEGMENT_PREPARE_FAILURES: &str = "evring_segment_prepare_failures_total";
pub const ACCEPT_FAILURES: &str = "evring_accept_failures_total";
pub const CROSS_SHARD_MESSAGES: &str = "evring_cross_shard_messages_total";
pub const XREAD_WAITS: &str = "evring_xread_waits";

/// The type of a metric, as Prometheus names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The name of the type in `# TYPE` lines and docs/OPERATIONS.md.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Every metric evringd emits: name, type, help text.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        APPENDS_TOTAL,
        Kind::Counter,
        "Acknowledged APPEND requests.",
    ),
    (EVENTS_APPENDED_TOTAL, Kind::Counter, "Acknowledged events."),
    (
        APPEND_BYTES_TOTAL,
        Kind::Counter,
        "Data and metadata bytes of acknowledged events.",
    ),
    (
        FRAMES_WRITTEN_TOTAL,
        Kind::Counter,
        "Journal frames made durable (the partition's stream and key-value journals).",
    ),
    (
        JOURNAL_BYTES_WRITTEN_TOTAL,
        Kind::Counter,
        "Journal bytes written, frames padded to 4 KiB.",
    ),
    (
        FLUSH_LATENCY_SECONDS,
        Kind::Histogram,
        "Seconds from a frame's submission to its durability (write, or write and fdatasync).",
    ),
    (
        FRAMES_IN_FLIGHT,
        Kind::Gauge,
        "Journal frames being written (of the partition's journal that changed it last).",
    ),
    (
        PARTITION_POISONED,
        Kind::Gauge,
        "1 after a write or fdatasync error in one of the partition's journals.",
    ),
    (
        RING_EVENTS,
        Kind::Gauge,
        "Events held in the partition's ring.",
    ),
    (
        RING_BYTES,
        Kind::Gauge,
        "Payload bytes held in the partition's ring.",
    ),
    (
        RING_EVICTED,
        Kind::Counter,
        "Events that left the partition's ring since start (capacity reached, or cleared for an event larger than its arena); AGGREGATE refuses windows before them.",
    ),
    (CONNECTIONS, Kind::Gauge, "Open client connections."),
    (ERRORS_TOTAL, Kind::Counter, "Error replies, by wire code."),
    (SNAPSHOTS, Kind::Counter, "Partition snapshots written."),
    (
        SNAPSHOT_FAILURES,
        Kind::Counter,
        "Failed snapshots of the partition's streams or models; retried with backoff.",
    ),
    (
        SNAPSHOT_SECONDS,
        Kind::Histogram,
        "Seconds to take one partition snapshot (copy, encode, write, fsync).",
    ),
    (
        SNAPSHOT_LSN,
        Kind::Gauge,
        "LSN of the partition's newest snapshot.",
    ),
    (
        SEGMENT_PREPARE_FAILURES,
        Kind::Counter,
        "Failed attempts to prepare the next journal segment (a full disk: appends get error 20).",
    ),
    (
        CROSS_SHARD_MESSAGES,
        Kind::Counter,
        "Messages sent between shards: calls to a partition's owner, their replies, and events pushed to a subscriber's shard.",
    ),
    (
        ACCEPT_FAILURES,
        Kind::Counter,
        "Failed accepts of client connections (out of file descriptors: raise the open-file limit).",
    ),
    (
        XREAD_WAITS,
        Kind::Gauge,
        "Blocked XREADs (RESP port) waiting for entries of the partition's streams.",
    ),
];

/// Histogram buckets of the flush latency (write + fdatasync of one frame), in seconds.
const FLUSH_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// Histogram buckets of a snapshot's duration (copy, encode, write, fsync), in seconds.
const SNAPSHOT_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Connections served at once; more are answered `503` and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// The most bytes a request head (request line and headers) may take; more: `431`.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The time a connection has to send its whole request head; then `408`.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// The time a connection has to take the whole response.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(FLUSH_LATENCY_SECONDS.into()), FLUSH_BUCKETS)
        .expect("flush buckets are non-empty")
        .set_buckets_for_metric(Matcher::Full(SNAPSHOT_SECONDS.into()), SNAPSHOT_BUCKETS)
        .expect("snapshot buckets are non-empty")
        .build_recorder()
}

/// Gives the current recorder every metric's help text.
fn describe_all() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Installs the global recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests): then ours only renders
            // what it records, which is nothing; the handle still answers.
            let _ = metrics::set_global_recorder(recorder);
            describe_all();
            handle
        })
        .clone()
}

/// Serves the Prometheus text format on `addr` from background threads (see the module
/// documentation for the limits).
pub fn serve(addr: &str, handle: PrometheusHandle) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("evring-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors or similar: wait rather than spin.
                        tracing::debug!(error = %e, "metrics endpoint: accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    // A fresh socket's send buffer is empty: this short write does not block
                    // (and is bounded by its deadline if it did).
                    respond(
                        &stream,
                        "503 Service Unavailable",
                        &format!(
                            "more than {MAX_CONNECTIONS} metrics connections at once; retry\n"
                        ),
                        Instant::now() + Duration::from_millis(100),
                    );
                    continue;
                }
                let guard = ActiveGuard(active.clone());
                let handle = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("evring-metrics-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _guard = guard;
                        serve_connection(stream, &handle);
                    });
                if let Err(e) = spawned {
                    // The closure (with the guard and the stream) was dropped: slot freed.
                    tracing::warn!(error = %e, "metrics endpoint: cannot start a thread");
                }
            }
        })?;
    Ok(bound)
}

/// Frees a connection slot when the connection's thread ends.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// The request line's verdict: `GET /metrics` (a query string is ignored) or why not.
fn classify(head: &[u8]) -> Verdict {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Verdict::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Verdict::BadRequest;
    };
    match parts.next() {
        Some(v) if v.starts_with("HTTP/") && parts.next().is_none() => {}
        None => {}
        _ => return Verdict::BadRequest,
    }
    if method.is_empty() || !target.starts_with('/') {
        return Verdict::BadRequest;
    }
    if method != "GET" {
        return Verdict::MethodNotAllowed;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        Verdict::Metrics
    } else {
        Verdict::NotFound
    }
}

/// Where the request head ends (after its empty line), if it has arrived.
fn head_end(head: &[u8]) -> Option<usize> {
    let crlf = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = head.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `head` (the bytes received so far) can begin an HTTP request: its first word, the
/// method, is made of token characters (RFC 9110). Binary bytes cannot.
fn can_start_http(head: &[u8]) -> bool {
    let method = head.split(|b| *b == b' ').next().unwrap_or(&[]);
    method
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// Reads one request head within the limits and answers it.
fn serve_connection(mut stream: TcpStream, handle: &PrometheusHandle) {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head_end(&head).is_none() {
        if !can_start_http(&head) {
            // Another protocol's bytes (an evring client sent here instead of the client
            // port): answer at once rather than wait for a head that never ends.
            respond(
                &stream,
                "400 Bad Request",
                "not an HTTP request; try GET /metrics\n",
                Instant::now() + WRITE_DEADLINE,
            );
            return;
        }
        let room = MAX_HEAD_BYTES - head.len();
        if room == 0 {
            respond(
                &stream,
                "431 Request Header Fields Too Large",
                &format!("the request head is limited to {MAX_HEAD_BYTES} bytes\n"),
                Instant::now() + WRITE_DEADLINE,
            );
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // A zero timeout means none to the kernel; an expired deadline answers at once.
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            respond(
                &stream,
                "408 Request Timeout",
                &format!(
                    "the request head must arrive within {} s\n",
                    HEAD_DEADLINE.as_secs()
                ),
                Instant::now() + WRITE_DEADLINE,
            );
            return;
        }
        let want = room.min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A timeout: the next turn finds the deadline passed and answers 408.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
    let deadline = Instant::now() + WRITE_DEADLINE;
    match classify(&head) {
        Verdict::Metrics => respond(&stream, "200 OK", &handle.render(), deadline),
        Verdict::NotFound => respond(&stream, "404 Not Found", "try GET /metrics\n", deadline),
        Verdict::MethodNotAllowed => respond(
            &stream,
            "405 Method Not Allowed",
            "only GET /metrics is served\n",
            deadline,
        ),
        Verdict::BadRequest => respond(
            &stream,
            "400 Bad Request",
            "not an HTTP request; try GET /metrics\n",
            deadline,
        ),
    }
}

/// Writes a whole response, giving up at `deadline`; the connection then closes.
fn respond(stream: &TcpStream, status: &str, body: &str, deadline: Instant) {
    let allow = if status.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = stream;
    for part in [head.as_bytes(), body.as_bytes()] {
        let mut rest = part;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || out.set_write_timeout(Some(left)).is_err() {
                return;
            }
            match out.write(rest) {
                Ok(0) => return,
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(classify(b"GET /metrics HTTP/1.1\r\n\r\n"), Verdict::Metrics);
        assert_eq!(classify(b"GET /metrics?x=1 HTTP/1.0\n\n"), Verdict::Metrics);
        assert_eq!(classify(b"GET /metrics\r\n\r\n"), Verdict::Metrics);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n\r\n"), Verdict::NotFound);
        assert_eq!(
            classify(b"GET /metricsx HTTP/1.1\r\n\r\n"),
            Verdict::NotFound
        );
        assert_eq!(
            classify(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Verdict::MethodNotAllowed
        );
        assert_eq!(classify(b"\xff\xfe\r\n\r\n"), Verdict::BadRequest);
        assert_eq!(classify(b"GET\r\n\r\n"), Verdict::BadRequest);
        assert_eq!(
            classify(b"GET metrics HTTP/1.1\r\n\r\n"),
            Verdict::BadRequest
        );
        assert_eq!(
            classify(b"GET /metrics HTTP/1.1 extra\r\n\r\n"),
            Verdict::BadRequest
        );
        assert!(can_start_http(b""));
        assert!(can_start_http(b"GE"));
        assert!(can_start_http(b"GET /metrics HTTP/1.1\r\n"));
        assert!(!can_start_http(b"\x1d\x00\x00\x00\x01"));
        assert!(!can_start_http(b"GET\r\n"));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET /\n\n"), Some(7));
    }

    #[test]
    fn every_metric_has_its_help_and_type_lines() {
        let recorder = recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            for &(name, kind, _) in METRICS {
                match kind {
                    Kind::Counter => metrics::counter!(name, "partition" => "0").increment(1),
                    Kind::Gauge => metrics::gauge!(name, "partition" => "0").set(1.0),
                    Kind::Histogram => metrics::histogram!(name, "partition" => "0").record(0.1),
                }
            }
        });
        let text = handle.render();
        for &(name, kind, help) in METRICS {
            assert!(
                text.contains(&format!("# HELP {name} {help}\n")),
                "{name} has its help line:\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} {}\n", kind.name())),
                "{name} is a {}:\n{text}",
                kind.name()
            );
        }
        // Every name this module declares is in METRICS.
        let source = include_str!("metrics.rs");
        for line in source.lines() {
            if let Some(rest) = line.strip_prefix("pub const ") {
                if let Some(value) = rest.split('"').nth(1).filter(|v| v.starts_with("evring_")) {
                    assert!(
                        METRICS.iter().any(|m| m.0 == value),
                        "{value} is missing from METRICS"
                    );
                }
            }
        }
    }
}
