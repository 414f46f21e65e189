//! The report's plots, drawn as SVG with plotters (the Rust plotting crate
//! with an SVG backend that needs no system libraries): latency over time,
//! the latency distribution by percentile, and throughput over time.
//!
//! plotters measures its text with a TrueType font (`ab_glyph`, pure Rust):
//! DejaVu Sans from the system (`fonts-dejavu-core` on Debian), or the file
//! named by `LOADTEST_FONT`.

use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;

use super::{Recording, Report};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 360;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the plots' font once per process.
fn ensure_font() -> anyhow::Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("LOADTEST_FONT")
            .into_iter()
            .chain(FONT_PATHS.iter().map(|p| (*p).to_owned()))
            .collect();
        let (path, bytes) = candidates
            .iter()
            .find_map(|path| std::fs::read(path).ok().map(|bytes| (path, bytes)))
            .ok_or_else(|| {
                format!(
                    "no font for the plots' text: install fonts-dejavu-core or set LOADTEST_FONT (looked in {})",
                    candidates.join(", ")
                )
            })?;
        // plotters keeps fonts for the whole process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a usable TrueType font"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn colour(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    PALETTE[index % PALETTE.len()]
}

/// The run's first second over every stream.
fn origin(recording: &Recording) -> u64 {
    recording
        .streams
        .values()
        .filter_map(|s| s.keys().next().copied())
        .min()
        .unwrap_or(0)
}

fn span(recording: &Recording) -> u64 {
    let first = origin(recording);
    let last = recording
        .streams
        .values()
        .filter_map(|s| s.keys().next_back().copied())
        .max()
        .unwrap_or(first);
    last - first + 1
}

fn draw_error(error: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("cannot draw a plot: {error:?}")
}

/// p50 and p99 (and each second's max) of every stream, second by second.
pub fn latency_over_time(report: &Report) -> anyhow::Result<String> {
    ensure_font()?;
    let recording = &report.recording;
    let first = origin(recording);
    let seconds = span(recording) as f64;
    let top = recording
        .streams
        .values()
        .flat_map(|s| s.values())
        .map(|s| s.latency.max())
        .max()
        .unwrap_or(1) as f64
        / 1000.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency over time", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0f64..seconds.max(1.0),
                (0.01f64..(top * 1.5).max(1.0)).log_scale(),
            )
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("latency, ms (log)")
            .draw()
            .map_err(draw_error)?;
        for (index, (name, by_second)) in recording.streams.iter().enumerate() {
            let points = |quantile: Option<f64>| -> Vec<(f64, f64)> {
                by_second
                    .iter()
                    .filter(|(_, s)| !s.latency.is_empty())
                    .map(|(at, s)| {
                        let us = match quantile {
                            Some(q) => s.latency.value_at_quantile(q),
                            None => s.latency.max(),
                        };
                        ((at - first) as f64 + 0.5, (us as f64 / 1000.0).max(0.01))
                    })
                    .collect()
            };
            let c = colour(index);
            for (label, quantile, style) in [
                ("p50", Some(0.5), c.mix(0.5).stroke_width(1)),
                ("p99", Some(0.99), c.stroke_width(2)),
                ("max", None, c.mix(0.3).stroke_width(1)),
            ] {
                chart
                    .draw_series(LineSeries::new(points(quantile), style))
                    .map_err(draw_error)?
                    .label(format!("{name} {label}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Latency by percentile, on the "nines" axis (50%, 90%, 99%, 99.9%, …).
pub fn latency_distribution(report: &Report) -> anyhow::Result<String> {
    ensure_font()?;
    let recording = &report.recording;
    let totals: Vec<(String, hdrhistogram::Histogram<u64>)> = recording
        .streams
        .keys()
        .map(|name| (name.clone(), recording.total(name).latency))
        .collect();
    let top = totals.iter().map(|(_, h)| h.max()).max().unwrap_or(1) as f64 / 1000.0;
    let max_nines = 5.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency distribution by percentile", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_nines, (0.01f64..(top * 1.5).max(1.0)).log_scale())
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency, ms (log)")
            .x_labels(6)
            .x_label_formatter(&|nines| {
                let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
                let decimals = (nines.round() as usize).saturating_sub(2);
                format!("{percentile:.decimals$}%")
            })
            .draw()
            .map_err(draw_error)?;
        for (index, (name, histogram)) in totals.iter().enumerate() {
            if histogram.is_empty() {
                continue;
            }
            let points: Vec<(f64, f64)> = (0..=200)
                .map(|step| {
                    let nines = max_nines * f64::from(step) / 200.0;
                    let quantile = 1.0 - 10f64.powf(-nines);
                    let ms = histogram.value_at_quantile(quantile) as f64 / 1000.0;
                    (nines, ms.max(0.01))
                })
                .collect();
            let style = colour(index).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(draw_error)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Successes and errors per second of every stream.
pub fn throughput_over_time(report: &Report) -> anyhow::Result<String> {
    ensure_font()?;
    let recording = &report.recording;
    let first = origin(recording);
    let seconds = span(recording) as f64;
    let top = recording
        .streams
        .values()
        .flat_map(|s| s.values())
        .map(|s| s.latency.len().max(s.error_count()))
        .max()
        .unwrap_or(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput over time", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..seconds.max(1.0), 0f64..(top * 1.1).max(1.0))
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("per second")
            .draw()
            .map_err(draw_error)?;
        for (index, (name, by_second)) in recording.streams.iter().enumerate() {
            let ok: Vec<(f64, f64)> = by_second
                .iter()
                .map(|(at, s)| ((at - first) as f64 + 0.5, s.latency.len() as f64))
                .collect();
            let style = colour(index).stroke_width(2);
            chart
                .draw_series(LineSeries::new(ok, style))
                .map_err(draw_error)?
                .label(format!("{name} ok/s"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            if by_second.values().any(|s| s.error_count() > 0) {
                let errors: Vec<(f64, f64)> = by_second
                    .iter()
                    .map(|(at, s)| ((at - first) as f64 + 0.5, s.error_count() as f64))
                    .collect();
                let dashed = colour(index).mix(0.5).stroke_width(1);
                chart
                    .draw_series(LineSeries::new(errors, dashed))
                    .map_err(draw_error)?
                    .label(format!("{name} errors/s"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], dashed));
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// The three plots, each with the id the page gives it.
pub fn all(report: &Report) -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(vec![
        (
            "latency-over-time",
            latency_over_time(report).context("latency over time")?,
        ),
        (
            "latency-distribution",
            latency_distribution(report).context("latency distribution")?,
        ),
        (
            "throughput-over-time",
            throughput_over_time(report).context("throughput over time")?,
        ),
    ])
}
