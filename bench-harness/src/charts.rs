//! SVG charts of a comparison (plotters' SVG backend): events/s per target with the rounds'
//! min–max of requests/s scaled alongside, and latency percentile curves per target on a
//! "nines" axis (50 %, 90 %, 99 %, 99.9 %, 99.99 %, max).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use serde_json::Value;

use crate::workload::Workload;

const COLORS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x7f, 0x7f, 0x7f),
];

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("chart: {e}")
}

/// Bars of median events/s per target (raw disk: what its writes would carry), whiskers at
/// the rounds' min and max.
pub fn throughput(path: &Path, w: &Workload, summary: &Value) -> anyhow::Result<()> {
    let rows = summary.as_array().cloned().unwrap_or_default();
    let names: Vec<String> = rows
        .iter()
        .map(|r| r["target"].as_str().unwrap_or("?").to_string())
        .collect();
    // A PING is one event.
    let per_req = if w.ping() {
        1.0
    } else {
        w.events_per_request as f64
    };
    let bars: Vec<(f64, f64, f64)> = rows
        .iter()
        .map(|r| {
            let q = &r["requests_per_s"];
            let ev = r["events_per_s"].as_f64().unwrap_or(0.0);
            // min–max are of requests/s; show them in events/s for appends-only workloads.
            let scale = if w.read_fraction > 0.0 { 0.0 } else { per_req };
            (
                ev,
                q["min"].as_f64().unwrap_or(0.0) * scale,
                q["max"].as_f64().unwrap_or(0.0) * scale,
            )
        })
        .collect();
    let top = bars.iter().map(|b| b.0.max(b.2)).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} — {} (median of rounds)",
                w.describe(),
                if w.ping() {
                    "PINGs/s"
                } else {
                    "durable events/s"
                }
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((0..names.len()).into_segmented(), 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(if w.ping() { "PINGs/s" } else { "events/s" })
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), b.0),
                ],
                COLORS[i % COLORS.len()].filled(),
            );
            bar.set_margin(0, 0, 18, 18);
            bar
        }))
        .map_err(err)?;
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .filter(|(_, b)| b.2 > 0.0)
                .map(|(i, b)| {
                    PathElement::new(
                        vec![
                            (SegmentValue::CenterOf(i), b.1),
                            (SegmentValue::CenterOf(i), b.2),
                        ],
                        BLACK.stroke_width(2),
                    )
                }),
        )
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Latency (ms, log scale) against percentile, one curve per target.
pub fn latency(path: &Path, w: &Workload, summary: &Value) -> anyhow::Result<()> {
    let rows = summary.as_array().cloned().unwrap_or_default();
    // x = "nines": 0.5 → 0.3, 0.9 → 1, 0.99 → 2 …, max drawn at 5.
    let nines = |q: f64| if q >= 1.0 { 5.0 } else { -(1.0 - q).log10() };
    let curves: Vec<(String, Vec<(f64, f64)>)> = rows
        .iter()
        .map(|r| {
            let pts = r["latency_ms"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    (
                        nines(p["quantile"].as_f64().unwrap_or(0.5)),
                        p["ms"].as_f64().unwrap_or(0.0).max(0.001),
                    )
                })
                .collect();
            (r["target"].as_str().unwrap_or("?").to_string(), pts)
        })
        .collect();
    let top = curves
        .iter()
        .flat_map(|c| c.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 2.0;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} — latency by percentile (median of rounds)",
                w.describe()
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..5.2, (0.01f64..top).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_labels(6)
        .x_label_formatter(&|x| match (*x * 10.0).round() as i64 {
            3 => "50".into(),
            10 => "90".into(),
            20 => "99".into(),
            30 => "99.9".into(),
            40 => "99.99".into(),
            50 => "max".into(),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
