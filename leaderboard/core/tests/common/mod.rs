//! Test helpers: hand-written Cricsheet matches and the shared IPL data set.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use leaderboard_core::cricsheet::CricsheetMatch;
use leaderboard_core::scoring::score_match;
use leaderboard_core::{MatchId, Rules};
use serde_json::{json, Value};

/// Where the shared Cricsheet IPL matches are: `CRICSHEET_DIR`, or
/// `../shared/data/cricsheet/ipl` beside the project.
pub fn cricsheet_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CRICSHEET_DIR") {
        let dir = PathBuf::from(dir);
        let ipl = dir.join("ipl");
        return if ipl.is_dir() { ipl } else { dir };
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("../shared/data/cricsheet/ipl")
}

/// Every shared match file, sorted by name; fails loudly when the data is missing.
pub fn shared_matches() -> Vec<PathBuf> {
    let dir = cricsheet_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| {
            panic!(
                "cannot read Cricsheet matches in {}: {error}",
                dir.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 72,
        "expected the 72 shared matches in {}",
        dir.display()
    );
    files
}

/// A hand-written match: team A (a1…a11) bats first against team B (b1…b11).
pub struct Fixture {
    players: BTreeMap<String, Vec<String>>,
    innings: Vec<Value>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let mut players = BTreeMap::new();
        players.insert("A".to_owned(), (1..=11).map(|i| format!("a{i}")).collect());
        players.insert("B".to_owned(), (1..=11).map(|i| format!("b{i}")).collect());
        Fixture {
            players,
            innings: Vec::new(),
        }
    }

    /// Adds an innings of overs, each a list of deliveries.
    pub fn innings(mut self, overs: Vec<Vec<Value>>) -> Fixture {
        self.innings.push(innings_json(overs, false));
        self
    }

    pub fn super_over(mut self, overs: Vec<Vec<Value>>) -> Fixture {
        self.innings.push(innings_json(overs, true));
        self
    }

    pub fn json(&self) -> String {
        json!({
            "meta": {"data_version": "1.1.0"},
            "info": {"players": self.players, "teams": ["A", "B"], "balls_per_over": 6},
            "innings": self.innings,
        })
        .to_string()
    }

    /// Scores the fixture with the bundled rules.
    pub fn score(&self) -> BTreeMap<String, i32> {
        let parsed = CricsheetMatch::from_json(&self.json()).expect("fixture is a Cricsheet match");
        score_match(
            Arc::new(Rules::t20_classic()),
            &MatchId::parse("fixture").unwrap(),
            &parsed,
            None,
        )
        .points_by_name()
        .into_iter()
        .map(|(name, points)| (name, points.0))
        .collect()
    }
}

impl Default for Fixture {
    fn default() -> Fixture {
        Fixture::new()
    }
}

fn innings_json(overs: Vec<Vec<Value>>, super_over: bool) -> Value {
    let overs: Vec<Value> = overs
        .into_iter()
        .enumerate()
        .map(|(number, deliveries)| json!({"over": number, "deliveries": deliveries}))
        .collect();
    let mut innings = json!({"team": "A", "overs": overs});
    if super_over {
        innings["super_over"] = json!(true);
    }
    innings
}

/// A delivery: `batter` (non-striker a11) off `bowler` for `runs` off the bat.
pub fn ball(batter: &str, bowler: &str, runs: u32) -> Value {
    json!({
        "batter": batter, "bowler": bowler, "non_striker": "a11",
        "runs": {"batter": runs, "extras": 0, "total": runs}
    })
}

/// `count` dot balls.
pub fn dots(batter: &str, bowler: &str, count: usize) -> Vec<Value> {
    (0..count).map(|_| ball(batter, bowler, 0)).collect()
}

/// Adds an extra (`wides`, `noballs`, `byes`, `legbyes`) of `runs`.
pub fn extra(mut delivery: Value, kind: &str, runs: u32) -> Value {
    delivery["extras"] = json!({ kind: runs });
    delivery["runs"]["extras"] = json!(runs);
    let total = delivery["runs"]["batter"].as_u64().unwrap() + u64::from(runs);
    delivery["runs"]["total"] = json!(total);
    delivery
}

/// Adds a wicket; fielders are (name, substitute).
pub fn wicket(mut delivery: Value, kind: &str, out: &str, fielders: &[(&str, bool)]) -> Value {
    let fielders: Vec<Value> = fielders
        .iter()
        .map(|(name, substitute)| {
            if *substitute {
                json!({"name": name, "substitute": true})
            } else {
                json!({"name": name})
            }
        })
        .collect();
    let mut entry = json!({"player_out": out, "kind": kind});
    if !fielders.is_empty() {
        entry["fielders"] = json!(fielders);
    }
    delivery["wickets"] = json!([entry]);
    delivery
}

/// Marks `runs.non_boundary`.
pub fn non_boundary(mut delivery: Value) -> Value {
    delivery["runs"]["non_boundary"] = json!(true);
    delivery
}

/// A batter's innings of exactly these runs per ball, bowled by rotating bowlers
/// so that no bowling figures interfere.
pub fn batting(batter: &str, per_ball: &[u32]) -> Vec<Vec<Value>> {
    per_ball
        .chunks(6)
        .enumerate()
        .map(|(over, runs)| {
            let bowler = format!("b{}", 2 + over % 9);
            runs.iter().map(|&r| ball(batter, &bowler, r)).collect()
        })
        .collect()
}
