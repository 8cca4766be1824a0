//! Times, durations and aggregation windows as people write them: what `evring aggregate`'s
//! options and the RESP port's `EV.AGG` read. Times are RFC 3339 (`2024-12-06T08:00:00Z`,
//! `2024-12-06T09:00:00+01:00`) or Unix times with a unit (`1733472000s`, `…ms`, `…us`,
//! `…ns`); durations are numbers with units (`90s`, `10m`, `1h30m`: ns, us, ms, s, m, h, d).
//! Everything comes out in Unix nanoseconds.

use crate::aggregate::BUCKETS_MAX;
use crate::rfc3339::format_ns as format_rfc3339;

/// Nanoseconds per unit of a duration or a Unix time.
fn unit_ns(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    })
}

/// A duration: numbers with units, `90s`, `10m`, `1h30m`, `500ms`; in nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: use a number and a unit (ns, us, ms, s, m, h, d), \
             e.g. 10m or 1h30m"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = unit_ns(&rest[digits..digits + unit_len]).ok_or_else(bad)?;
        total = number
            .checked_mul(unit)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// Nanoseconds as a duration in the largest unit that divides them: `1m`, `90s`, `1500ms`.
pub fn format_duration(ns: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns >= size && ns % size == 0 {
            return format!("{}{unit}", ns / size);
        }
    }
    format!("{ns}ns")
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 time (`2024-12-06T08:00:00Z`, `2024-12-06 09:00:00.5+01:00`) in Unix
/// nanoseconds; `None` when `text` is not one.
pub fn parse_rfc3339(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = |y: u32| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap(year) => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut frac_ns: i128 = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        for (i, c) in b[at + 1..at + 1 + digits].iter().enumerate() {
            if i < 9 {
                frac_ns += i128::from(c - b'0') * 10i128.pow(8 - i as u32);
            }
        }
        at += 1 + digits;
    }
    let offset_s: i128 = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() && b[at + 3] == b':' => {
            let (oh, om) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let s = i128::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return None,
    };
    let days = i128::from(days_from_civil(i64::from(year), month, day));
    let secs = days * 86_400 + i128::from(hour * 3600 + minute * 60 + second) - offset_s;
    Some(secs * 1_000_000_000 + frac_ns)
}

/// A point in time for `flag`: RFC 3339, or a Unix time with a unit (`1733472000s`,
/// `…ms`, `…us`, `…ns`); in Unix nanoseconds.
pub fn parse_time(flag: &str, text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let ns: Option<i128> = if digits > 0 && digits == text.len() {
        return Err(format!(
            "{flag} {text}: give the unit of the Unix time ({text}s, {text}ms, {text}us or \
             {text}ns), or an RFC 3339 time such as 2024-12-06T08:00:00Z"
        ));
    } else if digits > 0 && matches!(&text[digits..], "s" | "ms" | "us" | "ns") {
        let n: u64 = text[..digits]
            .parse()
            .map_err(|_| format!("{flag} {text}: the number is too large"))?;
        let unit = unit_ns(&text[digits..]).ok_or_else(|| format!("{flag} {text}: no unit"))?;
        Some(i128::from(n) * i128::from(unit))
    } else {
        parse_rfc3339(text)
    };
    match ns {
        Some(ns) if (0..=i128::from(u64::MAX)).contains(&ns) => Ok(ns as u64),
        Some(_) => Err(format!(
            "{flag} {text}: outside the range of Unix nanoseconds (1970 to 2554)"
        )),
        None => Err(format!(
            "{flag} {text:?}: expected an RFC 3339 time (2024-12-06T08:00:00Z, \
             2024-12-06T09:00:00+01:00) or a Unix time with a unit (1733472000s, \
             1733472000000ms, 1733472000000000000ns)"
        )),
    }
}

/// An aggregation window as its options give it (each `None` when not given): `from` and
/// `to` times, `since` a duration before the end, `bucket` a width, and the same in Unix
/// nanoseconds (`from_ns`, `to_ns`, `bucket_ns`; the text forms win).
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowText<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub since: Option<&'a str>,
    pub bucket: Option<&'a str>,
    pub from_ns: Option<u64>,
    pub to_ns: Option<u64>,
    pub bucket_ns: Option<u64>,
}

/// The window and bucket width `w` asks for at time `now`, in Unix nanoseconds:
/// `[from, to)` and the width (0: one bucket). `to` defaults to `now` and `from` to 0; a
/// window given by `since` with buckets starts on a multiple of the width. At most
/// [`BUCKETS_MAX`] buckets. Messages name each option as `option` writes it (`"since"` →
/// `--since` for the CLI, `SINCE` for the RESP port).
pub fn aggregate_window(
    w: &WindowText<'_>,
    now: u64,
    option: &dyn Fn(&str) -> String,
) -> Result<(u64, u64, u64), String> {
    let to = match (w.to, w.to_ns) {
        (Some(t), _) => parse_time(&option("to"), t)?,
        (None, Some(t)) => t,
        (None, None) => now,
    };
    let from = match (w.from, w.since, w.from_ns) {
        (Some(f), _, _) => parse_time(&option("from"), f)?,
        (None, Some(s), _) => {
            let d = parse_duration(s).map_err(|e| format!("{} {e}", option("since")))?;
            to.checked_sub(d)
                .ok_or_else(|| format!("{} {s} reaches back before 1970", option("since")))?
        }
        (None, None, Some(f)) => f,
        (None, None, None) => 0,
    };
    let bucket = match (w.bucket, w.bucket_ns) {
        (Some(b), _) => parse_duration(b).map_err(|e| format!("{} {e}", option("bucket")))?,
        (None, Some(b)) => b,
        (None, None) => 0,
    };
    if from >= to {
        return Err(format!(
            "the window is empty: it starts at {} and ends at {} ({} defaults to now)",
            format_rfc3339(from),
            format_rfc3339(to),
            option("to")
        ));
    }
    // A window given by `since` starts on a multiple of the bucket width, so the buckets
    // start on whole minutes, hours, …
    let from = match (w.since, bucket) {
        (Some(_), b) if b > 0 => from - from % b,
        _ => from,
    };
    if bucket > 0 {
        let buckets = (to - from).div_ceil(bucket);
        if buckets > BUCKETS_MAX {
            return Err(format!(
                "the window from {} to {} holds {buckets} buckets of {}; at most \
                 {BUCKETS_MAX} are allowed: narrow the window ({}, {}, {}; {} defaults to \
                 now) or widen {}",
                format_rfc3339(from),
                format_rfc3339(to),
                format_duration(bucket),
                option("since"),
                option("from"),
                option("to"),
                option("to"),
                option("bucket"),
            ));
        }
    }
    Ok((from, to, bucket))
}
