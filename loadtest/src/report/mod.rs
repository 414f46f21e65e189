//! What every scenario records and leaves behind: latencies and errors per
//! stream, second by second, and the report folder made of them.
//!
//! A stream is one kind of measured thing (`http.my-rank`, `ws.ball-to-client`,
//! …). Each second of each stream keeps an HDR histogram of its latencies (in
//! microseconds, 3 significant digits) and its errors by kind. The folder:
//!
//! - `latency.hlog`: every stream's per-second histograms in HdrHistogram's
//!   interval-log form (tagged by stream, timestamps in Unix seconds), so
//!   shards recorded by several processes or machines merge exactly;
//! - `summary.json`: rates, percentiles and errors of each stream, and the
//!   per-second counts;
//! - `report.html`: one page with the plots as inline SVG (see [`html`]).
//!
//! hdrhistogram is the Rust port of HdrHistogram, the format load tools
//! (wrk2, Gatling, HdrHistogram's own log processor) share: merging its
//! histograms is exact, and its percentiles carry a stated precision.

pub mod html;
pub mod plots;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, up to an hour.
const HIGHEST_US: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

/// One second of one stream.
#[derive(Debug, Clone)]
pub struct Second {
    pub latency: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Second {
    fn new() -> Second {
        Second {
            latency: histogram(),
            errors: BTreeMap::new(),
        }
    }

    fn add(&mut self, other: &Second) {
        self.latency
            .add(&other.latency)
            .expect("histograms of one shape");
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Everything recorded, stream by stream, second by second (Unix seconds).
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub streams: BTreeMap<String, BTreeMap<u64, Second>>,
}

impl Recording {
    pub fn add(&mut self, other: &Recording) {
        for (stream, seconds) in &other.streams {
            let mine = self.streams.entry(stream.clone()).or_default();
            for (at, second) in seconds {
                mine.entry(*at).or_insert_with(Second::new).add(second);
            }
        }
    }

    /// A stream's whole run in one second's shape.
    pub fn total(&self, stream: &str) -> Second {
        let mut total = Second::new();
        for second in self
            .streams
            .get(stream)
            .into_iter()
            .flat_map(|s| s.values())
        {
            total.add(second);
        }
        total
    }
}

/// The recorder scenarios share: cheap to call from many tasks.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    origin_unix: Duration,
    recording: Mutex<Recording>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            origin: Instant::now(),
            origin_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            recording: Mutex::new(Recording::default()),
        }
    }

    fn unix_second(&self, at: Instant) -> u64 {
        (self.origin_unix + at.saturating_duration_since(self.origin)).as_secs()
    }

    /// A success: its latency, completed at `at`.
    pub fn ok(&self, stream: &str, latency: Duration, at: Instant) {
        let second = self.unix_second(at);
        let micros = (latency.as_micros() as u64).clamp(1, HIGHEST_US);
        let mut recording = self.recording.lock().expect("recorder lock");
        recording
            .streams
            .entry(stream.to_owned())
            .or_default()
            .entry(second)
            .or_insert_with(Second::new)
            .latency
            .record(micros)
            .expect("value within bounds");
    }

    /// A failure of `kind` (`connect`, `timeout`, `http_500`, `ws_close_1011`, …).
    pub fn error(&self, stream: &str, kind: &str, at: Instant) {
        let second = self.unix_second(at);
        let mut recording = self.recording.lock().expect("recorder lock");
        *recording
            .streams
            .entry(stream.to_owned())
            .or_default()
            .entry(second)
            .or_insert_with(Second::new)
            .errors
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Recording {
        self.recording.lock().expect("recorder lock").clone()
    }

    /// The last complete second of each stream: (stream, rate, errors, p99 ms).
    pub fn last_second(&self) -> Vec<(String, u64, u64, f64)> {
        let now = self.unix_second(Instant::now());
        let recording = self.recording.lock().expect("recorder lock");
        recording
            .streams
            .iter()
            .map(|(name, seconds)| {
                let second = seconds.get(&(now.saturating_sub(1)));
                let (rate, errors, p99) = second.map_or((0, 0, 0.0), |s| {
                    (
                        s.latency.len(),
                        s.error_count(),
                        s.latency.value_at_quantile(0.99) as f64 / 1000.0,
                    )
                });
                (name.clone(), rate, errors, p99)
            })
            .collect()
    }
}

/// Latency percentiles of one stream, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// One stream in `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSummary {
    pub name: String,
    /// Successes.
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Successes per second over the run's measured span.
    pub achieved_rate: f64,
    pub latency_ms: Percentiles,
}

impl StreamSummary {
    /// The errors as `kind<between>count`, joined by `separator`; `0` when none.
    pub fn errors_text(&self, between: &str, separator: &str) -> String {
        if self.errors.is_empty() {
            return "0".to_owned();
        }
        self.errors
            .iter()
            .map(|(kind, count)| format!("{kind}{between}{count}"))
            .collect::<Vec<_>>()
            .join(separator)
    }
}

/// The run: what was asked and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    /// `i/N` for one shard of a sharded run; the shards' list after a merge.
    pub shards: Vec<String>,
    pub started_unix: f64,
    pub duration_s: f64,
    /// Requests per second asked for (over all shards), where a rate was asked.
    pub target_rate: Option<f64>,
    /// The harness's own CPU time (user + system) and per request or frame.
    pub harness_cpu_s: f64,
    pub harness_cpu_us_per_op: Option<f64>,
    pub streams: Vec<StreamSummary>,
    /// Anything a reader should know about this run (what was set up, …).
    pub notes: Vec<String>,
}

/// A finished run: its summary and its recording.
#[derive(Debug, Clone)]
pub struct Report {
    pub summary: Summary,
    pub recording: Recording,
}

/// What a scenario says about its run, before the figures are computed.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub scenario: String,
    pub shards: Vec<String>,
    pub started_unix: f64,
    pub duration_s: f64,
    pub target_rate: Option<f64>,
    pub harness_cpu_s: f64,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(info: RunInfo, recording: Recording) -> Report {
        let streams: Vec<StreamSummary> = recording
            .streams
            .keys()
            .map(|name| {
                let total = recording.total(name);
                StreamSummary {
                    name: name.clone(),
                    ok: total.latency.len(),
                    errors: total.errors.clone(),
                    achieved_rate: if info.duration_s > 0.0 {
                        total.latency.len() as f64 / info.duration_s
                    } else {
                        0.0
                    },
                    latency_ms: Percentiles::of(&total.latency),
                }
            })
            .collect();
        let ops: u64 = streams
            .iter()
            .map(|s| s.ok + s.errors.values().sum::<u64>())
            .sum();
        Report {
            summary: Summary {
                scenario: info.scenario,
                shards: info.shards,
                started_unix: info.started_unix,
                duration_s: info.duration_s,
                target_rate: info.target_rate,
                harness_cpu_s: info.harness_cpu_s,
                harness_cpu_us_per_op: (ops > 0).then(|| info.harness_cpu_s * 1e6 / ops as f64),
                streams,
                notes: info.notes,
            },
            recording,
        }
    }

    /// Writes `latency.hlog`, `summary.json` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut log = Vec::new();
        let mut serializer = V2Serializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment("loadtest: per-second latency histograms (microseconds), tagged by stream")
            .begin_log_with(&mut log, &mut serializer)?;
        for (stream, seconds) in &self.recording.streams {
            let tag = Tag::new(stream).context("a stream name is a valid tag")?;
            for (at, second) in seconds {
                writer
                    .write_histogram(
                        &second.latency,
                        Duration::from_secs(*at),
                        Duration::from_secs(1),
                        Some(tag),
                    )
                    .map_err(|error| {
                        anyhow::anyhow!("cannot write the histogram log: {error:?}")
                    })?;
            }
        }
        std::fs::write(dir.join("latency.hlog"), log)?;
        // Errors per second go with the summary (the log holds latencies only).
        let errors: BTreeMap<&String, BTreeMap<u64, &BTreeMap<String, u64>>> = self
            .recording
            .streams
            .iter()
            .map(|(stream, seconds)| {
                let by_second = seconds
                    .iter()
                    .filter(|(_, s)| !s.errors.is_empty())
                    .map(|(at, s)| (*at, &s.errors))
                    .collect();
                (stream, by_second)
            })
            .collect();
        let mut summary = serde_json::to_value(&self.summary)?;
        summary["errors_per_second"] = serde_json::to_value(errors)?;
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
        std::fs::write(dir.join("report.html"), html::page(self)?)?;
        Ok(())
    }

    /// Reads a folder [`Report::write`] wrote.
    pub fn load(dir: &Path) -> anyhow::Result<Report> {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{} is not a report folder: no summary.json", dir.display())
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        let summary: Summary =
            serde_json::from_value(value.clone()).with_context(|| path.display().to_string())?;
        let mut recording = Recording::default();
        let log_path = dir.join("latency.hlog");
        let log = std::fs::read(&log_path).with_context(|| log_path.display().to_string())?;
        let mut deserializer = Deserializer::new();
        for entry in IntervalLogIterator::new(&log) {
            let entry =
                entry.map_err(|error| anyhow::anyhow!("{}: {error:?}", log_path.display()))?;
            let LogEntry::Interval(interval) = entry else {
                continue;
            };
            let stream = interval
                .tag()
                .context("an untagged interval in the log")?
                .as_str()
                .to_owned();
            let bytes = base64_decode(interval.encoded_histogram())?;
            let decoded: Histogram<u64> = deserializer
                .deserialize(&mut bytes.as_slice())
                .map_err(|error| anyhow::anyhow!("{}: {error:?}", log_path.display()))?;
            let mut latency = histogram();
            latency.add(&decoded)?;
            let at = interval.start_timestamp().as_secs();
            recording
                .streams
                .entry(stream)
                .or_default()
                .entry(at)
                .or_insert_with(Second::new)
                .latency
                .add(&latency)?;
        }
        if let Some(errors) = value.get("errors_per_second") {
            let errors: BTreeMap<String, BTreeMap<u64, BTreeMap<String, u64>>> =
                serde_json::from_value(errors.clone())?;
            for (stream, seconds) in errors {
                for (at, kinds) in seconds {
                    let second = recording
                        .streams
                        .entry(stream.clone())
                        .or_default()
                        .entry(at)
                        .or_insert_with(Second::new);
                    for (kind, count) in kinds {
                        *second.errors.entry(kind).or_default() += count;
                    }
                }
            }
        }
        Ok(Report { summary, recording })
    }

    /// The end-of-run table: one line per stream.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  errors\n",
            "stream", "ok", "rate/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for stream in &self.summary.streams {
            let errors = stream.errors_text("=", " ");
            let l = &stream.latency_ms;
            out.push_str(&format!(
                "{:<24} {:>10} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {errors}\n",
                stream.name, stream.ok, stream.achieved_rate, l.p50, l.p90, l.p99, l.p999, l.max
            ));
        }
        if let Some(cpu) = self.summary.harness_cpu_us_per_op {
            out.push_str(&format!(
                "harness CPU: {:.2} s, {cpu:.1} µs per request or frame\n",
                self.summary.harness_cpu_s
            ));
        }
        out
    }
}

/// The interval log carries each histogram base64-encoded (standard alphabet).
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("the histogram log holds bad base64")
}

/// Merges report folders (the shards of one run) into one report.
pub fn merge(dirs: &[PathBuf]) -> anyhow::Result<Report> {
    anyhow::ensure!(!dirs.is_empty(), "name at least one report folder");
    let reports: Vec<Report> = dirs
        .iter()
        .map(|dir| Report::load(dir))
        .collect::<anyhow::Result<_>>()?;
    let mut recording = Recording::default();
    for report in &reports {
        recording.add(&report.recording);
    }
    let first = &reports[0].summary;
    let started = reports
        .iter()
        .map(|r| r.summary.started_unix)
        .fold(f64::INFINITY, f64::min);
    let ended = reports
        .iter()
        .map(|r| r.summary.started_unix + r.summary.duration_s)
        .fold(0.0, f64::max);
    let target_rate = reports
        .iter()
        .map(|r| r.summary.target_rate)
        .try_fold(0.0, |sum, rate| rate.map(|r| sum + r));
    let mut notes = vec![format!("merged from {} report folders", reports.len())];
    notes.extend(reports.iter().flat_map(|r| r.summary.notes.iter().cloned()));
    notes.dedup();
    Ok(Report::new(
        RunInfo {
            scenario: first.scenario.clone(),
            shards: reports
                .iter()
                .flat_map(|r| r.summary.shards.iter().cloned())
                .collect(),
            started_unix: started,
            duration_s: ended - started,
            target_rate,
            harness_cpu_s: reports.iter().map(|r| r.summary.harness_cpu_s).sum(),
            notes,
        },
        recording,
    ))
}

/// This process's CPU time (user + system), in seconds.
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(scenario: &str, shard: &str) -> RunInfo {
        RunInfo {
            scenario: scenario.into(),
            shards: vec![shard.into()],
            started_unix: 1_000.0,
            duration_s: 2.0,
            target_rate: Some(50.0),
            harness_cpu_s: 0.5,
            notes: vec![],
        }
    }

    #[test]
    fn two_shards_merge_into_the_percentiles_of_one_recording() {
        // The same latencies recorded once in one recording, and split
        // between two shards written to two folders and merged.
        let one = Recorder::new();
        let shards = [Recorder::new(), Recorder::new()];
        let at = Instant::now();
        for n in 0..20_000u64 {
            // A long tail: mostly sub-millisecond, a few of seconds.
            let micros = if n % 97 == 0 {
                1_000_000 + n * 13
            } else {
                200 + (n * 7919) % 5_000
            };
            let latency = Duration::from_micros(micros);
            let when = at + Duration::from_millis(n / 10);
            one.ok("http.my-rank", latency, when);
            shards[(n % 2) as usize].ok("http.my-rank", latency, when);
            if n % 1000 == 0 {
                one.error("http.my-rank", "timeout", when);
                shards[(n % 2) as usize].error("http.my-rank", "timeout", when);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            let path = dir.path().join(format!("shard{i}"));
            Report::new(info("http", &format!("{}/2", i + 1)), shard.snapshot())
                .write(&path)
                .unwrap();
            dirs.push(path);
        }
        let merged = merge(&dirs).unwrap();
        let whole = Report::new(info("http", "1/1"), one.snapshot());
        let (m, w) = (&merged.summary.streams[0], &whole.summary.streams[0]);
        assert_eq!(m.ok, 20_000);
        assert_eq!(m.ok, w.ok);
        assert_eq!(m.errors, w.errors);
        // Merging HDR histograms is exact: the same buckets, so the same
        // percentiles (not merely within the 3 digits' precision).
        assert_eq!(m.latency_ms, w.latency_ms);
        assert_eq!(merged.summary.target_rate, Some(100.0));
        assert_eq!(merged.summary.shards, vec!["1/2", "2/2"]);
        // A folder read back equals the one written.
        let again = Report::load(&dirs[0]).unwrap();
        assert_eq!(
            again.summary.streams[0].latency_ms,
            Report::new(info("http", "1/2"), shards[0].snapshot())
                .summary
                .streams[0]
                .latency_ms
        );
    }

    #[test]
    fn base64_decodes_the_standard_alphabet() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("AAEC/w==").unwrap(), vec![0, 1, 2, 255]);
        assert!(base64_decode("a*b").is_err());
    }

    #[test]
    fn a_folder_without_a_summary_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = Report::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not a report folder"), "{error}");
    }
}
