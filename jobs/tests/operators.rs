//! What operators run, as they run it: `jobs schedule` processes sharing one
//! Redis (one active through the lease; kill -9 the active one and the other
//! takes over within one lease period), the admin routes of `leaderboard
//! serve` (202, 403, 404, job states, coalescing), `jobs trigger`/`status`,
//! and a recompute killed -9 while writing its snapshot.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leaderboard::api::server::ServeOptions;
use leaderboard_core::ContestId;
use leaderboard_hot::jobs::{self, JobState};
use leaderboard_service::config::AdminArgs;
use leaderboard_testkit::{free_port, metric, request_with, wait_until, workspace_binary, Redis};
use support::Contest;

const LEASE: &str = "1500ms";
const LEASE_PERIOD: Duration = Duration::from_millis(1500);
const TOKEN: &str = "operator-s3cret";

/// A `jobs schedule` process.
struct Scheduler {
    child: Child,
    port: u16,
    node: String,
}

impl Scheduler {
    fn start(redis: &Redis, store: &str, node: &str, every: &str) -> Scheduler {
        let port = free_port();
        let child = Command::new(workspace_binary("jobs"))
            .args([
                "schedule", "--every", every, "--lease", LEASE, "--node", node,
            ])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .env("REDIS_URL", redis.url())
            .env("STORE", store)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let scheduler = Scheduler {
            child,
            port,
            node: node.to_owned(),
        };
        wait_until(30, "the scheduler's admin port", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        scheduler
    }

    fn active(&self) -> bool {
        metric(self.port, "jobs_scheduler_lease_held ") == 1.0
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jobs_cli(redis: &Redis, store: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(workspace_binary("jobs"))
        .args(args)
        .env("REDIS_URL", redis.url())
        .env("STORE", store)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn lease_holder(redis: &Redis) -> Option<String> {
    let mut connection = leaderboard_hot::connect(&redis.url()).await.unwrap();
    jobs::lease_holder(&mut connection)
        .await
        .unwrap()
        .map(|lease| lease.node)
}

async fn job(redis: &Redis, id: &str) -> jobs::Job {
    let mut connection = leaderboard_hot::connect(&redis.url()).await.unwrap();
    jobs::read_job(&mut connection, id).await.unwrap().unwrap()
}

async fn wait_job(redis: &Redis, id: &str, seconds: u64) -> jobs::Job {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let job = job(redis, id).await;
        if !job.state.is_active() {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} still {:?}", job.state);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_schedulers_one_runs_jobs_and_the_other_takes_over_a_kill_9_within_one_lease() {
    let redis = Redis::start();
    let contest = Contest::new(2_000, Some(&redis)).await;
    let store = contest.store_uri();
    let mut a = Scheduler::start(&redis, &store, "node-a", "1h");
    let mut b = Scheduler::start(&redis, &store, "node-b", "1h");
    wait_until(20, "one scheduler to take the lease", || {
        a.active() || b.active()
    });
    // Over several lease periods, exactly one is active.
    let watch = Instant::now();
    while watch.elapsed() < LEASE_PERIOD * 3 {
        let active = [a.active(), b.active()].iter().filter(|x| **x).count();
        assert_eq!(active, 1, "exactly one scheduler is active");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (active, standby) = if a.active() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(
        lease_holder(&redis).await.as_deref(),
        Some(active.node.as_str())
    );

    // A job runs on the active one only; the scheduled pass ran at start.
    let (ok, out, err) = jobs_cli(&redis, &store, &["trigger", "--contest", "c1", "--wait"]);
    assert!(ok, "jobs trigger failed: {err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["node"], active.node.as_str(), "{report}");
    assert_eq!(report["differences"], 0, "{report}");
    assert_eq!(report["rows"], 2_000, "{report}");

    // kill -9 the active one: the standby takes the lease within one period.
    let fence_before = report["fencing_token"].as_u64().unwrap();
    active.kill();
    let killed = Instant::now();
    while !standby.active() {
        assert!(
            killed.elapsed() < LEASE_PERIOD,
            "no takeover within one lease period ({LEASE_PERIOD:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {takeover:?} (lease period {LEASE_PERIOD:?})");
    assert_eq!(
        lease_holder(&redis).await.as_deref(),
        Some(standby.node.as_str())
    );
    let (ok, out, err) = jobs_cli(&redis, &store, &["trigger", "--contest", "c1", "--wait"]);
    assert!(ok, "jobs trigger failed: {err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["node"], standby.node.as_str(), "{report}");
    assert!(
        report["fencing_token"].as_u64().unwrap() > fence_before,
        "a later holder's fencing token is larger: {report}"
    );
    let (ok, out, _) = jobs_cli(
        &redis,
        &store,
        &["status", report["job_id"].as_str().unwrap()],
    );
    assert!(ok);
    assert!(out.contains("\"state\":\"done\""), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_taken_by_a_scheduler_that_dies_is_run_again_by_the_next_one() {
    let redis = Redis::start();
    let contest = Contest::new(2_000, Some(&redis)).await;
    let store = contest.store_uri();
    // Queue a request, then let a scheduler read it and die before it is done:
    // a consumer of the group reads it (as a scheduler does) and never acknowledges.
    let mut connection = leaderboard_hot::connect(&redis.url()).await.unwrap();
    jobs::ensure_group(&mut connection).await.unwrap();
    let c1 = ContestId::parse("c1").unwrap();
    let (job_id, new) = jobs::request_recompute(&mut connection, &c1, "test")
        .await
        .unwrap();
    assert!(new);
    let mut blocking = leaderboard_hot::connect(&redis.url()).await.unwrap();
    let read = jobs::read_requests(&mut blocking, "dead-node", Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    let _scheduler = Scheduler::start(&redis, &store, "node-c", "1h");
    let done = wait_job(&redis, &job_id, 30).await;
    assert_eq!(done.state, JobState::Done, "{:?}", done.fields);
    assert_eq!(done.fields["node"], "node-c");
    assert_eq!(done.fields["differences"], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_answer_202_403_404_and_job_states_and_coalesce_requests() {
    let redis = Redis::start();
    let contest = Contest::new(3_000, Some(&redis)).await;
    let options = ServeOptions {
        rate_limit: 0,
        admin: AdminArgs {
            admin_token: Some(TOKEN.into()),
        },
        ..ServeOptions::default()
    };
    let (port, _cache, stop) =
        leaderboard_testkit::serve_api(&redis.url(), Some(contest.dir.path()), options).await;
    let bearer = format!("Bearer {TOKEN}");
    let post = |path: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        request_with(port, "POST", path, &headers)
    };

    // 403 without a token, with a wrong one, and with the right one in the wrong scheme.
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(TOKEN),
        Some("Basic b3A6cw=="),
    ] {
        let (status, _, body) = post("/v1/admin/contests/c1/recompute", auth);
        assert_eq!(status, 403, "{auth:?}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    let (status, _, body) = request_with(port, "GET", "/v1/admin/jobs/j1", &[]);
    assert_eq!(status, 403, "{body}");
    // 404 for an unknown contest; 400 for an invalid id.
    let (status, _, body) = post("/v1/admin/contests/nope/recompute", Some(&bearer));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nope"), "{body}");
    let (status, _, body) = post("/v1/admin/contests/bad%20id/recompute", Some(&bearer));
    assert_eq!(status, 400, "{body}");

    // 202 with a job id; a second request while it is queued joins it.
    let (status, _, body) = post("/v1/admin/contests/c1/recompute", Some(&bearer));
    assert_eq!(status, 202, "{body}");
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    let job_id = first["job_id"].as_str().unwrap().to_owned();
    assert_eq!(first["new"], true);
    let (status, _, body) = post("/v1/admin/contests/c1/recompute", Some(&bearer));
    assert_eq!(status, 202, "{body}");
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        second["job_id"],
        job_id.as_str(),
        "coalesced into the queued job"
    );
    assert_eq!(second["new"], false);
    // The command line joins it too.
    let (ok, out, err) = jobs_cli(
        &redis,
        &contest.store_uri(),
        &["trigger", "--contest", "c1"],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&job_id), "{out}");

    let job_path = format!("/v1/admin/jobs/{job_id}");
    let (status, _, body) = request_with(port, "GET", &job_path, &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{body}");
    let queued: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(queued["state"], "queued", "{queued}");
    let (status, _, body) = request_with(
        port,
        "GET",
        "/v1/admin/jobs/j999999",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = request_with(
        port,
        "GET",
        "/v1/admin/jobs/x;1",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 400, "{body}");

    // A scheduler runs it: running, then done, with durations, rows and 0 differences.
    let _scheduler = Scheduler::start(&redis, &contest.store_uri(), "node-d", "1h");
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (status, _, body) = request_with(port, "GET", &job_path, &[("Authorization", &bearer)]);
        assert_eq!(status, 200, "{body}");
        let job: serde_json::Value = serde_json::from_str(&body).unwrap();
        let state = job["state"].as_str().unwrap().to_owned();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "done" || state == "failed" {
            break job;
        }
        assert!(Instant::now() < deadline, "job stuck: {job}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(done["state"], "done", "{done}");
    // Queued (seen above) until the scheduler took it, then running, then done.
    assert!(
        states
            .iter()
            .all(|s| ["queued", "running", "done"].contains(&s.as_str())),
        "{states:?}"
    );
    for field in [
        "load_ms",
        "score_ms",
        "compute_ms",
        "write_ms",
        "redis_ms",
        "total_ms",
    ] {
        assert!(done[field].is_u64(), "{field} in {done}");
    }
    assert_eq!(done["rows"], 3_000, "{done}");
    assert_eq!(done["differences"], 0, "{done}");
    assert_eq!(done["reconcile"], "compared", "{done}");
    assert!(done["peak_rss_bytes"].as_u64().unwrap() > 0, "{done}");
    // Once done, a new request is a new job.
    let (status, _, body) = post("/v1/admin/contests/c1/recompute", Some(&bearer));
    assert_eq!(status, 202, "{body}");
    let third: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(third["job_id"], job_id.as_str());
    assert_eq!(third["new"], true);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recompute_killed_9_while_writing_its_snapshot_leaves_the_previous_one_served() {
    let contest = Contest::new(300_000, None).await;
    let store = contest.store_uri();
    let c1 = ContestId::parse("c1").unwrap();
    // A first recompute publishes a snapshot.
    let redis = Redis::start();
    let (ok, _, err) = jobs_cli(
        &redis,
        &store,
        &["recompute", "--contest", "c1", "--no-reconcile"],
    );
    assert!(ok, "{err}");
    let before = contest
        .store
        .latest_rank_snapshot(&c1)
        .await
        .unwrap()
        .unwrap();
    let before_page = contest
        .store
        .rank_page(&c1, before.snapshot_id, 0, 50)
        .await
        .unwrap();
    assert_eq!(before.total, 300_000);

    // A second one is killed -9 once its rows are being written.
    let mut child = Command::new(workspace_binary("jobs"))
        .args(["recompute", "--contest", "c1", "--no-reconcile"])
        .env("REDIS_URL", redis.url())
        .env("STORE", &store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let database = contest
        .dir
        .path()
        .join(leaderboard_store::embedded::FILE_NAME);
    let sqlite = rusqlite::Connection::open(&database).unwrap();
    sqlite.busy_timeout(Duration::from_secs(10)).unwrap();
    let rows_written = |snapshot: u64| -> u64 {
        sqlite
            .query_row(
                "SELECT COUNT(*) FROM rank_snapshot_rows WHERE contest_id = 'c1' AND snapshot_id = ?1",
                [snapshot],
                |row| row.get(0),
            )
            .unwrap()
    };
    let pending = before.snapshot_id + 1;
    wait_until(60, "the second recompute to write rows", || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the recompute finished before it was killed"
        );
        rows_written(pending) > 0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let written = rows_written(pending);
    assert!(
        written > 0 && written < 300_000,
        "killed mid-write ({written} rows)"
    );

    let after = contest
        .store
        .latest_rank_snapshot(&c1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after, before,
        "the previous snapshot is still the one served"
    );
    assert_eq!(
        contest
            .store
            .rank_page(&c1, after.snapshot_id, 0, 50)
            .await
            .unwrap(),
        before_page
    );
    assert!(
        contest
            .store
            .rank_page(&c1, pending, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "the half-written snapshot is not readable"
    );
    // The next recompute publishes past it.
    let (ok, _, err) = jobs_cli(
        &redis,
        &store,
        &["recompute", "--contest", "c1", "--no-reconcile"],
    );
    assert!(ok, "{err}");
    let next = contest
        .store
        .latest_rank_snapshot(&c1)
        .await
        .unwrap()
        .unwrap();
    assert!(next.snapshot_id > pending);
    assert_eq!(
        contest
            .store
            .rank_page(&c1, next.snapshot_id, 0, 50)
            .await
            .unwrap(),
        before_page,
        "same input, same ranks"
    );
}

/// Every job the scheduler has recorded.
async fn all_jobs(redis: &Redis) -> Vec<jobs::Job> {
    let mut connection = leaderboard_hot::connect(&redis.url()).await.unwrap();
    let last: u64 = redis::cmd("GET")
        .arg("lb:jobs:seq")
        .query_async::<Option<u64>>(&mut connection)
        .await
        .unwrap()
        .unwrap_or(0);
    let mut found = Vec::new();
    for n in 1..=last {
        if let Some(job) = jobs::read_job(&mut connection, &format!("j{n}"))
            .await
            .unwrap()
        {
            found.push(job);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_real_match_replayed_through_kafka_every_scheduled_recompute_reconciles_at_0() {
    use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
    use leaderboard_testkit::{ipl_dir, Broker, Ingest};

    let redis = Redis::start();
    let broker = Broker::start();
    let work = tempfile::tempdir().unwrap();
    let ingest = Ingest::start(&broker, &redis, work.path(), &[]);
    let path = ipl_dir().join("1136561.json");
    let parsed = CricsheetMatch::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let match_id = match_id_from_path(&path).unwrap();
    let record = ingest::contests::contest(
        &ContestId::parse("live").unwrap(),
        &match_id,
        parsed.info.players.clone(),
        1_000_000,
    );
    let entries = ingest::contests::entries(&record, 5_000, 9);
    ingest::contests::publish(&broker.brokers(), &record, &entries)
        .await
        .unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let scheduler = Scheduler::start(&redis, &store, "node-live", "10s");

    // About 75 s of match (a ball every 0.3 s): a scheduled pass every 10 s
    // while it plays. A pass compares with the live ranks when no ball lands
    // while it runs (else the live state has moved on and it says so).
    let args = ingest::replay::ReplayArgs {
        files: vec![path.clone()],
        speed: 120.0,
        corrections: false,
        seed: 3,
        kafka: leaderboard_service::config::KafkaArgs {
            brokers: broker.brokers(),
        },
        partitions: 3,
    };
    ingest::replay::run(&args).await.unwrap();
    // After the last ball: one more recompute, by an operator, at the final version.
    let last_seq = parsed.events(&match_id, None).len() as u64 - 1;
    wait_until(60, "the whole match applied in Redis", || {
        let mut connection = redis.connection();
        let seq: Option<u64> = redis::cmd("HGET")
            .arg(leaderboard_hot::match_meta_key(&match_id))
            .arg("seq")
            .query(&mut connection)
            .unwrap_or(None);
        seq == Some(last_seq)
    });
    let (ok, out, err) = jobs_cli(&redis, &store, &["trigger", "--contest", "live", "--wait"]);
    assert!(ok, "{err}");
    let last: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["reconcile"], "compared", "{last}");
    assert_eq!(last["differences"], 0, "{last}");
    assert_eq!(last["rows"], 5_000, "{last}");

    let jobs = all_jobs(&redis).await;
    let scheduled: Vec<&jobs::Job> = jobs
        .iter()
        .filter(|job| job.fields.get("origin").map(String::as_str) == Some("schedule"))
        .collect();
    let compared: Vec<&&jobs::Job> = scheduled
        .iter()
        .filter(|job| job.fields.get("reconcile").map(String::as_str) == Some("compared"))
        .collect();
    eprintln!(
        "{} scheduled recomputes during the match, {} compared with the live ranks at their version",
        scheduled.len(),
        compared.len()
    );
    assert!(
        scheduled.len() >= 4,
        "a pass every 10 s: {}",
        scheduled.len()
    );
    for job in &jobs {
        assert_eq!(job.state, JobState::Done, "{:?}", job.fields);
        if let Some(differences) = job.fields.get("differences") {
            assert_eq!(differences, "0", "a recompute disagreed: {:?}", job.fields);
        }
    }
    assert!(
        compared.len() >= 2,
        "at least two scheduled recomputes compared mid-match ({} of {})",
        compared.len(),
        scheduled.len()
    );
    drop((scheduler, ingest));
}
