//! INFO's `commandstats` and `errorstats` sections and its `total_error_replies`, counted as
//! Redis 7.0 counts them (`call()`, `rejectCommand`, `afterErrorReply` in its `server.c` and
//! `networking.c`), over the whole server.
//!
//! ## What is counted
//!
//! Every reply to a command goes through [`super::resp_conn::RespRequest::answer`] (or
//! `answer_bytes`), which hands it to [`Stats::record`] with what the request was marked:
//!
//! - a command answered without an error: one call of it, with the time it took (`usec`:
//!   from when it started to run until its reply was ready — for a blocking command that
//!   includes the wait, for a write the wait until it is durable; a command answered as it is
//!   read, such as PING, takes 0);
//! - answered with an error: a *rejected* call if it was refused before it ran (marked
//!   [`Mark::Rejected`]: NOAUTH, refused while queueing in MULTI, EXEC refused with
//!   CROSSSLOT, not run because the server stops; or it fails Redis's pre-run checks, an
//!   unknown subcommand or a wrong number of arguments), else a call that *failed*. A blocked
//!   command that is answered with an error counts once, as a failed call, when answered;
//! - a `+QUEUED` reply ([`Mark::Uncounted`]) counts nothing: the command counts when EXEC
//!   runs it, on its own reply inside EXEC's array (EXEC itself counts one call, failed only
//!   if EXEC's own reply is an error: EXECABORT, EXEC without MULTI).
//!
//! A command is known by its lower-case name, a container's subcommand as Redis names it
//! (`config|get`, `xinfo|stream`): every command in the port's command lists
//! ([`super::resp_streams::COMMANDS`], `resp_ev::COMMANDS`), so a command added there is
//! counted with no change here, and the subcommands Redis 7.0 has of the containers among
//! them ([`SUBCOMMANDS`]). An unknown command or subcommand counts no call (Redis has no
//! entry to count it on), but its error counts. Every error reply counts in
//! `total_error_replies` and under its prefix in `errorstats` (the first word after `-`
//! when the first 32 bytes have a space, else `ERR`), protocol errors too.
//!
//! ## Cost on the hot path
//!
//! Each shard counts in its own table of counters, one slot per command (an index into the
//! sorted name table: one comparison when the shard's last command was the same one, else a
//! binary search of short names), in cache lines no other shard writes. The time a command
//! takes costs two reads of the monotonic clock (`Instant::now`) when it runs as a task; one
//! answered as it is read (PING, …) reads none; an XADD placed as it is read
//! ([`super::placed`]) shares its start reading with the requests the same receive brought
//! and its end reading with the appends its partition's completer answers with it
//! ([`super::conn::LazyClock`]), so its `usec` counts from the receive to the answer.
//! Only the shard's own thread writes its table (a request is answered on the shard that read
//! it), so an increment is a relaxed load and store, not a locked add. CONFIG RESETSTAT,
//! which may run on any shard, therefore does not write the counters: it records what they
//! sum to as a baseline that INFO subtracts. Errors are rare: each shard keeps its error
//! counts by prefix behind its own mutex, which RESETSTAT clears.
//!
//! ## The bound on error prefixes
//!
//! At most [`MAX_ERROR_PREFIXES`] distinct prefixes are kept (as Redis 7.4 bounds them;
//! 7.0 has no bound). When one more would be added (on a shard, or over the whole server
//! when INFO merges the shards' counts), the counts by prefix are dropped and errorstats
//! shows only `errorstat_ERRORSTATS_DISABLED:count=1` until CONFIG RESETSTAT;
//! `total_error_replies` and the commands' failed and rejected calls go on counting.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The most distinct error prefixes kept (Redis 7.4's `ERROR_STATS_NUMBER`).
pub(super) const MAX_ERROR_PREFIXES: usize = 128;

/// Redis 7.0's subcommands of the containers the port serves, with their arity (negative:
/// at least that many arguments, the command's name and the subcommand's included).
pub(super) const SUBCOMMANDS: &[(&str, &[(&str, i64)])] = &[
    (
        "client",
        &[
            ("caching", 3),
            ("getname", 2),
            ("getredir", 2),
            ("help", 2),
            ("id", 2),
            ("info", 2),
            ("kill", -3),
            ("list", -2),
            ("no-evict", 3),
            ("pause", -3),
            ("reply", 3),
            ("setname", 3),
            ("tracking", -3),
            ("trackinginfo", 2),
            ("unblock", -3),
            ("unpause", 2),
        ],
    ),
    (
        "command",
        &[
            ("count", 2),
            ("docs", -2),
            ("getkeys", -4),
            ("getkeysandflags", -4),
            ("help", 2),
            ("info", -2),
            ("list", -2),
        ],
    ),
    (
        "config",
        &[
            ("get", -3),
            ("help", 2),
            ("resetstat", 2),
            ("rewrite", 2),
            ("set", -4),
        ],
    ),
    (
        "xinfo",
        &[("consumers", 4), ("groups", 3), ("help", 2), ("stream", -3)],
    ),
    (
        "xgroup",
        &[
            ("create", -5),
            ("createconsumer", 5),
            ("delconsumer", 5),
            ("destroy", 4),
            ("help", 2),
            ("setid", -5),
        ],
    ),
];

/// How a request's reply counts (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Mark {
    /// As a call of the command; an error reply makes it failed, or rejected when the
    /// command fails Redis's pre-run checks.
    #[default]
    Run,
    /// Refused before it ran: an error reply is a rejected call.
    Rejected,
    /// Not counted (`+QUEUED`).
    Uncounted,
}

/// One command the stats know.
struct Name {
    /// Lower-case, `container|sub` for a subcommand.
    full: String,
    /// A container: with more arguments, the command is its subcommand.
    container: bool,
    /// A subcommand's arity (a command's is checked by [`super::resp_multi::check`]).
    arity: Option<i64>,
}

/// Which counter of a command's four.
const CALLS: usize = 0;
const USEC: usize = 1;
const REJECTED: usize = 2;
const FAILED: usize = 3;

/// Four commands' counters (calls, usec, rejected, failed) on a cache line of their own.
#[derive(Default)]
#[repr(align(128))]
struct Line([[AtomicU64; 4]; 4]);

/// A shard's counts: only its own thread writes `lines` and `last`.
#[repr(align(128))]
struct ShardStats {
    lines: Box<[Line]>,
    /// The id of the last command counted here that is not a container: a stream of one
    /// command (pipelined XADDs) finds its id with one comparison.
    last: std::sync::atomic::AtomicUsize,
    errors: Mutex<Errors>,
}

#[derive(Default)]
struct Errors {
    /// Error replies (`total_error_replies`).
    total: u64,
    /// By prefix, at most [`MAX_ERROR_PREFIXES`].
    by_prefix: BTreeMap<Vec<u8>, u64>,
}

/// The server's command and error statistics (in [`super::resp_info::RespShared`]).
pub(super) struct Stats {
    /// Sorted by `full`: a command's id is its index.
    names: Box<[Name]>,
    shards: Box<[ShardStats]>,
    /// What each command's counters summed to at the last CONFIG RESETSTAT.
    baseline: Mutex<Vec<[u64; 4]>>,
    /// Too many error prefixes: counts by prefix are off until RESETSTAT.
    errors_disabled: AtomicBool,
}

/// A counter that only one thread writes: a relaxed load and store, no locked add.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Orders a table name against a name as given (any case), as if lower-cased.
fn cmp_lower(table: &[u8], given: &[u8]) -> std::cmp::Ordering {
    table
        .iter()
        .copied()
        .cmp(given.iter().map(u8::to_ascii_lowercase))
}

/// Redis's `getSafeInfoString`: `#`, `:`, CR and LF become `_`.
fn safe(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .chars()
        .map(|c| {
            if matches!(c, '#' | ':' | '\r' | '\n') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The prefix an error reply counts under (Redis's `afterErrorReply`): the first word after
/// `-` when a space is within the first 32 bytes, else `ERR`.
pub(super) fn error_prefix(reply: &[u8]) -> &[u8] {
    let Some(text) = reply.strip_prefix(b"-") else {
        return b"ERR";
    };
    // Redis looks for the space in the first 32 bytes of the text with its `-`.
    let window = &text[..text.len().min(31)];
    match window.iter().position(|&b| b == b' ') {
        Some(at) => &text[..at],
        None => b"ERR",
    }
}

impl Stats {
    /// The stats of a server of `shards` shards that serves `commands` (upper- or lower-case).
    pub(super) fn new<'a>(shards: usize, commands: impl IntoIterator<Item = &'a str>) -> Stats {
        let mut names: Vec<Name> = Vec::new();
        for c in commands {
            let lower = c.to_ascii_lowercase();
            let subs = SUBCOMMANDS
                .iter()
                .find(|(n, _)| *n == lower)
                .map(|(_, s)| s);
            for (sub, arity) in subs.into_iter().flat_map(|s| s.iter()) {
                names.push(Name {
                    full: format!("{lower}|{sub}"),
                    container: false,
                    arity: Some(*arity),
                });
            }
            names.push(Name {
                full: lower,
                container: subs.is_some(),
                arity: None,
            });
        }
        names.sort_by(|a, b| a.full.cmp(&b.full));
        names.dedup_by(|a, b| a.full == b.full);
        let lines = names.len().div_ceil(4);
        let shards = (0..shards.max(1))
            .map(|_| ShardStats {
                lines: (0..lines).map(|_| Line::default()).collect(),
                last: std::sync::atomic::AtomicUsize::new(usize::MAX),
                errors: Mutex::new(Errors::default()),
            })
            .collect();
        Stats {
            baseline: Mutex::new(vec![[0; 4]; names.len()]),
            names: names.into_boxed_slice(),
            shards,
            errors_disabled: AtomicBool::new(false),
        }
    }

    /// The id of the command `args` call (a container's: of its subcommand); `None` for an
    /// unknown command or subcommand.
    fn command_id(&self, args: &[Vec<u8>]) -> Option<usize> {
        let first = args.first()?;
        let id = self
            .names
            .binary_search_by(|n| cmp_lower(n.full.as_bytes(), first))
            .ok()?;
        if !self.names[id].container || args.len() < 2 {
            return Some(id);
        }
        let mut full = self.names[id].full.clone().into_bytes();
        full.push(b'|');
        full.extend(args[1].iter().map(u8::to_ascii_lowercase));
        self.names
            .binary_search_by(|n| n.full.as_bytes().cmp(&full))
            .ok()
    }

    fn counters(&self, shard: usize, id: usize) -> Option<&[AtomicU64; 4]> {
        let line = self.shards.get(shard)?.lines.get(id / 4)?;
        Some(&line.0[id % 4])
    }

    /// Counts the reply to `args` on `shard` (its own thread: see the module docs). `usec`:
    /// the microseconds since it started to run (asked only of a call); `precheck`: whether
    /// the command passes Redis's pre-run checks (asked only of an error reply not already
    /// marked rejected).
    pub(super) fn record(
        &self,
        shard: usize,
        args: &[Vec<u8>],
        mark: Mark,
        reply: &[u8],
        usec: impl FnOnce() -> u64,
        precheck: impl FnOnce() -> bool,
    ) {
        if mark == Mark::Uncounted {
            return;
        }
        let is_error = reply.first() == Some(&b'-');
        if is_error {
            self.count_error(shard, reply);
        }
        let Some(s) = self.shards.get(shard) else {
            return;
        };
        let last = s.last.load(Ordering::Relaxed);
        let id = match (self.names.get(last), args.first()) {
            (Some(n), Some(first)) if n.full.as_bytes().eq_ignore_ascii_case(first) => last,
            _ => {
                let Some(id) = self.command_id(args) else {
                    return;
                };
                if !self.names[id].full.contains('|') && !self.names[id].container {
                    s.last.store(id, Ordering::Relaxed);
                }
                id
            }
        };
        let Some(c) = self.counters(shard, id) else {
            return;
        };
        let rejected = is_error
            && (mark == Mark::Rejected
                || self.names[id]
                    .arity
                    .is_some_and(|a| !arity_ok(a, args.len()))
                || !precheck());
        if rejected {
            bump(&c[REJECTED], 1);
            return;
        }
        bump(&c[CALLS], 1);
        bump(&c[USEC], usec());
        if is_error {
            bump(&c[FAILED], 1);
        }
    }

    /// Counts an error reply sent on `shard` (`-PREFIX text\r\n`).
    pub(super) fn count_error(&self, shard: usize, reply: &[u8]) {
        let Some(s) = self.shards.get(shard) else {
            return;
        };
        let mut errors = s.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.total = errors.total.wrapping_add(1);
        if self.errors_disabled.load(Ordering::Relaxed) {
            errors.by_prefix.clear();
            return;
        }
        let prefix = error_prefix(reply);
        if let Some(n) = errors.by_prefix.get_mut(prefix) {
            *n = n.wrapping_add(1);
        } else if errors.by_prefix.len() >= MAX_ERROR_PREFIXES {
            self.errors_disabled.store(true, Ordering::Relaxed);
            errors.by_prefix.clear();
        } else {
            errors.by_prefix.insert(prefix.to_vec(), 1);
        }
    }

    /// Every command's counters summed over the shards, less the baseline.
    fn sums(&self) -> Vec<[u64; 4]> {
        let mut sums = vec![[0u64; 4]; self.names.len()];
        for s in self.shards.iter() {
            for (id, sum) in sums.iter_mut().enumerate() {
                let line = &s.lines[id / 4].0[id % 4];
                for (k, v) in sum.iter_mut().enumerate() {
                    *v = v.wrapping_add(line[k].load(Ordering::Relaxed));
                }
            }
        }
        sums
    }

    /// CONFIG RESETSTAT: every count starts again from 0.
    pub(super) fn reset(&self) {
        let sums = self.sums();
        *self.baseline.lock().unwrap_or_else(|e| e.into_inner()) = sums;
        for s in self.shards.iter() {
            *s.errors.lock().unwrap_or_else(|e| e.into_inner()) = Errors::default();
        }
        self.errors_disabled.store(false, Ordering::Relaxed);
    }

    /// INFO's `total_error_replies`.
    pub(super) fn total_error_replies(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.errors.lock().unwrap_or_else(|e| e.into_inner()).total)
            .fold(0, u64::wrapping_add)
    }

    /// INFO commandstats' lines: every command called, rejected or failed since the start or
    /// the last RESETSTAT, by name.
    pub(super) fn commandstats(&self) -> String {
        let sums = self.sums();
        let baseline = self.baseline.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        for ((name, sum), base) in self.names.iter().zip(&sums).zip(baseline.iter()) {
            let v = |k: usize| sum[k].wrapping_sub(base[k]);
            let (calls, usec, rejected, failed) = (v(CALLS), v(USEC), v(REJECTED), v(FAILED));
            if calls == 0 && rejected == 0 && failed == 0 {
                continue;
            }
            let per_call = if calls == 0 {
                0.0
            } else {
                usec as f64 / calls as f64
            };
            let _ = write!(
                text,
                "cmdstat_{}:calls={calls},usec={usec},usec_per_call={per_call:.2},\
                 rejected_calls={rejected},failed_calls={failed}\r\n",
                safe(name.full.as_bytes())
            );
        }
        text
    }

    /// INFO errorstats' lines: each error prefix's count, by prefix.
    pub(super) fn errorstats(&self) -> String {
        let mut merged: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for s in self.shards.iter() {
            let errors = s.errors.lock().unwrap_or_else(|e| e.into_inner());
            for (prefix, n) in &errors.by_prefix {
                let m = merged.entry(prefix.clone()).or_default();
                *m = m.wrapping_add(*n);
            }
        }
        if merged.len() > MAX_ERROR_PREFIXES {
            self.errors_disabled.store(true, Ordering::Relaxed);
        }
        if self.errors_disabled.load(Ordering::Relaxed) {
            return "errorstat_ERRORSTATS_DISABLED:count=1\r\n".into();
        }
        let mut text = String::new();
        for (prefix, n) in merged {
            let _ = write!(text, "errorstat_{}:count={n}\r\n", safe(&prefix));
        }
        text
    }
}

/// Whether `n` arguments fit `arity` (Redis's: negative is a minimum).
pub(super) fn arity_ok(arity: i64, n: usize) -> bool {
    let n = n as i64;
    if arity >= 0 {
        n == arity
    } else {
        n >= -arity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn stats() -> Stats {
        Stats::new(
            2,
            ["PING", "XADD", "XINFO", "CONFIG", "COMMAND", "XREADGROUP"],
        )
    }

    #[test]
    fn error_prefixes_are_read_as_redis_reads_them() {
        assert_eq!(error_prefix(b"-ERR wrong number\r\n"), b"ERR");
        assert_eq!(error_prefix(b"-WRONGTYPE Operation\r\n"), b"WRONGTYPE");
        assert_eq!(error_prefix(b"-NOGROUP No such key\r\n"), b"NOGROUP");
        assert_eq!(error_prefix(b"-NOSPACE\r\n"), b"ERR");
        // The space must be within the first 32 bytes (the `-` counted).
        let long = format!("-{} x\r\n", "A".repeat(30));
        assert_eq!(error_prefix(long.as_bytes()), "A".repeat(30).as_bytes());
        let longer = format!("-{} x\r\n", "A".repeat(31));
        assert_eq!(error_prefix(longer.as_bytes()), b"ERR");
        assert_eq!(error_prefix(b""), b"ERR");
        assert_eq!(error_prefix(b"-"), b"ERR");
    }

    #[test]
    fn commands_and_subcommands_are_found_in_any_case() {
        let s = stats();
        let name = |a: &[&str]| s.command_id(&args(a)).map(|id| s.names[id].full.clone());
        assert_eq!(name(&["xAdd", "s"]).as_deref(), Some("xadd"));
        assert_eq!(
            name(&["XINFO", "Stream", "s"]).as_deref(),
            Some("xinfo|stream")
        );
        assert_eq!(name(&["XINFO"]).as_deref(), Some("xinfo"));
        assert_eq!(name(&["XINFO", "nope"]), None);
        assert_eq!(name(&["command"]).as_deref(), Some("command"));
        assert_eq!(name(&["command", "docs"]).as_deref(), Some("command|docs"));
        assert_eq!(name(&["xreadgroup"]).as_deref(), Some("xreadgroup"));
        assert_eq!(name(&["nosuch"]), None);
        assert_eq!(name(&[]), None);
    }

    #[test]
    fn calls_failures_and_rejections_are_counted_over_shards() {
        let s = stats();
        let ok = b"$1\r\n1\r\n".as_slice();
        let err = b"-WRONGTYPE Operation\r\n".as_slice();
        let xadd = args(&["XADD", "s", "*", "a", "1"]);
        s.record(0, &xadd, Mark::Run, ok, || 5, || true);
        s.record(1, &xadd, Mark::Run, ok, || 7, || true);
        s.record(1, &xadd, Mark::Run, err, || 3, || true);
        s.record(
            0,
            &args(&["XADD", "s"]),
            Mark::Run,
            b"-ERR wrong\r\n",
            || 0,
            || false,
        );
        s.record(0, &xadd, Mark::Uncounted, ok, || 0, || true);
        s.record(0, &xadd, Mark::Rejected, b"-NOAUTH x\r\n", || 0, || true);
        s.record(
            0,
            &args(&["nosuch"]),
            Mark::Run,
            b"-ERR unknown\r\n",
            || 0,
            || false,
        );
        s.record(
            1,
            &args(&["XINFO", "STREAM"]),
            Mark::Run,
            b"-ERR w\r\n",
            || 0,
            || true,
        );
        assert_eq!(
            s.commandstats(),
            "cmdstat_xadd:calls=3,usec=15,usec_per_call=5.00,rejected_calls=2,failed_calls=1\r\n\
             cmdstat_xinfo|stream:calls=0,usec=0,usec_per_call=0.00,rejected_calls=1,failed_calls=0\r\n"
        );
        assert_eq!(
            s.errorstats(),
            "errorstat_ERR:count=3\r\nerrorstat_NOAUTH:count=1\r\nerrorstat_WRONGTYPE:count=1\r\n"
        );
        assert_eq!(s.total_error_replies(), 5);
        s.reset();
        assert_eq!(s.commandstats(), "");
        assert_eq!(s.errorstats(), "");
        assert_eq!(s.total_error_replies(), 0);
        s.record(1, &xadd, Mark::Run, ok, || 2, || true);
        assert_eq!(
            s.commandstats(),
            "cmdstat_xadd:calls=1,usec=2,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n"
        );
    }

    #[test]
    fn too_many_error_prefixes_turn_errorstats_off_until_resetstat() {
        let s = stats();
        let ping = args(&["PING"]);
        for i in 0..MAX_ERROR_PREFIXES {
            s.record(
                i % 2,
                &ping,
                Mark::Run,
                format!("-E{i} x\r\n").as_bytes(),
                || 0,
                || true,
            );
        }
        assert_eq!(s.errorstats().lines().count(), MAX_ERROR_PREFIXES);
        // One more over the server (each shard holds fewer than the bound).
        s.record(0, &ping, Mark::Run, b"-ONEMORE x\r\n", || 0, || true);
        assert_eq!(s.errorstats(), "errorstat_ERRORSTATS_DISABLED:count=1\r\n");
        s.record(0, &ping, Mark::Run, b"-ERR x\r\n", || 0, || true);
        assert_eq!(s.errorstats(), "errorstat_ERRORSTATS_DISABLED:count=1\r\n");
        assert_eq!(s.total_error_replies(), MAX_ERROR_PREFIXES as u64 + 2);
        assert!(s.commandstats().contains("failed_calls=130"));
        s.reset();
        s.record(0, &ping, Mark::Run, b"-ERR x\r\n", || 0, || true);
        assert_eq!(s.errorstats(), "errorstat_ERR:count=1\r\n");
    }

    #[test]
    fn info_names_are_made_safe() {
        assert_eq!(safe(b"a:b#c\r\nd"), "a_b_c__d");
    }
}
