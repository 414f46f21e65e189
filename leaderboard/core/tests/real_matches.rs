//! The engine on the 72 shared IPL matches: golden points, live equals
//! from-scratch, idempotence and corrections.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::event::{EventBody, MatchEvent, EVENT_VERSION};
use leaderboard_core::scoring::{score_match, Applied, ApplyError, MatchScorer};
use leaderboard_core::{MatchId, Rules};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn load(path: &Path) -> (MatchId, CricsheetMatch) {
    let text = std::fs::read_to_string(path).unwrap();
    let parsed = CricsheetMatch::from_json(&text)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    (match_id_from_path(path).unwrap(), parsed)
}

fn as_map(scorer: &MatchScorer) -> BTreeMap<String, i64> {
    scorer
        .points_by_name()
        .into_iter()
        .map(|(name, points)| (name, i64::from(points.0)))
        .collect()
}

fn rules() -> Arc<Rules> {
    Arc::new(Rules::t20_classic())
}

/// The golden file was produced by an independent implementation of the rules
/// (`golden/reference_scorer.py`).
fn golden() -> BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>> {
    serde_json::from_str(include_str!("golden/ipl-points.json")).unwrap()
}

#[test]
fn every_shared_match_scores_exactly_as_the_reference() {
    let golden = golden();
    let files = common::shared_matches();
    for path in &files {
        let (match_id, parsed) = load(path);
        let expected = &golden[match_id.as_str()];
        let full = score_match(rules(), &match_id, &parsed, None);
        assert_eq!(as_map(&full), expected["full"], "match {match_id}");
        let partial = score_match(rules(), &match_id, &parsed, Some(120));
        assert_eq!(
            as_map(&partial),
            expected["upto_120"],
            "match {match_id} upto 120"
        );
    }
    assert_eq!(golden.len(), files.len());
}

#[test]
fn live_points_after_random_balls_equal_scoring_the_truncated_match() {
    let mut rng = StdRng::seed_from_u64(0x1136561);
    for path in common::shared_matches() {
        let (match_id, parsed) = load(&path);
        let events = parsed.events(&match_id, None);
        let regular = parsed.deliveries().filter(|d| !d.super_over).count();
        let mut checkpoints: Vec<usize> = (0..10).map(|_| rng.random_range(0..=regular)).collect();
        checkpoints.sort_unstable();

        let mut live = MatchScorer::new(rules());
        live.apply(&events[0]).unwrap(); // lineup
        let mut applied = 0;
        for upto in checkpoints {
            while applied < upto {
                applied += 1;
                live.apply(&events[applied]).unwrap();
            }
            let from_scratch = score_match(rules(), &match_id, &parsed, Some(upto));
            assert_eq!(
                as_map(&live),
                as_map(&from_scratch),
                "match {match_id} after {upto} balls"
            );
        }
    }
}

#[test]
fn changed_players_are_exactly_those_whose_points_moved() {
    let path = &common::shared_matches()[0];
    let (match_id, parsed) = load(path);
    let mut live = MatchScorer::new(rules());
    let mut previous = BTreeMap::new();
    for event in parsed.events(&match_id, None) {
        let Applied::Changed(changed) = live.apply(&event).unwrap() else {
            panic!("fresh events are never duplicates");
        };
        let now = as_map(&live);
        let moved: BTreeMap<String, i64> = now
            .iter()
            .filter(|(name, points)| previous.get(*name).copied().unwrap_or(0) != **points)
            .map(|(name, points)| (name.clone(), *points))
            .collect();
        let reported: BTreeMap<String, i64> = changed
            .iter()
            .map(|(idx, points)| (live.name(*idx).to_owned(), i64::from(points.0)))
            .collect();
        assert_eq!(reported, moved, "event {}", event.seq);
        previous = now;
    }
}

#[test]
fn replayed_events_are_applied_once() {
    let path = &common::shared_matches()[5];
    let (match_id, parsed) = load(path);
    let events = parsed.events(&match_id, None);
    let mut scorer = MatchScorer::new(rules());
    // Producers retry: every event arrives twice, some three times.
    for (i, event) in events.iter().enumerate() {
        assert!(matches!(scorer.apply(event).unwrap(), Applied::Changed(_)));
        assert_eq!(scorer.apply(event).unwrap(), Applied::Duplicate);
        if i % 7 == 0 {
            assert_eq!(scorer.apply(&events[i / 2]).unwrap(), Applied::Duplicate);
        }
    }
    let clean = score_match(rules(), &match_id, &parsed, None);
    assert_eq!(as_map(&scorer), as_map(&clean));
    assert_eq!(scorer.version(), events.len() as u64);
}

/// Rewrites a delivery into a wrong one: a wicket-taking six.
fn corrupted(delivery: &leaderboard_core::Delivery) -> leaderboard_core::Delivery {
    let mut value = serde_json::to_value(delivery).unwrap();
    value["runs"]["batter"] = Value::from(6);
    value["wickets"] = serde_json::json!([{"player_out": delivery.batter, "kind": "caught",
        "fielders": [{"name": delivery.non_striker}]}]);
    serde_json::from_value(value).unwrap()
}

#[test]
fn corrections_re_derive_every_score_from_the_corrected_log() {
    let mut rng = StdRng::seed_from_u64(250);
    for path in common::shared_matches().iter().step_by(9) {
        let (match_id, parsed) = load(path);
        let clean_events = parsed.events(&match_id, None);
        let last = clean_events.len() - 1; // match_end
                                           // Corrupt three deliveries, then correct each a few balls later.
        let targets: Vec<u64> = (0..3).map(|_| rng.random_range(1..last as u64)).collect();
        let mut scorer = MatchScorer::new(rules());
        let mut next_seq = clean_events.len() as u64;
        let mut pending = Vec::new();
        for event in &clean_events[..last] {
            let mut event = event.clone();
            if targets.contains(&event.seq) {
                if let EventBody::Delivery { delivery, .. } = &mut event.body {
                    pending.push((event.seq, delivery.clone()));
                    *delivery = corrupted(delivery);
                }
            }
            scorer.apply(&event).unwrap();
            if event.seq % 5 == 0 {
                for (corrects, delivery) in pending.drain(..) {
                    let correction = MatchEvent {
                        v: EVENT_VERSION,
                        match_id: match_id.clone(),
                        seq: next_seq,
                        body: EventBody::Correction { corrects, delivery },
                    };
                    next_seq += 1;
                    assert!(matches!(
                        scorer.apply(&correction).unwrap(),
                        Applied::Changed(_)
                    ));
                }
            }
        }
        for (corrects, delivery) in pending.drain(..) {
            let correction = MatchEvent {
                v: EVENT_VERSION,
                match_id: match_id.clone(),
                seq: next_seq,
                body: EventBody::Correction { corrects, delivery },
            };
            next_seq += 1;
            scorer.apply(&correction).unwrap();
        }
        let clean = score_match(rules(), &match_id, &parsed, None);
        assert_eq!(as_map(&scorer), as_map(&clean), "match {match_id}");
    }
}

#[test]
fn a_correction_changes_the_score_like_the_corrected_file() {
    let path = &common::shared_matches()[10];
    let (match_id, parsed) = load(path);
    let events = parsed.events(&match_id, None);
    let mut scorer = MatchScorer::new(rules());
    for event in &events[..events.len() - 1] {
        scorer.apply(event).unwrap();
    }
    let EventBody::Delivery { delivery, .. } = &events[40].body else {
        panic!("event 40 is a delivery");
    };
    let wrong = corrupted(delivery);
    scorer
        .apply(&MatchEvent {
            v: EVENT_VERSION,
            match_id: match_id.clone(),
            seq: events.len() as u64,
            body: EventBody::Correction {
                corrects: 40,
                delivery: wrong.clone(),
            },
        })
        .unwrap();
    // Score the same correction applied to the file itself.
    let mut edited = parsed.clone();
    let mut seen = 0;
    'outer: for innings in &mut edited.innings {
        for over in &mut innings.overs {
            for d in &mut over.deliveries {
                seen += 1;
                if seen == 40 {
                    *d = wrong.clone();
                    break 'outer;
                }
            }
        }
    }
    let expected = score_match(rules(), &match_id, &edited, None);
    assert_eq!(as_map(&scorer), as_map(&expected));
    assert_ne!(
        as_map(&scorer),
        as_map(&score_match(rules(), &match_id, &parsed, None))
    );
}

#[test]
fn a_correction_of_an_unknown_event_is_refused() {
    let path = &common::shared_matches()[0];
    let (match_id, parsed) = load(path);
    let events = parsed.events(&match_id, Some(5));
    let mut scorer = MatchScorer::new(rules());
    for event in &events {
        scorer.apply(event).unwrap();
    }
    let EventBody::Delivery { delivery, .. } = &events[1].body else {
        panic!("event 1 is a delivery");
    };
    let error = scorer
        .apply(&MatchEvent {
            v: EVENT_VERSION,
            match_id,
            seq: 99,
            body: EventBody::Correction {
                corrects: 0, // the lineup, not a delivery
                delivery: delivery.clone(),
            },
        })
        .unwrap_err();
    assert_eq!(
        error,
        ApplyError::UnknownCorrectionTarget {
            seq: 99,
            corrects: 0
        }
    );
}
