//! `loadtest matchday` against the real platform on loopback (tansu, Redis,
//! `ingest run`, `leaderboard serve`, `ws-gateway serve`), at a small size:
//! one command sets the contests up, replays part of a real match, reads and
//! watches during it, and leaves one report with every stream measured.
//! The same live platform then shows that every metric the deploy/ dashboard
//! and alert rules name is one a running service exports.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use leaderboard_testkit::{ipl_dir, Broker, Ingest, Redis, Service};
use serde_json::Value;

#[test]
fn a_match_day_in_one_command_leaves_one_report_of_every_stream() {
    let redis = Redis::start();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::start(&broker, &redis, dir.path(), &[]);
    let env = [
        ("REDIS_URL", redis.url()),
        ("KAFKA_BROKERS", broker.brokers()),
        (
            "STORE",
            format!("file://{}", dir.path().join("store").display()),
        ),
        ("RATE_LIMIT", "0".to_owned()),
    ];
    let api = Service::start("leaderboard", &["serve"], &env, dir.path());
    let gateway = Service::start("ws-gateway", &["serve"], &env, dir.path());
    let jobs = Service::start("jobs", &["schedule", "--every", "2s"], &env, dir.path());
    let out = dir.path().join("report");
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("matchday")
        .arg("--match-file")
        .arg(ipl_dir().join("1136561.json"))
        .args(["--contests", "2", "--entries", "300,1500"])
        // 40 events a tenth of a second apart: a short live match.
        .args(["--events", "40", "--speed", "360"])
        .args(["--rate", "200", "--ws-connections", "40"])
        .args(["--api", &format!("http://127.0.0.1:{}", api.port)])
        .args(["--gateway", &format!("127.0.0.1:{}", gateway.port)])
        .args([
            "--kafka-brokers",
            &broker.brokers(),
            "--redis-url",
            &redis.url(),
        ])
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("report: "), "{stdout}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let streams = summary["streams"].as_array().unwrap();
    let stream = |name: &str| {
        streams
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {summary}"))
    };
    for name in [
        "http.my-rank",
        "http.page",
        "http.around",
        "ingest.produce",
        "ingest.ball-to-notice",
        "ws.subscribe",
        "ws.ball-to-client",
    ] {
        let s = stream(name);
        assert!(
            s["ok"].as_u64().unwrap() > 0,
            "{name} measured nothing: {s}"
        );
        assert_eq!(s["errors"], serde_json::json!({}), "{name}: {s}");
    }
    // Every viewer subscribed once; the balls reached them.
    assert_eq!(stream("ws.subscribe")["ok"], 40);
    assert_eq!(stream("ingest.produce")["ok"], 40);
    let frames = stream("ws.ball-to-client")["ok"].as_u64().unwrap();
    assert!(frames >= 40 * 10, "{frames} frames timed for 40 viewers");
    // Ball → notice and ball → client are live latencies, not replay-long.
    let p99 = stream("ws.ball-to-client")["latency_ms"]["p99"]
        .as_f64()
        .unwrap();
    assert!(p99 < 5_000.0, "ball → client p99 {p99} ms");
    for file in ["latency.hlog", "report.html", "setup/setup.json"] {
        assert!(out.join(file).exists(), "{file} is in the report folder");
    }
    let notes = summary["notes"].to_string();
    assert!(notes.contains("40 open at the end"), "{notes}");

    // deploy/: every metric a dashboard panel or an alert rule names.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut named = BTreeSet::new();
    for file in [
        "grafana/dashboards/live-match.json",
        "prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let found = metric_names(&text);
        assert!(found.len() >= 8, "{file} names {found:?}");
        named.extend(found);
    }
    // The recompute's per-contest series appear once a scheduled recompute ran.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !jobs
        .metrics()
        .contains("jobs_last_snapshot_timestamp_seconds{")
    {
        assert!(
            Instant::now() < deadline,
            "no scheduled recompute within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let exported: BTreeSet<String> = [
        ingest.metrics(),
        api.metrics(),
        gateway.metrics(),
        jobs.metrics(),
    ]
    .iter()
    .flat_map(|text| {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
    .collect();
    // The latencies the dashboard plots were measured during the match.
    let count = |text: &str, series: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let balls = count(&ingest.metrics(), "ingest_event_to_notice_seconds_count");
    assert!(
        balls >= 40.0,
        "ball → notice timed for {balls} of 40 events"
    );
    let reads = count(
        &api.metrics(),
        "leaderboard_http_request_duration_seconds_count{route=\"entry\"}",
    );
    assert!(reads > 100.0, "{reads} my-rank reads timed");
    assert_eq!(
        count(
            &api.metrics(),
            "service_dependency_up{dependency=\"redis\"}"
        ),
        1.0
    );
    let missing: Vec<&String> = named
        .iter()
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/ names metrics no service exports: {missing:?} (exported: {exported:?})"
    );
}

/// The platform's metric names in a text (`ingest_…`, `leaderboard_…`,
/// `ws_…`, `jobs_…`, `service_…`), a histogram's series by its own name.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|token| {
            ["ingest_", "leaderboard_", "ws_", "jobs_", "service_"]
                .iter()
                .any(|prefix| token.starts_with(prefix))
        })
        .map(|token| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| token.strip_suffix(suffix))
                .unwrap_or(token)
                .to_owned()
        })
        .collect()
}
