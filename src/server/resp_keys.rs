//! The RESP port's keyspace commands, over every partition: DBSIZE, EXISTS, TYPE, KEYS and
//! SCAN, on the keys of the connection's database (every key is a stream; TYPE answers
//! `list` for the streams that are Redis lists, `stream` for the others, `none`).
//!
//! ## Keys of a database
//!
//! A stream named `"\0N\0key"` with N in 1..=15 written in decimal without leading zeros is
//! key `key` of database N ([`super::resp_streams::stream_name`]); every other stream is a
//! key of database 0, under its own name. A stream exists once its first event is visible
//! ([`crate::stream::Partition::for_each_stream`]).
//!
//! ## The SCAN cursor
//!
//! A cursor names a partition and a position within it. A stream's position is the
//! [`stream_hash`] of its name shifted right by `b` bits, `b` being the bits a partition
//! number takes (`ceil(log2(partitions))`, 0 with one partition), so positions take the
//! other `64 - b` bits; the cursor is `partition << (64 - b) | position`. Cursor 0 is the
//! start (partition 0, position 0) and a reply's cursor 0 the end.
//!
//! A SCAN call asks partitions in order, from the cursor's: each reads its streams in
//! position order from the cursor's position (a partition keeps them in hash order, so it
//! starts there in O(log n), `crate::stream::Partition::for_each_stream_from_hash`) and
//! returns those that match (MATCH, TYPE), until it has as many as the call still needs —
//! with the last of them every other key at the same position, so that two names of one
//! position are never split between calls — or has read [`SCAN_NAMES_PER_KEY`] names per
//! key asked for (at least [`SCAN_NAMES_MIN`]), again at a position's end. The next cursor
//! is the position after the last one read, or the next partition's start once a partition
//! is done. A call stops once it has COUNT keys, or a partition stopped before its end, or it
//! has asked [`SCAN_PARTITIONS_PER_CALL`] partitions: it reads at most that many partitions'
//! bounds of names.
//!
//! Guarantee, as Redis's: a key that exists for the whole scan is returned at least once,
//! since a key's position never changes and each call resumes past the positions it has
//! read whole. A key created or removed during the scan may or may not be returned. Unlike
//! Redis, a key is returned at most once as well (nothing rehashes), and COUNT counts keys
//! returned, not slots examined: MATCH and TYPE are applied before COUNT, so a call returns
//! COUNT keys whenever that many are left among the names it may read; a MATCH or TYPE that
//! few keys pass may return fewer, even none, with a cursor that goes on, as Redis's does.
//! KEYS lists every partition's streams (O(streams)), concurrently; DBSIZE and INFO keyspace
//! read every partition's counts by database (`crate::stream::Partition::stream_counts`).

use std::collections::HashMap;
use std::rc::Rc;

use super::resp_commands::wrong_arity;
use super::resp_conn::{RespRequest, DATABASES};
use super::resp_streams::{error_text, stream_name};
use super::route::{OpResult, PartOp, Shard};
use crate::protocol::partition_of;
use crate::stream::{database_of, Partition, StreamKind};

/// Partitions one SCAN call asks at most.
pub const SCAN_PARTITIONS_PER_CALL: u32 = 16;

/// Names one SCAN call reads at most in a partition, per key COUNT asks for
/// ([`SCAN_NAMES_PER_KEY`] × COUNT, at least [`SCAN_NAMES_MIN`]), a position's last names
/// beyond it: what bounds a call whose MATCH or TYPE few keys pass.
pub const SCAN_NAMES_PER_KEY: usize = 10;
pub const SCAN_NAMES_MIN: usize = 1000;

/// What the owner of a partition does for a keyspace command.
#[derive(Debug)]
pub enum KeysOp {
    /// How many of `streams` exist (each counted as often as it is listed, as EXISTS does).
    Exists { streams: Vec<String> },
    /// The keys of each database.
    Count,
    /// TYPE: the kind of one stream.
    Type { stream: String },
    /// The keys of `db` that match `pattern` (every key when `None`), whose positions
    /// (stream hash `>> shift`) are `start` or above: all of them (`limit` `None`), or the
    /// `limit` of lowest position and any others at the last one's position.
    List {
        db: u32,
        pattern: Option<Vec<u8>>,
        /// Only keys of this kind (SCAN TYPE).
        kind: Option<StreamKind>,
        start: u64,
        limit: Option<usize>,
        shift: u32,
    },
}

/// What it answers.
#[derive(Debug)]
pub enum KeysOutcome {
    Exists(u64),
    Type(Option<StreamKind>),
    /// Keys per database, by database number.
    Counts(Vec<u64>),
    /// Keys in position order (in no order without a limit); `next`: the position to go on
    /// from, `None` when the partition has no more.
    Keys {
        keys: Vec<String>,
        next: Option<u64>,
    },
}

/// The prefix every stream name of database `db` has.
fn db_prefix(db: u32) -> String {
    if db == 0 {
        String::new()
    } else {
        format!("\0{db}\0")
    }
}

/// Whether the reply to a command may be large: KEYS lists a whole database.
pub(super) fn is_heavy(name: &[u8]) -> bool {
    name == b"KEYS"
}

/// Runs a keyspace command on the owner of one partition.
pub(super) fn run_op(p: &Partition, op: KeysOp) -> OpResult {
    let outcome = match op {
        KeysOp::Exists { streams } => {
            KeysOutcome::Exists(streams.iter().filter(|s| p.has_stream(s)).count() as u64)
        }
        KeysOp::Count => KeysOutcome::Counts(p.stream_counts().to_vec()),
        KeysOp::Type { stream } => KeysOutcome::Type(p.stream_kind(&stream)),
        KeysOp::List {
            db,
            pattern,
            kind,
            start,
            limit,
            shift,
        } => list(p, db, pattern.as_deref(), kind, start, limit, shift),
    };
    OpResult::RespKeys(outcome)
}

/// [`KeysOp::List`].
fn list(
    p: &Partition,
    db: u32,
    pattern: Option<&[u8]>,
    kind: Option<StreamKind>,
    start: u64,
    limit: Option<usize>,
    shift: u32,
) -> KeysOutcome {
    let prefix = db_prefix(db);
    let key_of = |name: &str, k: StreamKind| -> Option<String> {
        let (d, key) = database_of(name);
        let matches = d == db
            && kind.is_none_or(|want| want == k)
            && pattern.is_none_or(|pat| string_match(pat, key.as_bytes(), false));
        matches.then(|| key.to_string())
    };
    let Some(limit) = limit else {
        let mut keys = Vec::new();
        p.for_each_stream(&prefix, |name, k| keys.extend(key_of(name, k)));
        return KeysOutcome::Keys { keys, next: None };
    };
    // From the cursor's position in position order (the partition keeps its streams in
    // hash order), the keys that match until `limit` of them and the rest of the last one's
    // position; or, when few match, until `names_max` names were read, at a position's end.
    let names_max = limit.saturating_mul(SCAN_NAMES_PER_KEY).max(SCAN_NAMES_MIN);
    let mut keys = Vec::new();
    let mut current = None;
    let mut full = false;
    let mut read = 0usize;
    let mut next = None;
    p.for_each_stream_from_hash(start << shift, |hash, name, k| {
        let pos = hash >> shift;
        if current != Some(pos) {
            // A position begins: the call ends before it once it has its keys or has read
            // enough, so that no position is split between calls.
            if full || read >= names_max {
                next = Some(pos);
                return false;
            }
            current = Some(pos);
        }
        read += 1;
        keys.extend(key_of(name, k));
        full = keys.len() >= limit;
        true
    });
    KeysOutcome::Keys { keys, next }
}

/// Redis's glob matching (`stringmatchlen` in util.c, 7.0): `*` any bytes, `?` one byte,
/// `[...]` one of a set (`^` first negates it, `a-z` a range either way round, `\` quotes
/// the next byte; an unclosed set ends with the pattern), `\` quotes the next byte. Bytes
/// compare as C's signed `char` in ranges; `nocase` folds ASCII letters (CONFIG GET).
pub(super) fn string_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let mut give_up = false;
    match_from(pattern, string, nocase, &mut give_up)
}

fn match_from(mut p: &[u8], mut s: &[u8], nocase: bool, give_up: &mut bool) -> bool {
    // C reads the pattern's terminating NUL: `at(p, i)` is 0 past the end.
    let at = |p: &[u8], i: usize| p.get(i).copied().unwrap_or(0);
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while !p.is_empty() && at(p, 1) == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_from(&p[1..], s, nocase, give_up) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                    s = &s[1..];
                }
                // The rest of the pattern matches nowhere in the rest of the string: no
                // earlier `*` can make it match either.
                *give_up = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                // `i` indexes the set in the whole pattern (C's pointer steps back once).
                let mut i = 1;
                let not = at(p, i) == b'^';
                if not {
                    i += 1;
                }
                let mut matched = false;
                loop {
                    let left = p.len().saturating_sub(i);
                    if at(p, i) == b'\\' && left >= 2 {
                        i += 1;
                        if at(p, i) == s[0] {
                            matched = true;
                        }
                    } else if at(p, i) == b']' {
                        break;
                    } else if left == 0 {
                        i -= 1;
                        break;
                    } else if left >= 3 && at(p, i + 1) == b'-' {
                        // C's `char` is signed: bytes from 0x80 are below ASCII. The
                        // bounds are ordered before they are folded, as in C.
                        let (mut lo, mut hi) = (at(p, i), at(p, i + 2));
                        if (lo as i8) > (hi as i8) {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        let (lo, hi) = (fold(lo) as i8, fold(hi) as i8);
                        let c = fold(s[0]) as i8;
                        i += 2;
                        if (lo..=hi).contains(&c) {
                            matched = true;
                        }
                    } else if fold(at(p, i)) == fold(s[0]) {
                        matched = true;
                    }
                    i += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
                p = &p[i..];
            }
            b => {
                let lit = if b == b'\\' && p.len() >= 2 {
                    p = &p[1..];
                    p[0]
                } else {
                    b
                };
                if fold(lit) != fold(s[0]) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while at(p, 0) == b'*' {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

/// Runs a keyspace command, and answers it.
pub(super) async fn run(shard: &Rc<Shard>, req: &RespRequest, name: &[u8]) -> Result<(), String> {
    match name {
        b"DBSIZE" => dbsize(shard, req).await,
        b"EXISTS" => exists(shard, req).await,
        b"TYPE" => key_type(shard, req).await,
        b"KEYS" => keys(shard, req).await,
        b"SCAN" => scan(shard, req).await,
        _ => unreachable!("not a keyspace command"),
    }
}

/// Runs `op` on partition `p`.
async fn call(shard: &Rc<Shard>, p: u32, op: KeysOp) -> Result<KeysOutcome, String> {
    match shard.call(p, PartOp::RespKeys(op)).await {
        OpResult::RespKeys(outcome) => Ok(outcome),
        OpResult::Err(e) => Err(error_text(&e)),
        other => Err(format!("internal error: unexpected reply {other:?}")),
    }
}

/// Runs each op on its partition, all at once; the outcomes in the order of `ops`.
async fn call_each(shard: &Rc<Shard>, ops: Vec<(u32, KeysOp)>) -> Result<Vec<KeysOutcome>, String> {
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|(p, op)| {
            let shard = shard.clone();
            glommio::spawn_local(async move { call(&shard, p, op).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await?);
    }
    Ok(outcomes)
}

/// The keys of each database, by database number (INFO keyspace, DBSIZE).
pub(super) async fn key_counts(shard: &Rc<Shard>) -> Result<Vec<u64>, String> {
    let ops = (0..shard.shared.partitions)
        .map(|p| (p, KeysOp::Count))
        .collect();
    let mut total = vec![0u64; DATABASES as usize];
    for outcome in call_each(shard, ops).await? {
        let KeysOutcome::Counts(counts) = outcome else {
            return Err(format!("internal error: unexpected reply {outcome:?}"));
        };
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    Ok(total)
}

async fn dbsize(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    if req.args.len() != 1 {
        return Err(wrong_arity(b"dbsize"));
    }
    let n = key_counts(shard).await?[req.ctx.db as usize];
    req.answer(|r| {
        r.int(n as i64);
    });
    Ok(())
}

/// How many of `keys` exist in the connection's database (a key listed twice counts twice;
/// a key no stream can have, not UTF-8 or empty, does not exist).
async fn count_existing(
    shard: &Rc<Shard>,
    req: &RespRequest,
    keys: &[Vec<u8>],
) -> Result<u64, String> {
    let mut by_partition: HashMap<u32, Vec<String>> = HashMap::new();
    for key in keys {
        if let Ok(stream) = stream_name(req.ctx, key) {
            let p = partition_of(&stream, shard.shared.partitions);
            by_partition.entry(p).or_default().push(stream);
        }
    }
    let ops = by_partition
        .into_iter()
        .map(|(p, streams)| (p, KeysOp::Exists { streams }))
        .collect();
    let mut n = 0;
    for outcome in call_each(shard, ops).await? {
        match outcome {
            KeysOutcome::Exists(k) => n += k,
            other => return Err(format!("internal error: unexpected reply {other:?}")),
        }
    }
    Ok(n)
}

async fn exists(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    if req.args.len() < 2 {
        return Err(wrong_arity(b"exists"));
    }
    let n = count_existing(shard, req, &req.args[1..]).await?;
    req.answer(|r| {
        r.int(n as i64);
    });
    Ok(())
}

async fn key_type(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    if req.args.len() != 2 {
        return Err(wrong_arity(b"type"));
    }
    let kind = match stream_name(req.ctx, &req.args[1]) {
        Ok(stream) => {
            let p = partition_of(&stream, shard.shared.partitions);
            match call(shard, p, KeysOp::Type { stream }).await? {
                KeysOutcome::Type(kind) => kind,
                other => return Err(format!("internal error: unexpected reply {other:?}")),
            }
        }
        // A key no stream can have (not UTF-8, or empty) does not exist.
        Err(_) => None,
    };
    req.answer(|r| {
        r.simple(kind.map_or("none", StreamKind::redis_type));
    });
    Ok(())
}

/// A MATCH pattern: `None` for `*`, which matches every key.
fn pattern_of(arg: &[u8]) -> Option<Vec<u8>> {
    (arg != b"*").then(|| arg.to_vec())
}

async fn keys(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    if req.args.len() != 2 {
        return Err(wrong_arity(b"keys"));
    }
    let pattern = pattern_of(&req.args[1]);
    let ops = (0..shard.shared.partitions)
        .map(|p| {
            let op = KeysOp::List {
                db: req.ctx.db,
                pattern: pattern.clone(),
                kind: None,
                start: 0,
                limit: None,
                shift: 0,
            };
            (p, op)
        })
        .collect();
    let mut keys = Vec::new();
    for outcome in call_each(shard, ops).await? {
        match outcome {
            KeysOutcome::Keys { keys: k, .. } => keys.extend(k),
            other => return Err(format!("internal error: unexpected reply {other:?}")),
        }
    }
    req.answer(|r| {
        r.array_len(keys.len());
        for k in &keys {
            r.bulk(k);
        }
    });
    Ok(())
}

/// How a SCAN cursor splits into a partition and a position (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Bits of the partition number.
    bits: u32,
}

impl Layout {
    fn new(partitions: u32) -> Layout {
        Layout {
            bits: 32 - partitions.saturating_sub(1).leading_zeros(),
        }
    }

    fn encode(self, partition: u32, position: u64) -> u64 {
        if self.bits == 0 {
            position
        } else {
            (u64::from(partition) << (64 - self.bits)) | position
        }
    }

    fn decode(self, cursor: u64) -> (u32, u64) {
        if self.bits == 0 {
            (0, cursor)
        } else {
            (
                (cursor >> (64 - self.bits)) as u32,
                cursor & (u64::MAX >> self.bits),
            )
        }
    }
}

/// A SCAN cursor as Redis's `strtoul` reads it (decimal digits, an optional `+`).
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let digits = arg.strip_prefix(b"+").unwrap_or(arg);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
async fn scan(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 2 {
        return Err(wrong_arity(b"scan"));
    }
    let cursor = parse_cursor(&args[1]).ok_or("invalid cursor")?;
    let mut count = 10usize;
    let mut pattern = None;
    let mut type_name: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        let has_value = args.len() - i >= 2;
        match args[i].to_ascii_uppercase().as_slice() {
            b"COUNT" if has_value => {
                let n = crate::resp::string2ll(&args[i + 1])
                    .ok_or("value is not an integer or out of range")?;
                if n < 1 {
                    return Err("syntax error".into());
                }
                count = usize::try_from(n).unwrap_or(usize::MAX);
            }
            b"MATCH" if has_value => pattern = pattern_of(&args[i + 1]),
            b"TYPE" if has_value => type_name = Some(&args[i + 1]),
            _ => return Err("syntax error".into()),
        }
        i += 2;
    }
    let partitions = shard.shared.partitions;
    let layout = Layout::new(partitions);
    let (mut partition, mut position) = layout.decode(cursor);
    let mut keys = Vec::new();
    // Every key is a stream, list, string or set: any other type matches none.
    let kind = match type_name {
        None => None,
        Some(t) if t.eq_ignore_ascii_case(b"stream") => Some(StreamKind::Stream),
        Some(t) if t.eq_ignore_ascii_case(b"list") => Some(StreamKind::List),
        Some(t) if t.eq_ignore_ascii_case(b"string") => Some(StreamKind::String),
        Some(t) if t.eq_ignore_ascii_case(b"set") => Some(StreamKind::Set),
        Some(_) => {
            partition = partitions;
            None
        }
    };
    let mut asked = 0;
    while partition < partitions && keys.len() < count && asked < SCAN_PARTITIONS_PER_CALL {
        let op = KeysOp::List {
            db: req.ctx.db,
            pattern: pattern.clone(),
            kind,
            start: position,
            limit: Some(count - keys.len()),
            shift: layout.bits,
        };
        asked += 1;
        match call(shard, partition, op).await? {
            KeysOutcome::Keys { keys: k, next } => {
                keys.extend(k);
                match next {
                    Some(next) => {
                        // It stopped before its end: with COUNT keys, or at its bound of
                        // names read (the module docs), which bounds the call too.
                        position = next;
                        break;
                    }
                    None => {
                        partition += 1;
                        position = 0;
                    }
                }
            }
            other => return Err(format!("internal error: unexpected reply {other:?}")),
        }
    }
    let next = if partition >= partitions {
        0
    } else {
        layout.encode(partition, position)
    };
    req.answer(|r| {
        r.array_len(2).bulk(next.to_string()).array_len(keys.len());
        for k in &keys {
            r.bulk(k);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        string_match(p.as_bytes(), s.as_bytes(), false)
    }

    #[test]
    fn glob_matches_as_redis() {
        // Redis's quirk: nothing at all is not matched by `*` (KEYS * and MATCH * list every
        // key without matching; no key is empty).
        assert!(!m("*", ""));
        assert!(m("*", "abc"));
        assert!(m("a*", "abc"));
        assert!(!m("a*", "bac"));
        assert!(m("*c", "abc"));
        assert!(m("a*c", "abbbc"));
        assert!(m("a**c", "ac"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "a range either way round");
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(m("[\\]]", "]"));
        assert!(m("a[bc", "ab"), "an unclosed set ends with the pattern");
        assert!(!m("a[bc", "abc"));
        assert!(m("a\\", "a\\"), "a trailing backslash is itself");
        assert!(m("user:*:name", "user:42:name"));
        assert!(!m("user:*:name", "user:42:names"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        assert!(!m("a", ""));
        assert!(m("a*", "a"));
        assert!(!m("a?", "a"));
        assert!(m("[a-]", "]"), "`-]` makes a range up to `]`, as Redis");
        // Bytes from 0x80 are negative as C's `char`: below every ASCII byte.
        assert!(string_match(b"[\x80-a]", b"Z", false));
        assert!(!string_match(b"[a-\x80]", b"\xff\xff", false));
        assert!(string_match(
            b"STREAM-NODE-*",
            b"stream-node-max-bytes",
            true
        ));
        assert!(!string_match(
            b"STREAM-NODE-*",
            b"stream-node-max-bytes",
            false
        ));
    }

    #[test]
    fn many_stars_give_up_early() {
        let pattern = "a*".repeat(30) + "b";
        let s = "a".repeat(60);
        assert!(!m(&pattern, &s));
    }

    #[test]
    fn names_split_into_databases() {
        assert_eq!(database_of("orders"), (0, "orders"));
        assert_eq!(database_of("\u{0}3\u{0}orders"), (3, "orders"));
        assert_eq!(database_of("\u{0}15\u{0}x"), (15, "x"));
        assert_eq!(database_of("\u{0}16\u{0}x"), (0, "\u{0}16\u{0}x"));
        assert_eq!(database_of("\u{0}03\u{0}x"), (0, "\u{0}03\u{0}x"));
        assert_eq!(database_of("\u{0}0\u{0}x"), (0, "\u{0}0\u{0}x"));
        assert_eq!(database_of("\u{0}x"), (0, "\u{0}x"));
    }

    #[test]
    fn cursors_split_into_partition_and_position() {
        let one = Layout::new(1);
        assert_eq!(one.bits, 0);
        assert_eq!(one.decode(one.encode(0, 12345)), (0, 12345));
        let four = Layout::new(4);
        assert_eq!(four.bits, 2);
        assert_eq!(four.encode(0, 0), 0);
        assert_eq!(
            four.decode(four.encode(3, u64::MAX >> 2)),
            (3, u64::MAX >> 2)
        );
        let five = Layout::new(5);
        assert_eq!(five.bits, 3);
        assert_eq!(five.decode(five.encode(4, 7)), (4, 7));
        assert_eq!(Layout::new(u32::MAX).bits, 32);
        assert_eq!(parse_cursor(b"+17"), Some(17));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551616"), None);
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b""), None);
    }
}
