//! Team points and ranks for 1M entries: histogram vs sort.
//!
//! `cargo bench -p leaderboard --bench ranking`

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use leaderboard_core::rank::{ranks_by_histogram, ranks_by_sort, RankTable};
use leaderboard_core::team::{Squad, Team};
use leaderboard_core::{PlayerPoints, TeamPoints};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const ENTRIES: usize = 1_000_000;

fn contest() -> (Vec<Team>, Vec<PlayerPoints>) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut teams = BTreeMap::new();
    teams.insert(
        "A".to_owned(),
        (0..11).map(|i| format!("a{i}")).collect::<Vec<_>>(),
    );
    teams.insert(
        "B".to_owned(),
        (0..11).map(|i| format!("b{i}")).collect::<Vec<_>>(),
    );
    let squad = Squad::from_teams(&teams);
    let names = squad.names().to_vec();
    let entries = (0..ENTRIES)
        .map(|_| {
            let mut pick = names.clone();
            pick.shuffle(&mut rng);
            pick.truncate(11);
            squad
                .team(&pick, &pick[0].clone(), &pick[1].clone())
                .unwrap()
        })
        .collect();
    // Real fantasy points: a few dozen to a couple of hundred per player.
    let table = (0..squad.len())
        .map(|_| PlayerPoints(rng.random_range(-6..220)))
        .collect();
    (entries, table)
}

fn ranking(c: &mut Criterion) {
    let (entries, table) = contest();
    let points: Vec<TeamPoints> = entries.iter().map(|team| team.points(&table)).collect();

    let mut group = c.benchmark_group("ranking_1m");
    group.throughput(Throughput::Elements(ENTRIES as u64));
    group.sample_size(20);
    group.bench_function("team_points", |b| {
        b.iter(|| {
            entries
                .iter()
                .map(|team| team.points(&table))
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("ranks_histogram", |b| {
        b.iter(|| ranks_by_histogram(&points))
    });
    group.bench_function("ranks_sort", |b| b.iter(|| ranks_by_sort(&points)));
    group.bench_function("points_and_ranks_histogram", |b| {
        b.iter(|| {
            let points: Vec<TeamPoints> = entries.iter().map(|team| team.points(&table)).collect();
            ranks_by_histogram(&points)
        })
    });
    group.bench_function("points_and_ranks_sort", |b| {
        b.iter(|| {
            let points: Vec<TeamPoints> = entries.iter().map(|team| team.points(&table)).collect();
            ranks_by_sort(&points)
        })
    });
    group.finish();

    // One entry's rank once the histogram exists (what a read node answers).
    let rank_table = RankTable::build(&points);
    let mut rng = StdRng::seed_from_u64(7);
    c.bench_function("rank_of_one_entry_from_histogram", |b| {
        b.iter_batched(
            || points[rng.random_range(0..ENTRIES)],
            |p| rank_table.rank_of(p),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, ranking);
criterion_main!(benches);
