//! Scoring throughput: deliveries per second through the live engine, on the
//! 72 shared IPL matches.
//!
//! `cargo bench -p leaderboard --bench scoring`

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::event::{EventBody, MatchEvent};
use leaderboard_core::scoring::MatchScorer;
use leaderboard_core::Rules;

fn ipl_dir() -> PathBuf {
    std::env::var("CRICSHEET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.join("ipl").is_dir() {
                dir.join("ipl")
            } else {
                dir
            }
        })
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cricsheet/ipl")
        })
}

fn all_events() -> Vec<Vec<MatchEvent>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(ipl_dir())
        .expect("the shared Cricsheet matches")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let parsed =
                CricsheetMatch::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
            parsed.events(&match_id_from_path(path).unwrap(), None)
        })
        .collect()
}

fn scoring(c: &mut Criterion) {
    let matches = all_events();
    let rules = Arc::new(Rules::t20_classic());
    let deliveries: usize = matches
        .iter()
        .flatten()
        .filter(|event| matches!(event.body, EventBody::Delivery { .. }))
        .count();

    let mut group = c.benchmark_group("scoring");
    group.throughput(Throughput::Elements(deliveries as u64));
    group.bench_function("live_engine_72_matches", |b| {
        b.iter(|| {
            for events in &matches {
                let mut scorer = MatchScorer::new(Arc::clone(&rules));
                for event in events {
                    scorer.apply(event).unwrap();
                }
                std::hint::black_box(scorer.version());
            }
        })
    });
    let raw: Vec<Vec<Vec<u8>>> = matches
        .iter()
        .map(|events| events.iter().map(MatchEvent::to_json).collect())
        .collect();
    group.bench_function("parse_and_score_72_matches", |b| {
        b.iter(|| {
            for events in &raw {
                let mut scorer = MatchScorer::new(Arc::clone(&rules));
                for bytes in events {
                    scorer
                        .apply(&MatchEvent::from_json(bytes).unwrap())
                        .unwrap();
                }
                std::hint::black_box(scorer.version());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, scoring);
criterion_main!(benches);
