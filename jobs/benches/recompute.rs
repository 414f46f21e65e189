//! The recompute benchmark's two halves (`scripts/bench-recompute` runs both
//! and times `jobs recompute` in between, as its own process):
//!
//! - `setup --entries N --store DIR [--redis URL]`: a generated contest of N
//!   entries with realistic skew (popular players and captains, many equal
//!   teams and scores) and a real match's first overs, written through the
//!   real ingest pipeline to the embedded store and, with `--redis`, to the
//!   live hot state — so the recompute reconciles against real live ranks.
//! - `plans --entries N`: the same contest in memory, ranked by the plain-Rust
//!   limit (team points in a tight loop, `sort_unstable`, histogram ranks, on
//!   one core) and by DataFusion with the histogram plan (`ranks.sql`, the one
//!   the product runs) and the global-window plan (`window.sql`), side by side
//!   in one process. Prints one JSON line.

use std::sync::Arc;
use std::time::Instant;

use ingest::pipeline::Pipeline;
use ingest::topics;
use jobs::compute::{self, ContestTables, EngineOptions, EntriesBuilder};
use leaderboard_core::contest::{ContestMessage, EntryRecord};
use leaderboard_core::points::PlayerPoints;
use leaderboard_core::team::{Team, WEIGHT_CAPTAIN, WEIGHT_PLAYER, WEIGHT_VICE_CAPTAIN};
use leaderboard_core::{ContestId, EntryId, Rules, UserId};
use leaderboard_hot::{self as hot, HotWriter};
use leaderboard_testkit::fixture::{ball, contest_messages, message, squad};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::{Rng, SeedableRng};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The 22 squad players, `a0..a10` and `b0..b10`, with pick weights falling
/// off steeply: the stars are in most teams.
fn players() -> Vec<String> {
    (0..11)
        .map(|i| format!("a{i}"))
        .chain((0..11).map(|i| format!("b{i}")))
        .collect()
}

/// Entry `n`'s team: 11 distinct players drawn by popularity, captain and
/// vice-captain among the first picks. A fixed seed: the same contest every run.
fn teams(count: usize) -> impl Iterator<Item = (usize, Vec<usize>, usize, usize)> {
    let weights: Vec<f64> = (0..22)
        .map(|i| 1.0 / (1.0 + (i % 11) as f64).powf(1.3))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    (0..count).map(move |n| {
        let mut picked = Vec::with_capacity(11);
        let mut w = weights.clone();
        while picked.len() < 11 {
            let index = WeightedIndex::new(&w).unwrap().sample(&mut rng);
            picked.push(index);
            w[index] = 0.0;
        }
        let captain = picked[if rng.random_bool(0.7) { 0 } else { 1 }];
        let vice = *picked.iter().find(|&&p| p != captain).unwrap();
        (n, picked, captain, vice)
    })
}

async fn setup(args: &[String]) {
    let entries: usize = arg(args, "--entries")
        .expect("--entries N")
        .parse()
        .unwrap();
    let dir = arg(args, "--store").expect("--store DIR");
    let store = leaderboard_store::open(&format!("file://{dir}"))
        .await
        .unwrap();
    let mut writer = match arg(args, "--redis") {
        Some(url) => Some(HotWriter::new(hot::connect(&url).await.unwrap(), 10_000)),
        None => None,
    };
    let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
    let names = players();
    let (record, _) = contest_messages();
    let mut record = record;
    record.max_entries = entries as u64 + 1;
    let started = Instant::now();
    let mut flush = async |pipeline: &mut Pipeline| {
        let effects = pipeline.finish_batch();
        store.apply(effects.store).await.unwrap();
        if let Some(writer) = &mut writer {
            writer
                .write(&effects.matches, &effects.contests)
                .await
                .unwrap();
        }
    };
    pipeline.handle(&message(
        topics::CONTEST_ENTRIES,
        0,
        "c1",
        ContestMessage::Contest(record).to_json(),
    ));
    flush(&mut pipeline).await;
    for (n, picked, captain, vice) in teams(entries) {
        let entry = EntryRecord {
            v: 1,
            contest_id: ContestId::parse("c1").unwrap(),
            entry_id: EntryId::parse(&format!("e{n}")).unwrap(),
            user_id: UserId::parse(&format!("u{}", n / 3)).unwrap(),
            players: picked.iter().map(|&p| names[p].clone()).collect(),
            captain: names[captain].clone(),
            vice_captain: names[vice].clone(),
        };
        pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            0,
            "c1",
            ContestMessage::Entry(entry).to_json(),
        ));
        if (n + 1) % 50_000 == 0 {
            flush(&mut pipeline).await;
            eprintln!(
                "setup: {} of {entries} entries ({:.0?})",
                n + 1,
                started.elapsed()
            );
        }
    }
    flush(&mut pipeline).await;
    let lineup = serde_json::to_vec(
        &serde_json::json!({"v":1,"type":"lineup","match_id":"m1","seq":0,"teams":squad()}),
    )
    .unwrap();
    pipeline.handle(&message(topics::MATCH_EVENTS, 0, "m1", lineup));
    flush(&mut pipeline).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for seq in 1..=36 {
        let batter = format!("a{}", rng.random_range(0..6));
        let bowler = format!("b{}", rng.random_range(6..11));
        let runs = [0, 0, 1, 1, 1, 2, 4, 6][rng.random_range(0..8)];
        pipeline.handle(&message(
            topics::MATCH_EVENTS,
            0,
            "m1",
            ball(seq, &batter, &bowler, runs),
        ));
        flush(&mut pipeline).await;
    }
    if let Some(writer) = &writer {
        // A large contest's sorted sets are written in the background.
        writer.settled().await;
    }
    eprintln!(
        "setup: {entries} entries and 36 balls written in {:.1?}",
        started.elapsed()
    );
}

/// Points per squad index after a few overs: some players far ahead, many at 0.
fn player_points() -> Vec<PlayerPoints> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    (0..22)
        .map(|_| PlayerPoints([0, 0, 4, 6, 10, 25, 33, 58][rng.random_range(0..8)]))
        .collect()
}

async fn plans(args: &[String]) {
    let entries: usize = arg(args, "--entries")
        .expect("--entries N")
        .parse()
        .unwrap();
    let names = players();
    let points = player_points();
    let mut builder = EntriesBuilder::new();
    let mut plain: Vec<(Team, String)> = Vec::with_capacity(entries);
    for (n, picked, captain, vice) in teams(entries) {
        let team = Team {
            players: picked
                .iter()
                .map(|&p| p as u32)
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
            captain: picked.iter().position(|&p| p == captain).unwrap() as u8,
            vice_captain: picked.iter().position(|&p| p == vice).unwrap() as u8,
        };
        let id = format!("e{n}");
        builder.push(&id, &format!("u{}", n / 3), &team);
        plain.push((team, id));
    }
    let batches = builder.finish();

    // The plain-Rust limit, on one core.
    let started = Instant::now();
    let mut scored: Vec<(i64, usize)> = plain
        .iter()
        .enumerate()
        .map(|(i, (team, _))| {
            let mut halves = 0;
            for (slot, &player) in team.players.iter().enumerate() {
                let weight = if slot as u8 == team.captain {
                    WEIGHT_CAPTAIN
                } else if slot as u8 == team.vice_captain {
                    WEIGHT_VICE_CAPTAIN
                } else {
                    WEIGHT_PLAYER
                };
                halves += weight * i64::from(points[player as usize].0);
            }
            (halves, i)
        })
        .collect();
    let team_points_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    scored.sort_unstable_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| plain[b.1].1.as_str().cmp(plain[a.1].1.as_str()))
    });
    let sort_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let mut histogram: std::collections::HashMap<i64, u64> = std::collections::HashMap::new();
    for &(halves, _) in &scored {
        *histogram.entry(halves).or_default() += 1;
    }
    let mut values: Vec<(i64, u64)> = histogram.into_iter().collect();
    values.sort_unstable_by_key(|&(halves, _)| std::cmp::Reverse(halves));
    let mut above = 0;
    let mut rank_of = std::collections::HashMap::with_capacity(values.len());
    for (halves, count) in values {
        rank_of.insert(halves, above + 1);
        above += count;
    }
    let ranks: u64 = scored.iter().map(|(halves, _)| rank_of[halves]).sum();
    let histogram_ms = started.elapsed().as_secs_f64() * 1e3;
    std::hint::black_box(ranks);

    // DataFusion, both plans, streaming every ranked row in page order.
    let mut datafusion = serde_json::Map::new();
    for (name, sql) in [
        ("histogram", compute::RANKS_SQL),
        ("window", compute::WINDOW_SQL),
    ] {
        let options = EngineOptions {
            memory_limit: 1536 << 20,
            ..EngineOptions::default()
        };
        let tables = ContestTables::new(&options, batches.clone(), &names, &points).unwrap();
        let started = Instant::now();
        let mut stream = tables.stream(sql).await.unwrap();
        let mut rows = 0usize;
        while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            rows += batch.unwrap().num_rows();
        }
        assert_eq!(rows, entries);
        datafusion.insert(
            format!("{name}_ms"),
            (started.elapsed().as_secs_f64() * 1e3).into(),
        );
    }
    let limit_ms = team_points_ms + sort_ms + histogram_ms;
    let line = serde_json::json!({
        "entries": entries,
        "limit": {"team_points_ms": team_points_ms, "sort_ms": sort_ms, "histogram_ms": histogram_ms, "total_ms": limit_ms},
        "datafusion": datafusion,
        "histogram_vs_limit": datafusion["histogram_ms"].as_f64().unwrap() / limit_ms,
        "window_vs_histogram": datafusion["window_ms"].as_f64().unwrap() / datafusion["histogram_ms"].as_f64().unwrap(),
    });
    println!("{line}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match args.first().map(String::as_str) {
        Some("setup") => runtime.block_on(setup(&args)),
        Some("plans") => runtime.block_on(plans(&args)),
        // `cargo bench` without arguments (or with libtest's `--bench`): nothing to do.
        _ => eprintln!(
            "usage: recompute (setup --entries N --store DIR [--redis URL] | plans --entries N)"
        ),
    }
}
