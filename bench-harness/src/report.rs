//! Shared reporting: latency histograms and aligned result tables.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A latency histogram in microseconds, 1 µs .. 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 60_000_000);
    h.record(us).expect("value within bounds");
}

/// One result row: a name and (column, value) pairs.
pub struct Row {
    pub name: String,
    pub cells: Vec<(String, String)>,
}

impl Row {
    pub fn new(name: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            cells: Vec::new(),
        }
    }
    pub fn cell(mut self, key: &str, value: impl Into<String>) -> Row {
        self.cells.push((key.to_string(), value.into()));
        self
    }
    /// p50 / p99 / p99.9 / max columns of a microsecond histogram, in milliseconds.
    pub fn latency(self, h: &Histogram<u64>) -> Row {
        let ms = |q: f64| format!("{:.3}", h.value_at_quantile(q) as f64 / 1000.0);
        self.cell("p50 ms", ms(0.5))
            .cell("p99 ms", ms(0.99))
            .cell("p99.9 ms", ms(0.999))
            .cell("max ms", format!("{:.3}", h.max() as f64 / 1000.0))
    }
}

/// Prints rows as an aligned text table (columns from the first row) and, if asked, one
/// JSON object per row.
pub fn print(rows: &[Row], json: bool) {
    if json {
        for r in rows {
            let mut obj = serde_json::Map::new();
            obj.insert("name".into(), r.name.clone().into());
            for (k, v) in &r.cells {
                let value = v
                    .parse::<f64>()
                    .map(serde_json::Value::from)
                    .unwrap_or_else(|_| v.clone().into());
                obj.insert(k.clone(), value);
            }
            println!("{}", serde_json::Value::Object(obj));
        }
        return;
    }
    let Some(first) = rows.first() else { return };
    let mut widths: Vec<usize> =
        std::iter::once(rows.iter().map(|r| r.name.len()).max().unwrap_or(0))
            .chain(first.cells.iter().map(|(k, _)| k.len()))
            .collect();
    for r in rows {
        for (i, (_, v)) in r.cells.iter().enumerate() {
            if let Some(w) = widths.get_mut(i + 1) {
                *w = (*w).max(v.len());
            }
        }
    }
    let mut header = format!("{:<w$}", "", w = widths[0]);
    for (i, (k, _)) in first.cells.iter().enumerate() {
        header.push_str(&format!("  {:>w$}", k, w = widths[i + 1]));
    }
    println!("{header}");
    for r in rows {
        let mut line = format!("{:<w$}", r.name, w = widths[0]);
        for (i, (_, v)) in r.cells.iter().enumerate() {
            line.push_str(&format!(
                "  {:>w$}",
                v,
                w = widths.get(i + 1).copied().unwrap_or(0)
            ));
        }
        println!("{line}");
    }
}

/// Parses "10s", "500ms", "2m" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses sizes such as "100", "4KiB", "64k", "1MiB", "256M".
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..i].parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match s[i..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("bad size unit {other:?} in {s:?}")),
    };
    Ok(n * mult)
}
