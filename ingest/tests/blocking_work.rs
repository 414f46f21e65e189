//! Re-ranking a 1M-entry contest after a ball is CPU work of a few hundred
//! milliseconds; it must not hold up the admin routes served on the same
//! runtime. The runtime here has one worker thread (as `ingest run` has on
//! one core), so anything run inline would block `/healthz` for its whole
//! duration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::contests;
use ingest::pipeline::{Incoming, Pipeline};
use ingest::run::apply_batch;
use ingest::topics;
use leaderboard_core::contest::ContestMessage;
use leaderboard_core::cricsheet::CricsheetMatch;
use leaderboard_core::{ContestId, MatchId, Rules};
use leaderboard_service::admin;
use leaderboard_testkit as support;

const ENTRIES: usize = 1_000_000;

#[test]
fn healthz_answers_while_a_million_entries_are_re_ranked() {
    let path = support::ipl_dir().join("1136561.json");
    let parsed = CricsheetMatch::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let match_id = MatchId::parse("1136561").unwrap();
    let record = contests::contest(
        &ContestId::parse("mega").unwrap(),
        &match_id,
        parsed.info.players.clone(),
        ENTRIES as u64,
    );
    let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
    pipeline.handle(&Incoming::keyed(
        topics::CONTEST_ENTRIES,
        "mega",
        ContestMessage::Contest(record.clone()).to_json(),
    ));
    for entry in contests::entries(&record, ENTRIES, 5) {
        pipeline.handle(&Incoming::keyed(
            topics::CONTEST_ENTRIES,
            "mega",
            ContestMessage::Entry(entry).to_json(),
        ));
    }
    pipeline.finish_batch();
    let events = parsed.events(&match_id, None);
    assert_eq!(
        pipeline
            .contest(&ContestId::parse("mega").unwrap())
            .unwrap()
            .total(),
        ENTRIES as u64
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = runtime.spawn(admin::serve(
        listener,
        admin::router(prometheus::Registry::new(), Vec::new()),
        shutdown.clone(),
    ));
    // A baseline: /healthz with nothing else running.
    let idle = (0..20)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(support::http(port, "/healthz").0, 200);
            started.elapsed()
        })
        .max()
        .unwrap();

    let ranking = Arc::new(AtomicBool::new(true));
    let prober = {
        let ranking = ranking.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while ranking.load(Ordering::Relaxed) {
                let started = Instant::now();
                assert_eq!(support::http(port, "/healthz").0, 200);
                worst = worst.max(started.elapsed());
                probes += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (worst, probes)
        })
    };
    // Balls that move points: each re-ranks every entry of the contest.
    let started = Instant::now();
    for event in events.iter().take(40) {
        let batch = vec![Incoming::keyed(
            topics::MATCH_EVENTS,
            "1136561",
            event.to_json(),
        )];
        // On the runtime's only worker, as the consumer task runs in `ingest run`.
        let applied = runtime.spawn(apply_batch(pipeline, batch));
        let (returned, _, _) = runtime.block_on(applied).unwrap().unwrap();
        pipeline = returned;
    }
    let ranking_time = started.elapsed();
    ranking.store(false, Ordering::Relaxed);
    let (worst, probes) = prober.join().unwrap();
    shutdown.cancel();
    runtime.block_on(server).unwrap().unwrap();
    eprintln!(
        "re-ranking 40 balls took {ranking_time:?}; /healthz worst {worst:?} over {probes} probes (idle worst {idle:?})"
    );
    assert!(probes >= 10, "too few probes to tell ({probes})");
    // Every probe answered in a small fraction of the re-ranking's time:
    // inline on the only worker, one would have waited a whole ball's work.
    let per_ball = ranking_time / 40;
    assert!(
        worst < per_ball.max(Duration::from_millis(50)) / 2 + idle,
        "/healthz waited {worst:?} while a ball's re-rank took {per_ball:?}"
    );
}
