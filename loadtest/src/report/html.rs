//! `report.html`: one self-contained page (no scripts, no network fetches):
//! the summary table, the notes and the three plots as inline SVG.

use super::{plots, Report};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn page(report: &Report) -> anyhow::Result<String> {
    let summary = &report.summary;
    let mut rows = String::new();
    for stream in &summary.streams {
        let errors = escape(&stream.errors_text(": ", ", "));
        let l = &stream.latency_ms;
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{errors}</td></tr>\n",
            escape(&stream.name),
            stream.ok,
            stream.achieved_rate,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        ));
    }
    let notes: String = summary
        .notes
        .iter()
        .map(|note| format!("<li>{}</li>", escape(note)))
        .collect();
    let target = summary
        .target_rate
        .map_or("none (closed set of clients)".to_owned(), |r| {
            format!("{r:.0} per second")
        });
    let cpu = summary.harness_cpu_us_per_op.map_or(String::new(), |us| {
        format!(", {us:.1} µs per request or frame")
    });
    let plots: String = plots::all(report)?
        .into_iter()
        .map(|(id, svg)| format!("<figure id=\"{id}\" class=\"plot\">{svg}</figure>\n"))
        .collect();
    Ok(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>loadtest {scenario} report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child, td:last-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }}
</style></head>
<body>
<h1>loadtest {scenario}</h1>
<p>Shards: {shards}. Duration {duration:.1} s. Target rate: {target}. Harness CPU {harness:.2} s{cpu}.
Latencies count from each request's scheduled send time (open loop), or from the ball's produce time.</p>
<table id="summary">
<tr><th>stream</th><th>ok</th><th>rate/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th></tr>
{rows}</table>
<ul>{notes}</ul>
{plots}</body></html>
"#,
        scenario = escape(&summary.scenario),
        shards = escape(&summary.shards.join(", ")),
        duration = summary.duration_s,
        harness = summary.harness_cpu_s,
    ))
}
