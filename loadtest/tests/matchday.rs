//! `loadtest matchday` against the real platform on loopback (tansu, Redis,
//! `ingest run`, `leaderboard serve`, `ws-gateway serve`), at a small size:
//! one command sets the contests up, replays part of a real match, reads and
//! watches during it, and leaves one report with every stream measured.

use std::process::Command;

use leaderboard_testkit::{ipl_dir, Broker, Ingest, Redis, Service};
use serde_json::Value;

#[test]
fn a_match_day_in_one_command_leaves_one_report_of_every_stream() {
    let redis = Redis::start();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let _ingest = Ingest::start(&broker, &redis, dir.path(), &[]);
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
}
