//! `loadtest setup`: contests of generated entries at scale (1K to 10M per
//! contest), published through `contest-entries` like real sign-ups, and a
//! `setup.json` naming them for the other scenarios.
//!
//! Teams are drawn the way real users pick them: a few star players are in
//! most teams (pick weights fall off as a power law), the captain is usually
//! the team's most popular pick, and a large share of entries copy one of a
//! few hundred popular teams, so many entries have identical teams and
//! scores (the ties a leaderboard must rank exactly).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use leaderboard_core::contest::{ContestRecord, EntryRecord};
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::event::EVENT_VERSION;
use leaderboard_core::{ContestId, EntryId, MatchId, UserId};
use leaderboard_hot as hot;
use leaderboard_service::config::{KafkaArgs, RedisArgs};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::progress;

#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// The Cricsheet match whose squad the contests are over (its file name is the match id).
    #[arg(long, value_name = "FILE")]
    pub match_file: PathBuf,
    /// Attach the contests to this match id instead of the file's, e.g. for a
    /// fresh replay of a match that was already played on this platform.
    #[arg(long)]
    pub match_id: Option<MatchId>,
    /// Contests to create.
    #[arg(long, default_value_t = 1)]
    pub contests: usize,
    /// Entries per contest, a comma list cycled over the contests
    /// (e.g. `1000,100000,10000000`).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub entries: Vec<usize>,
    /// Contest ids are this prefix and a number (`lt1`, `lt2`, …).
    #[arg(long, default_value = "lt")]
    pub prefix: String,
    /// Seed of the generated teams: the same contests for the same seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// After publishing, wait until Redis holds every entry (ingest has them).
    #[arg(long)]
    pub wait: bool,
    /// Partitions of topics created when missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Where `setup.json` is written.
    #[arg(long, default_value = "reports/setup")]
    pub out: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// What `setup.json` holds: the contests the other scenarios drive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    pub match_id: MatchId,
    pub match_file: PathBuf,
    pub contests: Vec<SetupContest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupContest {
    pub contest_id: ContestId,
    pub entries: usize,
}

impl Setup {
    pub fn load(path: &Path) -> anyhow::Result<Setup> {
        let path = if path.is_dir() {
            path.join("setup.json")
        } else {
            path.to_owned()
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a setup.json", path.display()))
    }
}

/// Draws realistic teams over a squad.
#[derive(Debug)]
pub struct TeamPicker {
    players: Vec<String>,
    weights: Vec<f64>,
    popular: Vec<(Vec<usize>, usize, usize)>,
    popular_pick: WeightedIndex<f64>,
}

/// The share of entries that copy one of the popular teams.
const COPIED_SHARE: f64 = 0.4;

impl TeamPicker {
    pub fn new(squad: &[String], rng: &mut StdRng) -> TeamPicker {
        let mut players = squad.to_vec();
        players.shuffle(rng);
        // Popularity falls off as a power law of the player's rank.
        let weights: Vec<f64> = (0..players.len())
            .map(|rank| 1.0 / (1.0 + rank as f64).powf(1.2))
            .collect();
        let mut picker = TeamPicker {
            players,
            weights,
            popular: Vec::new(),
            popular_pick: WeightedIndex::new([1.0]).expect("one weight"),
        };
        let popular: Vec<_> = (0..300).map(|_| picker.fresh(rng)).collect();
        let popularity: Vec<f64> = (0..popular.len()).map(|i| 1.0 / (1.0 + i as f64)).collect();
        picker.popular = popular;
        picker.popular_pick = WeightedIndex::new(popularity).expect("positive weights");
        picker
    }

    /// 11 distinct players by popularity; the captain is the first pick most
    /// of the time, the vice-captain another early pick.
    fn fresh(&self, rng: &mut StdRng) -> (Vec<usize>, usize, usize) {
        let mut weights = self.weights.clone();
        let mut picked = Vec::with_capacity(11);
        while picked.len() < 11.min(self.players.len()) {
            let index = WeightedIndex::new(&weights)
                .expect("players left to pick")
                .sample(rng);
            picked.push(index);
            weights[index] = 0.0;
        }
        let captain = if rng.random_bool(0.65) {
            0
        } else {
            rng.random_range(1..4)
        };
        let vice = if captain == 1 { 0 } else { 1 };
        (picked.clone(), picked[captain], picked[vice])
    }

    pub fn entry(&self, contest: &ContestId, n: usize, rng: &mut StdRng) -> EntryRecord {
        let (players, captain, vice) = if rng.random_bool(COPIED_SHARE) {
            self.popular[self.popular_pick.sample(rng)].clone()
        } else {
            self.fresh(rng)
        };
        EntryRecord {
            v: EVENT_VERSION,
            contest_id: contest.clone(),
            entry_id: EntryId::parse(&format!("e{n}")).expect("a valid id"),
            // Some users hold several entries.
            user_id: UserId::parse(&format!("u{}", n.div_ceil(3))).expect("a valid id"),
            players: players.iter().map(|&p| self.players[p].clone()).collect(),
            captain: self.players[captain].clone(),
            vice_captain: self.players[vice].clone(),
        }
    }
}

pub async fn setup(args: SetupArgs) -> anyhow::Result<Setup> {
    anyhow::ensure!(
        args.contests > 0 && !args.entries.is_empty() && args.entries.iter().all(|&n| n > 0),
        crate::BadInput("--contests and every --entries value must be at least 1".into())
    );
    let text = std::fs::read_to_string(&args.match_file)
        .with_context(|| format!("cannot read {}", args.match_file.display()))?;
    let cricsheet =
        CricsheetMatch::from_json(&text).with_context(|| args.match_file.display().to_string())?;
    let match_id = match args.match_id.clone() {
        Some(id) => id,
        None => match_id_from_path(&args.match_file)?,
    };
    let squad: Vec<String> = cricsheet.info.players.values().flatten().cloned().collect();
    ingest::topics::ensure(&args.kafka.brokers, &ingest::topics::ALL, args.partitions).await?;
    let publisher = ingest::contests::ContestPublisher::new(&args.kafka.brokers)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let picker = TeamPicker::new(&squad, &mut rng);
    let mut contests = Vec::new();
    let started = Instant::now();
    for index in 0..args.contests {
        let entries = args.entries[index % args.entries.len()];
        let contest_id = ContestId::parse(&format!("{}{}", args.prefix, index + 1))
            .map_err(|error| crate::BadInput(format!("--prefix: {error}")))?;
        let record: ContestRecord = ingest::contests::contest(
            &contest_id,
            &match_id,
            cricsheet.info.players.clone(),
            entries as u64,
        );
        publisher.contest(&record).await?;
        let bar = progress::counter(entries as u64, &format!("publishing {contest_id}"));
        let mut published = 0;
        while published < entries {
            let chunk: Vec<EntryRecord> = (published + 1..=(published + 50_000).min(entries))
                .map(|n| picker.entry(&contest_id, n, &mut rng))
                .collect();
            publisher.entries(&chunk).await?;
            published += chunk.len();
            bar.set_position(published as u64);
            if bar.is_hidden() {
                tracing::info!(contest = %contest_id, published, entries, "entries published");
            }
        }
        bar.finish_and_clear();
        contests.push(SetupContest {
            contest_id,
            entries,
        });
    }
    tracing::info!(
        contests = contests.len(),
        entries = contests.iter().map(|c| c.entries).sum::<usize>(),
        seconds = started.elapsed().as_secs_f64(),
        "contests published"
    );
    let setup = Setup {
        match_id,
        match_file: args.match_file.clone(),
        contests,
    };
    if args.wait {
        wait_ingested(&args.redis.url, &setup).await?;
    }
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("setup.json");
    std::fs::write(&path, serde_json::to_string_pretty(&setup)?)?;
    println!("setup: {}", path.display());
    Ok(setup)
}

/// Waits until Redis holds every contest's entries: ingest has scored them.
pub async fn wait_ingested(redis_url: &str, setup: &Setup) -> anyhow::Result<()> {
    let mut connection = hot::connect(redis_url).await?;
    let total: usize = setup.contests.iter().map(|c| c.entries).sum();
    let bar = progress::counter(total as u64, "waiting for ingest");
    let started = Instant::now();
    // A 10M-entry contest takes minutes to ingest on two cores.
    let limit = Duration::from_secs(120 + total as u64 / 2_000);
    loop {
        let mut held = 0;
        for contest in &setup.contests {
            let count: Option<usize> = redis::cmd("HGET")
                .arg(hot::contest_meta_key(&contest.contest_id))
                .arg("total")
                .query_async(&mut connection)
                .await?;
            held += count.unwrap_or(0).min(contest.entries);
        }
        bar.set_position(held as u64);
        if held >= total {
            bar.finish_and_clear();
            tracing::info!(
                entries = total,
                seconds = started.elapsed().as_secs_f64(),
                "contests ingested"
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "Redis holds {held} of {total} entries after {} s: is `ingest run` running?",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_are_valid_skewed_and_often_identical() {
        let squad: Vec<String> = (0..22).map(|i| format!("p{i}")).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let picker = TeamPicker::new(&squad, &mut rng);
        let contest = ContestId::parse("c1").unwrap();
        let entries: Vec<EntryRecord> = (1..=20_000)
            .map(|n| picker.entry(&contest, n, &mut rng))
            .collect();
        let mut picks = std::collections::HashMap::<&str, usize>::new();
        let mut teams = std::collections::HashSet::new();
        for entry in &entries {
            let mut players = entry.players.clone();
            players.sort();
            players.dedup();
            assert_eq!(players.len(), 11, "11 distinct players");
            assert!(entry.players.contains(&entry.captain));
            assert!(entry.players.contains(&entry.vice_captain));
            assert_ne!(entry.captain, entry.vice_captain);
            for player in &entry.players {
                *picks.entry(player).or_default() += 1;
            }
            teams.insert((players, entry.captain.clone(), entry.vice_captain.clone()));
        }
        let most = *picks.values().max().unwrap();
        let least = *picks.values().min().unwrap();
        assert!(
            most > 4 * least,
            "stars are picked far more often: {most} vs {least}"
        );
        // The copied share makes many identical teams.
        assert!(
            teams.len() < 15_000,
            "{} distinct teams of 20,000",
            teams.len()
        );
    }
}
