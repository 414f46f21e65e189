//! The live pipeline end to end, with a real Redis, a real Kafka-protocol
//! broker (tansu) and `ingest run` as a real process: replays of shared
//! matches must end exactly where `ingest score` does, through corrections,
//! bad input, kill -9 and a flushed Redis.

use leaderboard_testkit as support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ingest::replay::ReplayArgs;
use ingest::topics;
use leaderboard_core::contest::{ContestRecord, EntryRecord};
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::rank::ranks_by_sort;
use leaderboard_core::scoring::{score_match, MatchScorer};
use leaderboard_core::team::Squad;
use leaderboard_core::{ContestId, MatchId, Rules, TeamPoints};
use leaderboard_hot as hot;
use leaderboard_service::config::KafkaArgs;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use redis::Commands;
use support::{ipl_dir, metric, wait_until, Broker, Ingest, Redis};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn load(match_id: &str) -> (MatchId, CricsheetMatch, std::path::PathBuf) {
    let path = ipl_dir().join(format!("{match_id}.json"));
    let parsed = CricsheetMatch::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (match_id_from_path(&path).unwrap(), parsed, path)
}

fn offline(match_id: &MatchId, parsed: &CricsheetMatch) -> MatchScorer {
    score_match(Arc::new(Rules::t20_classic()), match_id, parsed, None)
}

struct Contest {
    record: ContestRecord,
    entries: Vec<EntryRecord>,
}

fn make_contest(id: &str, match_id: &MatchId, parsed: &CricsheetMatch, count: usize) -> Contest {
    let record = ingest::contests::contest(
        &ContestId::parse(id).unwrap(),
        match_id,
        parsed.info.players.clone(),
        1_000_000,
    );
    let entries = ingest::contests::entries(&record, count, 9);
    Contest { record, entries }
}

fn replay_args(broker: &Broker, files: &[&Path], speed: f64, corrections: bool) -> ReplayArgs {
    ReplayArgs {
        files: files.iter().map(|p| p.to_path_buf()).collect(),
        speed,
        corrections,
        seed: 3,
        kafka: KafkaArgs {
            brokers: broker.brokers(),
        },
        partitions: 3,
    }
}

/// The applied `seq` Redis reports for a match.
fn redis_seq(connection: &mut support::TestConnection, match_id: &MatchId) -> Option<u64> {
    connection
        .hget(hot::match_meta_key(match_id), "seq")
        .ok()
        .flatten()
}

/// Every entry's team points and rank, by brute force from the domain core.
fn expected_entries(contest: &Contest, scorer: &MatchScorer) -> (Vec<TeamPoints>, Vec<u32>) {
    let squad = Squad::from_teams(&contest.record.squad);
    let table = squad.points_table(|name| scorer.points_of(name));
    let team_points: Vec<TeamPoints> = contest
        .entries
        .iter()
        .map(|e| {
            squad
                .team(&e.players, &e.captain, &e.vice_captain)
                .unwrap()
                .points(&table)
        })
        .collect();
    let ranks = ranks_by_sort(&team_points);
    (team_points, ranks)
}

/// Player points in Redis equal the offline score, and every entry's points,
/// rank, the histogram and the total equal the domain core's brute force.
fn assert_redis_matches_offline(
    redis: &Redis,
    match_id: &MatchId,
    scorer: &MatchScorer,
    contest: &Contest,
) {
    wait_for_entries(redis, contest, 60);
    let mut connection = redis.connection();
    let points: BTreeMap<String, i64> =
        connection.hgetall(hot::match_points_key(match_id)).unwrap();
    let expected: BTreeMap<String, i64> = scorer
        .points_by_name()
        .into_iter()
        .map(|(name, points)| (name, i64::from(points.0)))
        .collect();
    assert_eq!(points, expected, "player points of match {match_id}");

    let (team_points, ranks) = expected_entries(contest, scorer);
    let contest_id = &contest.record.contest_id;
    let stored: HashMap<String, f64> = connection
        .zrange_withscores::<_, Vec<(String, f64)>>(hot::contest_ranks_key(contest_id), 0, -1)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(stored.len(), contest.entries.len(), "every entry is ranked");
    let mut histogram: BTreeMap<i64, u64> = BTreeMap::new();
    for ((entry, points), rank) in contest.entries.iter().zip(&team_points).zip(&ranks) {
        let score = stored[entry.entry_id.as_str()];
        assert_eq!(
            TeamPoints::from_f64_exact(score),
            Some(*points),
            "points of {}",
            entry.entry_id
        );
        let above: u64 = redis::cmd("ZCOUNT")
            .arg(hot::contest_ranks_key(contest_id))
            .arg(format!("({score}"))
            .arg("+inf")
            .query(&mut connection)
            .unwrap();
        assert_eq!(above + 1, u64::from(*rank), "rank of {}", entry.entry_id);
        *histogram.entry(points.halves()).or_default() += 1;
    }
    let stored_histogram: BTreeMap<i64, u64> = connection
        .hgetall(hot::contest_histogram_key(contest_id))
        .unwrap();
    assert_eq!(stored_histogram, histogram, "histogram of {contest_id}");
    let total: u64 = connection
        .hget(hot::contest_meta_key(contest_id), "total")
        .unwrap();
    assert_eq!(total, contest.entries.len() as u64);
}

fn wait_for_match_end(redis: &Redis, match_id: &MatchId, last_seq: u64, seconds: u64) {
    let mut connection = redis.connection();
    wait_until(seconds, "the whole match in Redis", || {
        redis_seq(&mut connection, match_id) == Some(last_seq)
    });
}

fn wait_for_entries(redis: &Redis, contest: &Contest, seconds: u64) {
    let mut connection = redis.connection();
    let key = hot::contest_meta_key(&contest.record.contest_id);
    wait_until(seconds, "every entry in Redis", || {
        connection
            .hget::<_, _, Option<u64>>(&key, "total")
            .ok()
            .flatten()
            == Some(contest.entries.len() as u64)
    });
}

/// Publishes raw payloads to a topic.
async fn publish_raw(brokers: &str, topic: &str, messages: &[(&str, &[u8])]) {
    let producer: FutureProducer = ingest::kafka::producer_config(brokers).create().unwrap();
    for (key, payload) in messages {
        producer
            .send(
                FutureRecord::to(topic).key(*key).payload(*payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// Reads every message of a dead-letter topic.
fn read_dead_letters(brokers: &str, topic: &str, expected: usize) -> Vec<serde_json::Value> {
    let consumer: BaseConsumer =
        ingest::kafka::consumer_config(brokers, &format!("dlq-reader-{}", rand::random::<u32>()))
            .create()
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while letters.len() < expected && std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            letters.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
        }
    }
    letters
}

#[test]
fn replayed_matches_with_corrections_and_bad_input_end_as_the_offline_score() {
    let redis = Redis::start();
    let broker = Broker::start();
    let work = tempfile::tempdir().unwrap();
    let rt = runtime();
    let ingest = Ingest::start(&broker, &redis, work.path(), &[]);

    let (first_id, first, first_path) = load("1136561");
    let (second_id, second, second_path) = load("1359482");
    let first_contest = make_contest("c1", &first_id, &first, 2_000);
    let second_contest = make_contest("c2", &second_id, &second, 300);
    rt.block_on(async {
        for contest in [&first_contest, &second_contest] {
            ingest::contests::publish(&broker.brokers(), &contest.record, &contest.entries)
                .await
                .unwrap();
        }
        // Bad input: an entry outside the squad, an unknown contest, malformed events.
        let mut outsider = first_contest.entries[0].clone();
        outsider.entry_id = leaderboard_core::EntryId::parse("bad1").unwrap();
        outsider.players[3] = "Nobody".into();
        let orphan = EntryRecord {
            contest_id: ContestId::parse("nope").unwrap(),
            ..first_contest.entries[1].clone()
        };
        let outsider = leaderboard_core::contest::ContestMessage::Entry(outsider).to_json();
        let orphan = leaderboard_core::contest::ContestMessage::Entry(orphan).to_json();
        publish_raw(
            &broker.brokers(),
            "contest-entries",
            &[("c1", &outsider), ("nope", &orphan)],
        )
        .await;
        publish_raw(
            &broker.brokers(),
            "match-events",
            &[
                ("1136561", b"{not json"),
                (
                    "1136561",
                    br#"{"v":1,"type":"toss","match_id":"1136561","seq":9999}"#,
                ),
            ],
        )
        .await;
        ingest::replay::run(&replay_args(
            &broker,
            &[&first_path, &second_path],
            0.0,
            true,
        ))
        .await
        .unwrap();
    });

    // The corrections add two events per corrupted delivery: 3 per match.
    let first_last = first.events(&first_id, None).len() as u64 - 1 + 3;
    let second_last = second.events(&second_id, None).len() as u64 - 1 + 3;
    wait_for_match_end(&redis, &first_id, first_last, 60);
    wait_for_match_end(&redis, &second_id, second_last, 60);
    assert_redis_matches_offline(
        &redis,
        &first_id,
        &offline(&first_id, &first),
        &first_contest,
    );
    assert_redis_matches_offline(
        &redis,
        &second_id,
        &offline(&second_id, &second),
        &second_contest,
    );

    // The read API answers every entry's rank and points exactly.
    let api = rt.block_on(support::serve_api(&redis.url(), None, Default::default()));
    let scorer = offline(&first_id, &first);
    let (team_points, ranks) = expected_entries(&first_contest, &scorer);
    for (index, entry) in first_contest.entries.iter().enumerate().step_by(13) {
        let (status, _, body) = support::http(
            api.0,
            &format!("/v1/contests/c1/entries/{}", entry.entry_id),
        );
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            TeamPoints::from_f64_exact(body["points"].as_f64().unwrap()),
            Some(team_points[index])
        );
        assert_eq!(body["rank"], ranks[index], "rank of {}", entry.entry_id);
    }
    let (status, _, top) = support::http(api.0, "/v1/contests/c1/leaderboard?limit=10");
    assert_eq!(status, 200);
    let top: serde_json::Value = serde_json::from_str(&top).unwrap();
    assert_eq!(top["entries"][0]["rank"], 1);
    assert_eq!(top["total"], 2_000);
    let (status, _, players) = support::http(api.0, "/v1/matches/1136561/players");
    assert_eq!(status, 200);
    let players: serde_json::Value = serde_json::from_str(&players).unwrap();
    assert_eq!(
        players["players"]["HH Pandya"],
        scorer.points_of("HH Pandya").0
    );
    api.2.cancel();
    let final_version = top["version"].as_u64().unwrap();

    // Both matches ended: their contests' final standings are in the durable
    // store and their hot keys now expire (the service's default retention).
    // Once Redis has forgotten c1 (deleted here rather than waiting hours),
    // the read API answers it from the store, exactly and at its version.
    let c1 = ContestId::parse("c1").unwrap();
    let mut connection = redis.connection();
    let ttl: i64 = connection.ttl(hot::contest_ranks_key(&c1)).unwrap();
    assert!((1..=21_600).contains(&ttl), "retention set: TTL {ttl}");
    let _: () = connection
        .del(&[
            hot::contest_ranks_key(&c1),
            hot::contest_histogram_key(&c1),
            hot::contest_users_key(&c1),
            hot::contest_teams_key(&c1),
            hot::contest_squad_key(&c1),
            hot::contest_meta_key(&c1),
        ])
        .unwrap();
    let store_dir = work.path().join("store");
    let api = rt.block_on(support::serve_api(
        &redis.url(),
        Some(&store_dir),
        Default::default(),
    ));
    for (index, entry) in first_contest.entries.iter().enumerate().step_by(7) {
        let (status, _, body) = support::http(
            api.0,
            &format!("/v1/contests/c1/entries/{}", entry.entry_id),
        );
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["snapshot"]["source"], "final", "{body}");
        assert_eq!(body["version"], final_version);
        assert_eq!(body["total"], 2_000);
        assert_eq!(
            TeamPoints::from_f64_exact(body["points"].as_f64().unwrap()),
            Some(team_points[index])
        );
        assert_eq!(
            body["rank"], ranks[index],
            "stored rank of {}",
            entry.entry_id
        );
    }
    let mut by_points: Vec<(TeamPoints, u32)> = team_points
        .iter()
        .copied()
        .zip(ranks.iter().copied())
        .collect();
    by_points.sort_by(|a, b| b.cmp(a));
    let mut offset = 0;
    while offset < 2_000 {
        let (status, _, page) = support::http(
            api.0,
            &format!("/v1/contests/c1/leaderboard?offset={offset}&limit=200"),
        );
        assert_eq!(status, 200, "{page}");
        let page: serde_json::Value = serde_json::from_str(&page).unwrap();
        assert_eq!(page["snapshot"]["source"], "final");
        assert_eq!(page["version"], final_version);
        let rows = page["entries"].as_array().unwrap();
        assert_eq!(rows.len(), 200);
        for (row, expected) in rows.iter().zip(&by_points[offset..]) {
            assert_eq!(
                TeamPoints::from_f64_exact(row["points"].as_f64().unwrap()),
                Some(expected.0)
            );
            assert_eq!(row["rank"], expected.1);
        }
        offset += 200;
    }
    let around_entry = &first_contest.entries[500].entry_id;
    let (status, _, around) = support::http(
        api.0,
        &format!("/v1/contests/c1/entries/{around_entry}/around?radius=3"),
    );
    assert_eq!(status, 200, "{around}");
    let around: serde_json::Value = serde_json::from_str(&around).unwrap();
    let rows = around["entries"].as_array().unwrap();
    assert!(rows.len() >= 4 && rows.len() <= 7, "{around}");
    assert!(rows
        .iter()
        .any(|row| row["entry_id"] == around_entry.as_str()));
    let (status, _, missing) = support::http(api.0, "/v1/contests/c1/entries/nobody");
    assert_eq!(status, 404, "{missing}");
    // c2 is still hot: answered live, without a snapshot.
    let (status, _, live) = support::http(api.0, "/v1/contests/c2/leaderboard?limit=3");
    assert_eq!(status, 200);
    assert!(!live.contains("snapshot"), "{live}");
    let (status, _, ready) = support::http(api.0, "/readyz");
    assert_eq!(status, 200, "Redis and the store answer: {ready}");
    api.2.cancel();

    let letters = read_dead_letters(&broker.brokers(), "contest-entries-dlq", 2);
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("`Nobody` is not in the contest's squad")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("contest `nope` is unknown")),
        "{reasons:?}"
    );
    let letters = read_dead_letters(&broker.brokers(), "match-events-dlq", 2);
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("not a match event")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("toss")), "{reasons:?}");
    assert!(
        letters.iter().any(|l| l["payload"] == "{not json"),
        "the original payload travels"
    );

    let metrics = ingest.metrics();
    for name in [
        "ingest_events_consumed_total",
        "ingest_events_applied_total",
        "ingest_events_duplicate_total",
        "ingest_events_dlq_total{topic=\"match-events-dlq\"} 2",
        "ingest_events_dlq_total{topic=\"contest-entries-dlq\"} 2",
        "ingest_event_apply_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(ingest.stop().success(), "SIGTERM stops ingest cleanly");
}

/// Small batches make many commit points; a static group member takes its
/// partitions back at once after a restart.
const STATIC_MEMBER: &[&str] = &["--batch-max", "7", "--instance-id", "ingest-0"];

#[test]
fn kill_9_at_random_points_loses_nothing_and_counts_nothing_twice() {
    let redis = Redis::start();
    let broker = Broker::start();
    let work = tempfile::tempdir().unwrap();
    eprintln!("WORK {}", work.path().display());
    let work = Box::leak(Box::new(work));
    let rt = runtime();
    let (match_id, parsed, path) = load("1136600");
    let contest = make_contest("k1", &match_id, &parsed, 1_000);
    let last_seq = parsed.events(&match_id, None).len() as u64 - 1;

    let mut ingest = Some(Ingest::start(&broker, &redis, work.path(), STATIC_MEMBER));
    rt.block_on(ingest::contests::publish(
        &broker.brokers(),
        &contest.record,
        &contest.entries,
    ))
    .unwrap();
    // About 250 events, one every 12 ms.
    let args = replay_args(&broker, &[&path], 3000.0, false);
    let replay = rt.spawn(async move { ingest::replay::run(&args).await });
    // Kill at six random points of the match, each as soon as Redis shows
    // that point was applied: mid-stream, with entries still arriving too.
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut kill_points: Vec<u64> = (0..6).map(|_| rng.random_range(5..last_seq - 5)).collect();
    kill_points.sort_unstable();
    let mut connection = redis.connection();
    for (kill, point) in kill_points.iter().enumerate() {
        wait_until(120, "the next kill point", || {
            redis_seq(&mut connection, &match_id).unwrap_or(0) >= *point
        });
        ingest.take().unwrap().kill();
        eprintln!("kill -9 number {} at seq {point}", kill + 1);
        let restarted = Ingest::start(&broker, &redis, work.path(), STATIC_MEMBER);
        // The next kill waits until this replica's router and scorer hold
        // their partitions: tansu can leave a static member that replaces
        // one killed mid-join without partitions for minutes (it expires
        // members lazily), and a router holding none routes nothing.
        wait_until(120, "the restarted replica to hold its partitions", || {
            [
                topics::MATCH_EVENTS,
                topics::CONTEST_ENTRIES,
                topics::BY_MATCH,
            ]
            .iter()
            .all(|topic| {
                metric(
                    restarted.admin_port,
                    &format!("ingest_assigned_partitions{{topic=\"{topic}\"}} "),
                ) == 3.0
            })
        });
        ingest = Some(restarted);
    }
    rt.block_on(replay).unwrap().unwrap();
    wait_for_match_end(&redis, &match_id, last_seq, 60);
    let scorer = offline(&match_id, &parsed);
    assert_redis_matches_offline(&redis, &match_id, &scorer, &contest);

    // One more restart replays nothing new and changes nothing.
    ingest.take().unwrap().kill();
    let restarted = Ingest::start(&broker, &redis, work.path(), &["--instance-id", "ingest-0"]);
    // Once it has rewritten Redis from its store and is ready, nothing moved.
    wait_until(
        60,
        "the restarted service to rewrite Redis and be ready",
        || {
            restarted
                .metrics()
                .contains("ingest_redis_rebuilds_total 1")
                && restarted.readiness().0 == 200
        },
    );
    assert_redis_matches_offline(&redis, &match_id, &scorer, &contest);
    drop(restarted);
}

/// A running pipeline (Redis, tansu, `ingest run`) with a contest on a real
/// match whose replay runs in the background.
struct LiveMatch {
    redis: Redis,
    // Kept alive for the test's duration.
    _broker: Broker,
    _work: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    match_id: MatchId,
    parsed: CricsheetMatch,
    contest: Contest,
    last_seq: u64,
    ingest: Ingest,
    replay: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl LiveMatch {
    fn start(match_file: &str, contest_id: &str, entries: usize, speed: f64) -> LiveMatch {
        let redis = Redis::start();
        let broker = Broker::start();
        let work = tempfile::tempdir().unwrap();
        let rt = runtime();
        let (match_id, parsed, path) = load(match_file);
        let contest = make_contest(contest_id, &match_id, &parsed, entries);
        let last_seq = parsed.events(&match_id, None).len() as u64 - 1;
        let ingest = Ingest::start(&broker, &redis, work.path(), &[]);
        rt.block_on(ingest::contests::publish(
            &broker.brokers(),
            &contest.record,
            &contest.entries,
        ))
        .unwrap();
        let args = replay_args(&broker, &[&path], speed, false);
        let replay = rt.spawn(async move { ingest::replay::run(&args).await });
        LiveMatch {
            redis,
            _broker: broker,
            _work: work,
            rt,
            match_id,
            parsed,
            contest,
            last_seq,
            ingest,
            replay,
        }
    }

    fn wait_past(&self, seq: u64) {
        let mut connection = self.redis.connection();
        wait_until(30, "the match under way", || {
            redis_seq(&mut connection, &self.match_id).unwrap_or(0) > seq
        });
    }

    /// Waits for the replay and the whole match, then compares with `ingest score`.
    fn finish_and_check(&mut self) {
        let replay = std::mem::replace(&mut self.replay, self.rt.spawn(async { Ok(()) }));
        self.rt.block_on(replay).unwrap().unwrap();
        self.check_within(60);
    }

    fn check_within(&self, seconds: u64) {
        wait_for_match_end(&self.redis, &self.match_id, self.last_seq, seconds);
        let scorer = offline(&self.match_id, &self.parsed);
        assert_redis_matches_offline(&self.redis, &self.match_id, &scorer, &self.contest);
    }
}

#[test]
fn a_flushed_redis_is_rebuilt_by_the_service() {
    let mut live = LiveMatch::start("1136570", "f1", 500, 4000.0);
    live.wait_past(100);
    let admin_port = live.ingest.admin_port;
    let rebuilds = || metric(admin_port, "ingest_redis_rebuilds_total ");
    let mut connection = live.redis.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut connection).unwrap();
    live.finish_and_check();
    // Start-up, then at least one rebuild: a flush that lands between the
    // liveness check and a write is first seen as that write's gaps, which
    // are rewritten as one more rebuild.
    let after_first = rebuilds();
    assert!(
        after_first >= 2.0,
        "start-up plus the flush's rebuild: {after_first}"
    );
    // A flush after the match ended is noticed with no new event at all.
    let _: () = redis::cmd("FLUSHALL").query(&mut connection).unwrap();
    live.check_within(10);
    // Counted once the rewrite has also restarted the retention clocks,
    // just after the state the check read was written.
    wait_until(10, "the second flush's rebuild to be counted", || {
        rebuilds() > after_first
    });
}

#[test]
fn a_redis_outage_is_retried_and_the_state_rebuilt() {
    let mut live = LiveMatch::start("1136580", "o1", 400, 3000.0);
    live.wait_past(60);
    // Redis goes away while balls keep coming, and comes back empty: not
    // ready during the outage, ready again once it is over.
    live.redis.kill();
    wait_until(30, "/readyz to answer 503 during the outage", || {
        live.ingest.readiness().0 == 503
    });
    live.redis.restart();
    wait_until(60, "/readyz to answer 200 after the outage", || {
        live.ingest.readiness().0 == 200
    });
    live.finish_and_check();
    let metrics = live.ingest.metrics();
    assert!(
        metrics.contains("ingest_retries_total{target=\"redis\"}"),
        "the outage was retried:\n{metrics}"
    );
    let LiveMatch { ingest, .. } = live;
    assert!(ingest.stop().success(), "still running, and stops cleanly");
}

#[test]
fn a_write_redis_refuses_is_retried_and_the_service_not_ready_meanwhile() {
    let mut live = LiveMatch::start("1136590", "w1", 300, 3000.0);
    live.wait_past(40);
    let mut connection = live.redis.connection();
    // Redis still answers PING, but refuses every write (OOM).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut connection)
        .unwrap();
    wait_until(60, "/readyz to name the failing writes", || {
        let (status, body) = live.ingest.readiness();
        status == 503 && body.contains("pipeline") && body.contains("OOM")
    });
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut connection)
        .unwrap();
    wait_until(60, "/readyz to answer 200 once writes pass", || {
        live.ingest.readiness().0 == 200
    });
    live.finish_and_check();
}

#[test]
fn a_permanent_failure_stops_the_service_with_its_reason() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"]);
    let work = tempfile::tempdir().unwrap();
    let wrong = format!("redis://:not-the-password@127.0.0.1:{}", redis.port);
    // No broker is needed: Redis is reached first, and refuses the login.
    let mut ingest = Ingest::start_at("127.0.0.1:1", &wrong, work.path(), &[]);
    let status = ingest.wait_exit(60);
    assert_eq!(status.code(), Some(1), "exits non-zero");
    let log = std::fs::read_to_string(work.path().join("ingest.log")).unwrap();
    assert!(
        log.contains("failed permanently") && log.contains("authentication failed"),
        "the reason is on stderr:\n{log}"
    );
}

/// Three `ingest run` replicas in one group, sharing one store, on topics of
/// six partitions.
fn replicas(broker: &Broker, redis: &Redis, work: &Path) -> Vec<Option<Ingest>> {
    (0..3)
        .map(|i| Some(replica(broker, redis, work, i)))
        .collect()
}

/// Replica `i`, a static group member (`--instance-id replica-i`).
fn replica(broker: &Broker, redis: &Redis, work: &Path, i: usize) -> Ingest {
    let id = format!("replica-{i}");
    Ingest::start(
        broker,
        redis,
        work,
        &["--partitions", "6", "--instance-id", &id],
    )
}

/// Which replica owns the internal partition of `match_id`, by its metrics.
fn owner_of(nodes: &[Option<Ingest>], match_id: &MatchId) -> Option<usize> {
    let series = format!(
        "ingest_owned_partition{{partition=\"{}\"}} 1",
        ingest::routing::partition_of(match_id, 6)
    );
    nodes
        .iter()
        .position(|node| node.as_ref().is_some_and(|n| n.metrics().contains(&series)))
}

/// Two real matches with corrections, four contests, through three replicas;
/// with `kill_at`, the replica owning the first match is killed -9 once Redis
/// shows that `seq`. Tansu 0.6 does not take a dead member's partitions away
/// on its own (see `tansu_expires_a_dead_member_only_when_another_joins`), so
/// the killed replica comes back under its static instance id and takes its
/// partitions back at once, rebuilding them from the store.
fn replicas_end_as_the_offline_score(kill_at: Option<u64>) {
    let redis = Redis::start();
    let broker = Broker::start();
    let work = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut nodes = replicas(&broker, &redis, work.path());
    let (first_id, first, first_path) = load("1136561");
    let (second_id, second, second_path) = load("1359482");
    let contests = [
        make_contest("r1", &first_id, &first, 600),
        make_contest("r2", &first_id, &first, 200),
        make_contest("r3", &second_id, &second, 600),
        make_contest("r4", &second_id, &second, 200),
    ];
    // The six internal partitions shared by all three replicas before the
    // replay starts (the group rebalances as each one joins).
    let owned = |node: &Ingest| {
        node.metrics()
            .lines()
            .filter(|l| l.starts_with("ingest_owned_partition{") && l.ends_with(" 1"))
            .count()
    };
    wait_until(
        60,
        "the six partitions shared by the three replicas",
        || {
            let counts: Vec<usize> = nodes.iter().flatten().map(owned).collect();
            counts.iter().sum::<usize>() == 6 && counts.iter().all(|c| *c > 0)
        },
    );
    rt.block_on(async {
        for contest in &contests {
            ingest::contests::publish(&broker.brokers(), &contest.record, &contest.entries)
                .await
                .unwrap();
        }
    });
    let mut args = replay_args(
        &broker,
        &[&first_path, &second_path],
        if kill_at.is_some() { 3000.0 } else { 0.0 },
        true,
    );
    args.partitions = 6;
    let replay = rt.spawn(async move { ingest::replay::run(&args).await });
    if let Some(point) = kill_at {
        let mut connection = redis.connection();
        wait_until(120, "the kill point", || {
            redis_seq(&mut connection, &first_id).unwrap_or(0) >= point
        });
        let owner = owner_of(&nodes, &first_id).expect("some replica owns the first match");
        nodes[owner].take().unwrap().kill();
        eprintln!("kill -9 of replica {owner}, owner of match {first_id}, at seq {point}");
        std::thread::sleep(Duration::from_secs(1));
        nodes[owner] = Some(replica(&broker, &redis, work.path(), owner));
    }
    rt.block_on(replay).unwrap().unwrap();
    // The corrections add two events per corrupted delivery: 3 per match.
    let first_last = first.events(&first_id, None).len() as u64 - 1 + 3;
    let second_last = second.events(&second_id, None).len() as u64 - 1 + 3;
    wait_for_match_end(&redis, &first_id, first_last, 120);
    wait_for_match_end(&redis, &second_id, second_last, 120);
    let (first_scorer, second_scorer) = (offline(&first_id, &first), offline(&second_id, &second));
    for contest in &contests {
        let (match_id, scorer) = if contest.record.match_id == first_id {
            (&first_id, &first_scorer)
        } else {
            (&second_id, &second_scorer)
        };
        assert_redis_matches_offline(&redis, match_id, scorer, contest);
    }
    if kill_at.is_some() {
        let owner = owner_of(&nodes, &first_id);
        assert!(
            owner.is_some(),
            "a surviving replica took the first match over"
        );
    }
    // The work was shared: each live replica owns internal partitions, and
    // every message was routed (by whichever replica owns its partition of
    // the contract's topics), none lost.
    let routed: Vec<f64> = nodes
        .iter()
        .flatten()
        .map(|node| support::metric(node.admin_port, "ingest_messages_routed_total"))
        .collect();
    eprintln!("messages routed per live replica: {routed:?}");
    let entries: usize = contests.iter().map(|c| 1 + c.entries.len()).sum();
    let events = (first_last + 1 + second_last + 1) as usize;
    if kill_at.is_none() {
        assert!(
            routed.iter().sum::<f64>() >= (entries + events) as f64,
            "every message routed once at least: {routed:?}"
        );
    }
    for node in nodes.iter().flatten() {
        assert!(owned(node) > 0, "every live replica owns partitions");
    }
}

#[test]
fn three_replicas_on_six_partitions_end_as_the_offline_score() {
    replicas_end_as_the_offline_score(None);
}

#[test]
fn a_replica_killed_mid_match_and_restarted_under_its_instance_id_keeps_the_result_exact() {
    replicas_end_as_the_offline_score(Some(120));
}

/// What the broker lacks, shown on the broker itself: two replicas share
/// the partitions; one is killed -9. Tansu 0.6 keeps the dead member (and its
/// partitions) past three session timeouts, while the survivor's heartbeats
/// go on: it expires a dead member only when another member joins the group.
/// A third replica joining is what moves the dead one's partitions.
#[test]
fn tansu_expires_a_dead_member_only_when_another_joins() {
    let redis = Redis::start();
    let broker = Broker::start();
    let work = tempfile::tempdir().unwrap();
    let owned = |node: &Ingest| {
        node.metrics()
            .lines()
            .filter(|l| l.starts_with("ingest_owned_partition{") && l.ends_with(" 1"))
            .count()
    };
    let start = || Ingest::start(&broker, &redis, work.path(), &["--partitions", "6"]);
    let (survivor, doomed) = (start(), start());
    wait_until(60, "the two replicas sharing six partitions", || {
        let (a, b) = (owned(&survivor), owned(&doomed));
        a + b == 6 && a > 0 && b > 0
    });
    let before = owned(&survivor);
    doomed.kill();
    // session.timeout.ms is 10 s: a broker that expires dead members would
    // have given all six partitions to the survivor well within 30 s.
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        owned(&survivor),
        before,
        "tansu kept the dead member's partitions (if it now expires dead members, \
         the killed-replica test can stop restarting the replica)"
    );
    let newcomer = start();
    wait_until(
        60,
        "the dead member's partitions moving once a member joins",
        || owned(&survivor) + owned(&newcomer) == 6,
    );
}
