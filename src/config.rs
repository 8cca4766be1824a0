//! One `Config` for `evringd`: embedded defaults < TOML file (`--config`) < `EVRING_*`
//! environment variables < command-line flags.
//!
//! Merging happens on TOML tables so every layer uses the same key names: `listen` in the
//! file, `EVRING_LISTEN` in the environment, `--listen` (or `--set listen=...`) on the command
//! line. An environment or `--set` value is read as a TOML value when it parses as one
//! (`8`, `true`) and as a string otherwise (`127.0.0.1:7070`). Unknown keys are errors, so a
//! typo never silently falls back to a default. `evringd --print-config` prints the result.
//!
//! The environment layer reads every `EVRING_<KEY>` variable except those in [`ENV_NOT_CONFIG`]:
//! the `evring` CLI's `EVRING_ADDR` and `EVRING_TOKEN` (so a shell that exports them for the
//! CLI can still start evringd) and the log filter `EVRING_LOG`. Any other `EVRING_*` name
//! that is not a key is an error naming the variable (a misspelt setting).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::constants::{FRAME_BYTES_MAX_DEFAULT, IN_FLIGHT_FRAMES_DEFAULT, SEGMENT_BYTES_DEFAULT};

/// Every setting of `evringd`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory: manifest and one journal directory per partition.
    pub data_dir: PathBuf,
    /// Client listener (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// Prometheus text endpoint (`host:port`; empty disables it).
    pub metrics_listen: String,
    /// RESP (Redis protocol) listener (`host:port`; port 0 picks a free port; empty
    /// disables it), served on every shard like `listen`.
    pub resp_listen: String,
    /// Write the bound addresses to this file once ready (empty: don't).
    pub addresses_file: String,
    /// Partition count at first start (0 = one per shard); kept in the manifest after that.
    pub partitions: u32,
    /// Pin each shard to one CPU.
    pub pin_cpus: bool,
    /// Shards (executor threads) to run; 0 = one per CPU but one, so a CPU is left for the
    /// kernel's work on evringd's behalf (network stack, io_uring workers that complete the
    /// durable writes). Never more than the partition count.
    pub shards: u32,
    /// Token clients must present in HELLO (empty: no authentication).
    pub auth_token: String,
    /// Largest frame a client may send, in bytes.
    pub request_frame_bytes_max: u32,
    /// Once a request frame's first byte has arrived, the rest must arrive within this many
    /// milliseconds, or the connection gets error 1 and is closed (slow-drip clients). For a
    /// frame whose first bytes came with the frame before it, from when the server went on
    /// reading it.
    pub frame_timeout_ms: u32,
    /// A new connection must complete HELLO within this many milliseconds of being accepted,
    /// or it gets error 5 and is closed (connections that never authenticate cannot hold
    /// connection slots).
    pub hello_timeout_ms: u32,
    /// Open client connections at most (over the whole server).
    pub max_connections: u32,
    /// Requests in flight per connection; the server stops reading beyond it.
    pub max_in_flight_per_connection: u32,
    /// Subscriptions per connection.
    pub max_subscriptions_per_connection: u32,
    /// Reply and push bytes buffered per connection: beyond it the server stops reading the
    /// connection's requests until the client reads its replies, and drops subscriptions of
    /// the connection as too slow.
    pub connection_buffer_bytes: u32,
    /// Events per stream read reply at most.
    pub max_read_count: u32,
    /// Bytes of events per stream read reply at most (a reply always holds one event); the
    /// client reads on from the next version.
    pub max_read_bytes: u32,
    /// Consumer-group entries per partition at most — pending entries, consumers and
    /// groups, over every stream: a read that would pend more delivers fewer, and a change
    /// that adds any to a full partition is refused until entries are acknowledged or
    /// consumers or groups deleted (docs/OPERATIONS.md).
    pub max_group_entries: u64,
    /// Appends remembered per partition for idempotent retries (by event id).
    pub idempotency_window: u32,
    /// Journal segment file size in bytes.
    pub segment_bytes: u64,
    /// Largest group-commit frame in bytes (multiple of 4096).
    pub journal_frame_bytes_max: u32,
    /// Frames written at once per partition.
    pub in_flight_frames: u32,
    /// While a partition has frames in flight, the next frame is started only once it holds
    /// this many bytes (or is full); with none in flight it starts at once.
    pub pipeline_min_bytes: u32,
    /// Events kept in memory per partition for reads and aggregations.
    pub ring_capacity_events: u32,
    /// Payload bytes kept in memory per partition.
    pub ring_capacity_bytes: u64,
    /// How long an idle shard polls for I/O completions before it sleeps, in µs. Polling
    /// keeps fdatasync completions from waiting for a timer tick; 0 saves CPU when the
    /// server shares its cores with other work.
    pub spin_before_park_us: u32,
    /// Snapshot a partition once this many events were published since its last snapshot
    /// (0: never by count).
    pub snapshot_every_events: u64,
    /// Snapshot a partition at most this many seconds after its last one if anything was
    /// published (0: never by time).
    pub snapshot_every_secs: u32,
    /// Snapshot files kept per partition (the newest ones).
    pub snapshot_keep: u32,
    /// Snapshots being written at once per shard.
    pub snapshot_max_jobs: u32,
    /// Take a snapshot of every partition on a clean stop.
    pub snapshot_on_shutdown: bool,
    /// Delete a partition's oldest journal segments once its segments exceed this many bytes
    /// (0: keep everything). Only segments a kept snapshot covers are ever deleted.
    pub retention_max_bytes: u64,
    /// Delete journal segments older than this many seconds (0: keep everything); same
    /// condition.
    pub retention_max_age_secs: u64,
    /// How a journal frame is made durable: "dsync" (segment files opened with O_DSYNC, one
    /// operation per frame) or "fdatasync" (a write, then an fdatasync).
    pub journal_write_mode: String,
    /// Who issues a journal frame's write to the disk: "workers" (io_uring's worker threads,
    /// on the CPUs no shard is pinned to) or "inline" (the shard's own thread).
    pub journal_submit: String,
    /// One extra client port per shard, advertised in HELLO so shard-aware clients send each
    /// partition's requests straight to its owning shard: "off", "auto" (a free port per shard
    /// on the `listen` host) or a base port N (shard i listens on N + i).
    pub shard_ports: String,
    /// Serve AGGREGATE and the ring part of a subscription's catch-up through the
    /// partition's stable view on the shard that received the request (true), or through the
    /// partition's owning shard (false: a cross-shard call, as before views; for comparison).
    pub views: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./evring-data"),
            listen: "127.0.0.1:7070".into(),
            metrics_listen: "127.0.0.1:9470".into(),
            resp_listen: "127.0.0.1:6380".into(),
            addresses_file: String::new(),
            partitions: 0,
            pin_cpus: true,
            shards: 0,
            auth_token: String::new(),
            request_frame_bytes_max: 4 * 1024 * 1024,
            frame_timeout_ms: 10_000,
            hello_timeout_ms: 5_000,
            max_connections: 1024,
            max_in_flight_per_connection: 256,
            max_subscriptions_per_connection: 16,
            connection_buffer_bytes: 8 * 1024 * 1024,
            max_read_count: 10_000,
            max_read_bytes: 1024 * 1024,
            max_group_entries: 1 << 20,
            idempotency_window: 100_000,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            journal_frame_bytes_max: FRAME_BYTES_MAX_DEFAULT as u32,
            in_flight_frames: IN_FLIGHT_FRAMES_DEFAULT as u32,
            pipeline_min_bytes: crate::constants::PIPELINE_MIN_BYTES_DEFAULT as u32,
            ring_capacity_events: 1 << 18,
            ring_capacity_bytes: 64 * 1024 * 1024,
            spin_before_park_us: crate::shard::SPIN_BEFORE_PARK.as_micros() as u32,
            journal_write_mode: "dsync".into(),
            journal_submit: "workers".into(),
            shard_ports: "off".into(),
            views: true,
            snapshot_every_events: 1_000_000,
            snapshot_every_secs: 300,
            snapshot_keep: 2,
            snapshot_max_jobs: 1,
            snapshot_on_shutdown: true,
            retention_max_bytes: 0,
            retention_max_age_secs: 0,
        }
    }
}

/// `EVRING_*` environment variables that are not evringd configuration keys, and that the
/// environment layer passes over: the `evring` CLI's server address and token, the log
/// filter (read by the binary), and the tests' switches that make the network ring and the
/// journal's ring start as on an older kernel ([`crate::net::TEST_ENV`],
/// [`crate::journal::uring::TEST_ENV`]).
pub const ENV_NOT_CONFIG: &[&str] = &[
    "EVRING_ADDR",
    "EVRING_TOKEN",
    "EVRING_LOG",
    crate::net::TEST_ENV,
    crate::journal::uring::TEST_ENV,
];

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: {message}")]
    Value { origin: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Merges the layers. `file` is the `--config` path; `env` the process environment
    /// (`EVRING_*` variables are used); `overrides` are `key=value` pairs from the command line.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let from_file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
            merge(
                &mut table,
                from_file,
                &format!("config file {}", path.display()),
            )?;
        }
        let mut from_env = toml::Table::new();
        let mut names: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with("EVRING_"))
            .filter(|(name, _)| !ENV_NOT_CONFIG.contains(&name.as_str()))
            .collect();
        names.sort();
        for (name, value) in names {
            let key = name["EVRING_".len()..].to_ascii_lowercase();
            let renamed = RENAMED_KEYS.iter().any(|(old, _)| *old == key);
            if !table.contains_key(&key) && !renamed {
                let hint = match closest_key(&table, &key) {
                    Some(k) => format!("did you mean EVRING_{}? ", k.to_ascii_uppercase()),
                    None => String::new(),
                };
                return Err(ConfigError::Value {
                    origin: format!("environment variable {name}"),
                    message: format!(
                        "not an evringd setting; {hint}evringd reads EVRING_<KEY> for the keys \
                         `evringd --print-config` lists, and ignores {}; fix or unset it",
                        ENV_NOT_CONFIG.join(", ")
                    ),
                });
            }
            from_env.insert(key, scalar(&value));
        }
        merge(&mut table, from_env, "environment (EVRING_*)")?;
        let mut from_flags = toml::Table::new();
        for (key, value) in overrides {
            from_flags.insert(key.replace('-', "_"), scalar(value));
        }
        merge(&mut table, from_flags, "command line")?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The merged configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.max_read_bytes == 0 {
            return bad("max_read_bytes must be > 0".into());
        }
        if self.frame_timeout_ms == 0 {
            return bad("frame_timeout_ms must be > 0".into());
        }
        if self.hello_timeout_ms == 0 {
            return bad("hello_timeout_ms must be > 0".into());
        }
        if self.request_frame_bytes_max < 64 {
            return bad("request_frame_bytes_max must be at least 64".into());
        }
        if self.max_connections == 0 || self.max_in_flight_per_connection == 0 {
            return bad("max_connections and max_in_flight_per_connection must be > 0".into());
        }
        if self.ring_capacity_events == 0 {
            return bad("ring_capacity_events must be > 0".into());
        }
        if self.listen.is_empty() {
            return bad("listen must be set (host:port)".into());
        }
        self.write_mode()?;
        self.journal_submit_inline()?;
        self.shard_ports()?;
        Ok(())
    }

    /// `shard_ports` parsed: `None` for "off", `Some(0)` for "auto", else the base port.
    pub fn shard_ports(&self) -> Result<Option<u16>, ConfigError> {
        match self.shard_ports.as_str() {
            "off" => Ok(None),
            "auto" => Ok(Some(0)),
            other => match other.parse::<u16>() {
                Ok(base) if base > 0 => Ok(Some(base)),
                _ => Err(ConfigError::Invalid(format!(
                    "shard_ports must be \"off\", \"auto\" or a base port (1-65535), not \
                     {other:?}"
                ))),
            },
        }
    }

    /// `journal_submit` parsed: whether the shards issue journal writes themselves.
    pub fn journal_submit_inline(&self) -> Result<bool, ConfigError> {
        match self.journal_submit.as_str() {
            "workers" => Ok(false),
            "inline" => Ok(true),
            other => Err(ConfigError::Invalid(format!(
                "journal_submit must be \"workers\" or \"inline\", not {other:?}"
            ))),
        }
    }

    /// `journal_write_mode` parsed.
    pub fn write_mode(&self) -> Result<crate::journal::WriteMode, ConfigError> {
        match self.journal_write_mode.as_str() {
            "dsync" => Ok(crate::journal::WriteMode::Dsync),
            "fdatasync" => Ok(crate::journal::WriteMode::Fdatasync),
            other => Err(ConfigError::Invalid(format!(
                "journal_write_mode must be \"dsync\" or \"fdatasync\", not {other:?}"
            ))),
        }
    }
}

/// The key of `table` nearest to `key` (at most two edits away), for a "did you mean".
fn closest_key<'a>(table: &'a toml::Table, key: &str) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    table
        .keys()
        .map(|k| (distance(k, key), k.as_str()))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn scalar(value: &str) -> toml::Value {
    let probe = format!("v = {value}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.into())),
        Err(_) => toml::Value::String(value.into()),
    }
}

/// Keys that were renamed: (old, new). The old name keeps working, with a warning.
pub const RENAMED_KEYS: &[(&str, &str)] = &[
    ("max_frame_bytes", "request_frame_bytes_max"),
    ("frame_bytes_max", "journal_frame_bytes_max"),
];

/// The key `key` stands for now, warning when it is an old name.
fn current_key(key: String, origin: &str) -> String {
    match RENAMED_KEYS.iter().find(|(old, _)| *old == key) {
        Some((old, new)) => {
            tracing::warn!(
                "{origin}: setting {old:?} is now called {new:?}; the old name still works, \
                 but rename it"
            );
            new.to_string()
        }
        None => key,
    }
}

fn merge(base: &mut toml::Table, layer: toml::Table, origin: &str) -> Result<(), ConfigError> {
    for (key, value) in layer {
        let key = current_key(key, origin);
        let Some(slot) = base.get_mut(&key) else {
            return Err(ConfigError::Value {
                origin: origin.into(),
                message: format!("unknown setting {key:?}"),
            });
        };
        // Integers given where a string is expected (or the reverse) are coerced through
        // their text form so `EVRING_LISTEN=7070`-like inputs get a type error, not a panic.
        let value = match (&*slot, value) {
            (toml::Value::String(_), toml::Value::Integer(i)) => toml::Value::String(i.to_string()),
            (toml::Value::String(_), toml::Value::Boolean(b)) => toml::Value::String(b.to_string()),
            (toml::Value::String(_), toml::Value::Float(f)) => toml::Value::String(f.to_string()),
            (_, v) => v,
        };
        if std::mem::discriminant(&*slot) != std::mem::discriminant(&value) {
            return Err(ConfigError::Value {
                origin: origin.into(),
                message: format!(
                    "setting {key:?} wants a {} but got {value}",
                    slot.type_str()
                ),
            });
        }
        *slot = value;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("evring.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\npartitions = 3\nmax_connections = 5\n",
        )
        .unwrap();
        let env = vec![
            kv("EVRING_PARTITIONS", "4"),
            kv("EVRING_LISTEN", "127.0.0.1:2"),
        ];
        let flags = vec![kv("listen", "127.0.0.1:3")];
        let c = Config::load(Some(&file), env, &flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3");
        assert_eq!(c.partitions, 4);
        assert_eq!(c.max_connections, 5);
        assert_eq!(c.segment_bytes, SEGMENT_BYTES_DEFAULT);
    }

    #[test]
    fn renamed_keys_still_work_under_their_old_names_in_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("evring.toml");
        std::fs::write(&file, "max_frame_bytes = 65536\n").unwrap();
        let env = vec![kv("EVRING_FRAME_BYTES_MAX", "131072")];
        let c = Config::load(Some(&file), env, &[]).unwrap();
        assert_eq!(c.request_frame_bytes_max, 65536);
        assert_eq!(c.journal_frame_bytes_max, 131072);
        let c = Config::load(None, vec![], &[kv("max-frame-bytes", "4096")]).unwrap();
        assert_eq!(c.request_frame_bytes_max, 4096);
        // The printed configuration uses the new names.
        assert!(c.to_toml().contains("request_frame_bytes_max"));
        assert!(!c.to_toml().contains("\nmax_frame_bytes"));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let err = Config::load(None, vec![kv("EVRING_LISTN", "x")], &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("EVRING_LISTN: not an evringd setting")
                && err.to_string().contains("did you mean EVRING_LISTEN?"),
            "{err}"
        );
        let err = Config::load(None, vec![], &[kv("partitions", "many")]).unwrap_err();
        assert!(err.to_string().contains("partitions"), "{err}");
    }

    #[test]
    fn the_cli_variables_and_the_log_filter_are_not_settings() {
        let env = vec![
            kv("EVRING_ADDR", "10.0.0.1:7070"),
            kv("EVRING_TOKEN", "secret"),
            kv("EVRING_LOG", "debug"),
            kv("EVRING_PARTITIONS", "3"),
        ];
        let c = Config::load(None, env, &[]).unwrap();
        assert_eq!(c.partitions, 3);
        assert_eq!(
            c.auth_token, "",
            "EVRING_TOKEN is the CLI's, not auth_token"
        );
        assert_eq!(c.listen, Config::default().listen);
    }

    #[test]
    fn printed_config_reloads_to_the_same_config() {
        let c = Config::default();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, c.to_toml()).unwrap();
        assert_eq!(Config::load(Some(&file), vec![], &[]).unwrap(), c);
    }
}
