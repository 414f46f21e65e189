//! `ingest score` as a user runs it: the binary, real match files, real rules files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn ipl_dir() -> PathBuf {
    match std::env::var("CRICSHEET_DIR") {
        Ok(dir) if PathBuf::from(&dir).join("ipl").is_dir() => PathBuf::from(dir).join("ipl"),
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cricsheet/ipl"),
    }
}

fn ingest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(args)
        .env_remove("RULES")
        .output()
        .expect("ingest runs")
}

fn golden() -> BTreeMap<String, BTreeMap<String, Value>> {
    serde_json::from_str(include_str!(
        "../../leaderboard/core/tests/golden/ipl-points.json"
    ))
    .unwrap()
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON line");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn scores_real_matches_as_the_contract_prints_them() {
    let golden = golden();
    for id in ["1136561", "1136600", "1359482"] {
        let file = ipl_dir().join(format!("{id}.json"));
        let output = stdout_json(&ingest(&["score", file.to_str().unwrap()]));
        assert_eq!(output["match"], id);
        assert_eq!(output["players"], golden[id]["full"], "match {id}");
        assert_eq!(
            output.as_object().unwrap().len(),
            2,
            "exactly match and players"
        );

        let partial = stdout_json(&ingest(&["score", file.to_str().unwrap(), "--upto", "120"]));
        assert_eq!(
            partial["players"], golden[id]["upto_120"],
            "match {id} --upto 120"
        );
    }
}

#[test]
fn upto_zero_is_the_lineup_alone() {
    let file = ipl_dir().join("1136561.json");
    let output = stdout_json(&ingest(&["score", file.to_str().unwrap(), "--upto", "0"]));
    let players = output["players"].as_object().unwrap();
    assert_eq!(players.len(), 22);
    assert!(players.values().all(|points| points == 4));
}

#[test]
fn a_file_that_is_not_a_match_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_match = dir.path().join("notes.json");
    std::fs::write(&not_a_match, r#"{"hello": "world"}"#).unwrap();
    for args in [
        vec!["score", not_a_match.to_str().unwrap()],
        vec!["score", env!("CARGO_MANIFEST_DIR")],
        vec!["score", "/no/such/match.json"],
    ] {
        let output = ingest(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("ingest: "), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    let stderr =
        String::from_utf8(ingest(&["score", not_a_match.to_str().unwrap()]).stderr).unwrap();
    assert!(stderr.contains("not a Cricsheet match"), "{stderr}");
}

#[test]
fn a_replaced_rules_file_changes_the_points() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = include_str!("../../leaderboard/core/rules/t20-classic.toml");
    let custom = dir.path().join("double-wickets.toml");
    std::fs::write(&custom, bundled.replace("wicket = 25", "wicket = 50")).unwrap();
    let file = ipl_dir().join("1136561.json");
    let file = file.to_str().unwrap();

    let classic = stdout_json(&ingest(&["score", file]));
    let doubled = stdout_json(&ingest(&[
        "score",
        file,
        "--rules",
        custom.to_str().unwrap(),
    ]));
    let by_env = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["score", file])
        .env("RULES", &custom)
        .output()
        .unwrap();
    assert_eq!(stdout_json(&by_env), doubled, "RULES and --rules agree");
    // M Markande took 3 wickets credited to the bowler in this match.
    let before = classic["players"]["M Markande"].as_i64().unwrap();
    let after = doubled["players"]["M Markande"].as_i64().unwrap();
    assert_eq!(after - before, 3 * 25);

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, bundled.replace("[5, 6)", "[5, 6]")).unwrap();
    let output = ingest(&["score", file, "--rules", broken.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("broken.toml") && stderr.contains("overlap"),
        "{stderr}"
    );
}

#[test]
fn every_binary_has_help() {
    let output = ingest(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("score"), "{help}");
    let output = ingest(&["score", "--help"]);
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("--upto") && help.contains("--rules") && help.contains("RULES"),
        "{help}"
    );
}
