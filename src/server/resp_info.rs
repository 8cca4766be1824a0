//! The RESP port's server commands: INFO and CONFIG (GET, SET, RESETSTAT, REWRITE, HELP),
//! with Redis 7.0's reply forms and error texts. INFO's sections are Redis's that evring has
//! something for (server, clients, persistence, stats, replication, commandstats,
//! errorstats, keyspace; the command and error counts: [`super::resp_stats`]); CONFIG
//! RESETSTAT starts every count again.
//!
//! CONFIG knows a few settings that Redis clients and stream test suites read or set
//! ([`SETTINGS`]): `stream-node-max-bytes` and `stream-node-max-entries` are accepted and
//! remembered for the server's life (shared by every shard); `stream-node-max-entries` is
//! the size of the nodes a `~` trim deletes whole (a stream's versions in runs of that many
//! from version 0: evring does not store streams in radix-tree nodes), and
//! `stream-node-max-bytes` changes nothing; `appendonly`, `appendfsync`, `save` and
//! `databases` report what evring does (every write is journaled durably before its reply)
//! and can only be "set" to the value they have.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::resp_commands::{wrong_arity, REDIS_VERSION};
use super::resp_conn::{RespRequest, DATABASES};
use super::route::Shard;

/// Redis's defaults for the stream node limits.
const STREAM_NODE_MAX_BYTES_DEFAULT: u64 = 4096;
const STREAM_NODE_MAX_ENTRIES_DEFAULT: u64 = 100;

/// What INFO and CONFIG read and set over the whole server (in [`super::route::Shared`]).
pub struct RespShared {
    started: Instant,
    /// Commands read on the RESP port, by shard (each shard adds to its own).
    commands: Box<[Counter]>,
    stream_node_max_bytes: AtomicU64,
    stream_node_max_entries: AtomicU64,
    /// Connections blocked in an XREAD now (INFO `blocked_clients`).
    pub(super) blocked: AtomicU64,
    /// INFO commandstats, errorstats and `total_error_replies`.
    pub(super) stats: super::resp_stats::Stats,
}

/// A counter on its own cache line: shards count without sharing lines.
#[derive(Default)]
#[repr(align(128))]
struct Counter(AtomicU64);

impl RespShared {
    pub fn new(shards: usize) -> RespShared {
        RespShared {
            started: Instant::now(),
            commands: (0..shards.max(1)).map(|_| Counter::default()).collect(),
            stream_node_max_bytes: AtomicU64::new(STREAM_NODE_MAX_BYTES_DEFAULT),
            stream_node_max_entries: AtomicU64::new(STREAM_NODE_MAX_ENTRIES_DEFAULT),
            blocked: AtomicU64::new(0),
            stats: super::resp_stats::Stats::new(
                shards,
                super::resp_streams::COMMANDS
                    .iter()
                    .chain(super::resp_ev::COMMANDS)
                    .copied(),
            ),
        }
    }

    /// `stream-node-max-entries` now (at least 1).
    pub(super) fn node_max_entries(&self) -> u64 {
        self.stream_node_max_entries.load(Ordering::Relaxed).max(1)
    }

    /// Counts a command read on `shard` (INFO's `total_commands_processed`).
    pub(super) fn count_command(&self, shard: usize) {
        if let Some(c) = self.commands.get(shard) {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn commands_processed(&self) -> u64 {
        self.commands
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// CONFIG RESETSTAT.
    fn reset_stats(&self) {
        for c in self.commands.iter() {
            c.0.store(0, Ordering::Relaxed);
        }
        self.stats.reset();
    }
}

/// Runs INFO or CONFIG, and answers it.
pub(super) async fn run(shard: &Rc<Shard>, req: &RespRequest, name: &[u8]) -> Result<(), String> {
    match name {
        b"INFO" => info(shard, req).await,
        b"CONFIG" => config(shard, req),
        _ => unreachable!("not a server command"),
    }
}

/// The sections INFO without arguments (or `default`) gives, in Redis's order: all but
/// `commandstats` (which `all` and `everything` add, as in Redis 7.0).
const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "persistence",
    "stats",
    "replication",
    "errorstats",
    "keyspace",
];

/// INFO [section …]: Redis's text (`# Section` headers, `field:value` lines ended by
/// `\r\n`, a blank line between sections) as a verbatim string.
async fn info(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut all = false;
    if req.args.len() == 1 {
        wanted.extend(DEFAULT_SECTIONS.iter().map(|s| s.to_string()));
    }
    for arg in &req.args[1..] {
        let section = String::from_utf8_lossy(arg).to_ascii_lowercase();
        match section.as_str() {
            "default" => wanted.extend(DEFAULT_SECTIONS.iter().map(|s| s.to_string())),
            "all" | "everything" => all = true,
            _ => {
                wanted.insert(section);
            }
        }
    }
    let want = |s: &str| all || wanted.contains(s);
    let shared = &shard.shared;
    let mut text = String::new();
    let mut add = |title: &str, body: String| {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        text.push_str("# ");
        text.push_str(title);
        text.push_str("\r\n");
        text.push_str(&body);
    };
    if want("server") {
        let uptime = shared.resp.started.elapsed().as_secs();
        add(
            "Server",
            format!(
                "redis_version:{REDIS_VERSION}\r\n\
                 redis_mode:standalone\r\n\
                 os:{}\r\n\
                 arch_bits:{}\r\n\
                 process_id:{}\r\n\
                 tcp_port:{}\r\n\
                 uptime_in_seconds:{uptime}\r\n\
                 uptime_in_days:{}\r\n\
                 evring_version:{}\r\n",
                os_name(),
                usize::BITS,
                std::process::id(),
                shared.resp_addr.map_or(0, |a| a.port()),
                uptime / 86_400,
                env!("CARGO_PKG_VERSION"),
            ),
        );
    }
    if want("clients") {
        add(
            "Clients",
            format!(
                "connected_clients:{}\r\nblocked_clients:{}\r\nmaxclients:{}\r\n",
                shared.connections.load(Ordering::Acquire),
                shared.resp.blocked.load(Ordering::Acquire),
                shared.config.max_connections
            ),
        );
    }
    if want("persistence") {
        add(
            "Persistence",
            "loading:0\r\nasync_loading:0\r\naof_enabled:1\r\nappendfsync:always\r\n".into(),
        );
    }
    if want("stats") {
        add(
            "Stats",
            format!(
                "total_commands_processed:{}\r\ntotal_error_replies:{}\r\n",
                shared.resp.commands_processed(),
                shared.resp.stats.total_error_replies()
            ),
        );
    }
    if want("replication") {
        add(
            "Replication",
            "role:master\r\nconnected_slaves:0\r\n".into(),
        );
    }
    if want("commandstats") {
        add("Commandstats", shared.resp.stats.commandstats());
    }
    if want("errorstats") {
        add("Errorstats", shared.resp.stats.errorstats());
    }
    if want("keyspace") {
        let counts = super::resp_keys::key_counts(shard).await?;
        let mut body = String::new();
        for (db, n) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
            body.push_str(&format!("db{db}:keys={n},expires=0,avg_ttl=0\r\n"));
        }
        add("Keyspace", body);
    }
    req.answer(|r| {
        r.verbatim("txt", &text);
    });
    Ok(())
}

/// `uname -srm` as Redis's INFO writes it (`Linux 6.1.0 x86_64`).
fn os_name() -> String {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{f}"))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let system = read("ostype").unwrap_or_else(|| std::env::consts::OS.to_string());
    let release = read("osrelease").unwrap_or_default();
    format!("{system} {release} {}", std::env::consts::ARCH)
}

/// One setting CONFIG knows.
#[derive(Debug)]
struct Setting {
    name: &'static str,
    value: Value,
}

#[derive(Debug)]
enum Value {
    /// `stream-node-max-bytes`: a memory value (`4096`, `4kb`, `1mb`, …).
    NodeMaxBytes,
    /// `stream-node-max-entries`: an integer.
    NodeMaxEntries,
    /// What evring does; SET accepts this value alone (`why`: the reason).
    Fixed(&'static str, &'static str),
    /// `databases`: [`DATABASES`], immutable as in Redis.
    Databases,
}

/// The settings CONFIG GET and SET know.
const SETTINGS: &[Setting] = &[
    Setting {
        name: "stream-node-max-bytes",
        value: Value::NodeMaxBytes,
    },
    Setting {
        name: "stream-node-max-entries",
        value: Value::NodeMaxEntries,
    },
    Setting {
        name: "appendonly",
        value: Value::Fixed(
            "yes",
            "evring journals every write durably before it replies; only 'yes' is accepted",
        ),
    },
    Setting {
        name: "appendfsync",
        value: Value::Fixed(
            "always",
            "evring journals every write durably before it replies; only 'always' is accepted",
        ),
    },
    Setting {
        name: "save",
        value: Value::Fixed("", "evring writes no RDB files; only '' is accepted"),
    },
    Setting {
        name: "databases",
        value: Value::Databases,
    },
];

fn lookup(name: &[u8]) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

fn current(shard: &Shard, s: &Setting) -> String {
    let resp = &shard.shared.resp;
    match s.value {
        Value::NodeMaxBytes => resp
            .stream_node_max_bytes
            .load(Ordering::Relaxed)
            .to_string(),
        Value::NodeMaxEntries => resp
            .stream_node_max_entries
            .load(Ordering::Relaxed)
            .to_string(),
        Value::Fixed(v, _) => v.to_string(),
        Value::Databases => DATABASES.to_string(),
    }
}

/// The checks Redis makes on a CONFIG command before it runs (also while queueing it in a
/// transaction): the subcommand exists and has its arity. Returns the subcommand,
/// upper-cased.
pub(super) fn config_check(args: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    if args.len() < 2 {
        return Err(wrong_arity(b"config"));
    }
    let sub = args[1].to_ascii_uppercase();
    let arity: i64 = match sub.as_slice() {
        b"GET" => -3,
        b"SET" => -4,
        b"RESETSTAT" | b"REWRITE" | b"HELP" => 2,
        _ => {
            let given: String = String::from_utf8_lossy(&args[1])
                .chars()
                .take(128)
                .collect();
            return Err(format!("unknown subcommand '{given}'. Try CONFIG HELP."));
        }
    };
    let n = args.len() as i64;
    if (arity > 0 && n != arity) || n < -arity {
        let mut full = b"config|".to_vec();
        full.extend_from_slice(&sub);
        return Err(wrong_arity(&full));
    }
    Ok(sub)
}

fn config(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let sub = config_check(&req.args)?;
    match sub.as_slice() {
        b"GET" => config_get(shard, req),
        b"SET" => config_set(shard, req)?,
        b"RESETSTAT" => {
            shard.shared.resp.reset_stats();
            req.answer(|r| {
                r.ok();
            });
        }
        b"REWRITE" => {
            return Err(
                "CONFIG REWRITE is not supported: evring's configuration is its TOML \
                        file (evringd --config); edit it and restart the server"
                    .into(),
            )
        }
        _ => {
            let lines = [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value>.",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
                "REWRITE",
                "    Not supported: evring's configuration is its TOML file.",
                "HELP",
                "    Print this help.",
            ];
            super::resp_commands::help(req, &lines);
        }
    }
    Ok(())
}

/// CONFIG GET pattern [pattern …]: each setting once, under the name asked for when a
/// pattern without `*`, `?` or `[` names it, else under its own name.
fn config_get(shard: &Rc<Shard>, req: &RespRequest) {
    let mut found: Vec<(String, &'static Setting)> = Vec::new();
    let seen =
        |found: &[(String, &Setting)], s: &Setting| found.iter().any(|(_, f)| f.name == s.name);
    for pattern in &req.args[2..] {
        if !pattern.iter().any(|b| matches!(b, b'*' | b'?' | b'[')) {
            if let Some(s) = lookup(pattern).filter(|s| !seen(&found, s)) {
                found.push((String::from_utf8_lossy(pattern).into_owned(), s));
            }
            continue;
        }
        for s in SETTINGS {
            if !seen(&found, s) && super::resp_keys::string_match(pattern, s.name.as_bytes(), true)
            {
                found.push((s.name.to_string(), s));
            }
        }
    }
    let values: Vec<(String, String)> = found
        .into_iter()
        .map(|(name, s)| (name, current(shard, s)))
        .collect();
    req.answer(|r| {
        r.map_len(values.len());
        for (name, value) in &values {
            r.bulk(name).bulk(value);
        }
    });
}

/// Redis's `memtoull`: digits and an optional unit (`b`, `k`, `kb`, `m`, `mb`, `g`, `gb`,
/// any case). `Err(true)`: not a memory value; `Err(false)`: beyond `u64`.
fn parse_memory(v: &[u8]) -> Result<u64, bool> {
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    let unit = v[digits..].to_ascii_lowercase();
    let mul: u64 = match unit.as_slice() {
        b"" | b"b" => 1,
        b"k" => 1000,
        b"kb" => 1024,
        b"m" => 1000 * 1000,
        b"mb" => 1024 * 1024,
        b"g" => 1000 * 1000 * 1000,
        b"gb" => 1024 * 1024 * 1024,
        _ => return Err(true),
    };
    let n: u64 = if digits == 0 {
        0
    } else {
        std::str::from_utf8(&v[..digits])
            .expect("ASCII digits")
            .parse()
            .map_err(|_| false)?
    };
    n.checked_mul(mul).ok_or(false)
}

/// A new value for `s`, or why not (Redis's words).
fn parse_value(s: &Setting, v: &[u8]) -> Result<Option<u64>, String> {
    const BOUNDS: &str = "argument must be between 0 and 9223372036854775807 inclusive";
    match s.value {
        Value::NodeMaxBytes => match parse_memory(v) {
            Ok(n) if n <= i64::MAX as u64 => Ok(Some(n)),
            Ok(_) | Err(false) => Err(BOUNDS.into()),
            Err(true) => Err("argument must be a memory value".into()),
        },
        Value::NodeMaxEntries => match crate::resp::string2ll(v) {
            Some(n) if n >= 0 => Ok(Some(n as u64)),
            Some(_) => Err(BOUNDS.into()),
            None => Err("argument couldn't be parsed into an integer".into()),
        },
        Value::Fixed(current, why) => {
            if v.eq_ignore_ascii_case(current.as_bytes()) {
                Ok(None)
            } else {
                Err(why.into())
            }
        }
        Value::Databases => Err("can't set immutable config".into()),
    }
}

/// CONFIG SET name value [name value …]: every value checked before any is set.
fn config_set(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() % 2 == 1 {
        return Err("syntax error".into());
    }
    let failed = |name: &str, why: &str| {
        format!("CONFIG SET failed (possibly related to argument '{name}') - {why}")
    };
    let mut chosen: Vec<&'static Setting> = Vec::new();
    for pair in args[2..].chunks(2) {
        let given = String::from_utf8_lossy(&pair[0]).into_owned();
        let Some(s) = lookup(&pair[0]) else {
            return Err(format!(
                "Unknown option or number of arguments for CONFIG SET - '{given}'"
            ));
        };
        if matches!(s.value, Value::Databases) {
            return Err(failed(&given, "can't set immutable config"));
        }
        if chosen.iter().any(|c| c.name == s.name) {
            return Err(failed(&given, "duplicate parameter"));
        }
        chosen.push(s);
    }
    let mut updates = Vec::new();
    for (s, pair) in chosen.iter().zip(args[2..].chunks(2)) {
        match parse_value(s, &pair[1]) {
            Ok(Some(n)) => updates.push((*s, n)),
            Ok(None) => {}
            Err(why) => return Err(failed(s.name, &why)),
        }
    }
    let resp = &shard.shared.resp;
    for (s, n) in updates {
        match s.value {
            Value::NodeMaxBytes => resp.stream_node_max_bytes.store(n, Ordering::Relaxed),
            Value::NodeMaxEntries => resp.stream_node_max_entries.store(n, Ordering::Relaxed),
            Value::Fixed(..) | Value::Databases => {}
        }
    }
    req.answer(|r| {
        r.ok();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values_read_as_redis_reads_them() {
        assert_eq!(parse_memory(b"4096"), Ok(4096));
        assert_eq!(parse_memory(b"4kb"), Ok(4096));
        assert_eq!(parse_memory(b"4K"), Ok(4000));
        assert_eq!(parse_memory(b"1MB"), Ok(1 << 20));
        assert_eq!(parse_memory(b"2g"), Ok(2_000_000_000));
        assert_eq!(parse_memory(b""), Ok(0));
        assert_eq!(parse_memory(b"-1"), Err(true));
        assert_eq!(parse_memory(b"1x"), Err(true));
        assert_eq!(parse_memory(b"99999999999999999999"), Err(false));
        assert_eq!(parse_memory(b"18446744073709551615gb"), Err(false));
    }

    #[test]
    fn config_subcommands_are_checked_as_redis_checks_them() {
        let args = |a: &[&str]| a.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            config_check(&args(&["config"])).unwrap_err(),
            "wrong number of arguments for 'config' command"
        );
        assert_eq!(
            config_check(&args(&["config", "get"])).unwrap_err(),
            "wrong number of arguments for 'config|get' command"
        );
        assert_eq!(
            config_check(&args(&["config", "set", "a"])).unwrap_err(),
            "wrong number of arguments for 'config|set' command"
        );
        assert_eq!(
            config_check(&args(&["config", "Nope"])).unwrap_err(),
            "unknown subcommand 'Nope'. Try CONFIG HELP."
        );
        assert_eq!(
            config_check(&args(&["config", "resetstat", "x"])).unwrap_err(),
            "wrong number of arguments for 'config|resetstat' command"
        );
        assert_eq!(
            config_check(&args(&["config", "get", "*"])).unwrap(),
            b"GET"
        );
    }
}
