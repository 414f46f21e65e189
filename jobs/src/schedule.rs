//! `jobs schedule`: recomputes every live contest every `--every`, and runs
//! the operators' requests. Several schedulers may run; a lease in Redis
//! (`SET NX PX` with a fencing token, released on shutdown) makes exactly one
//! of them active. The others wait, and the first to see the lease gone
//! takes it: within one lease period (`--lease`) of the active one dying.
//! That bound is kept by the timing: the key lives two thirds of the period
//! and is renewed every sixth (two renewals may fail before it lapses), and
//! the waiters try for it every quarter, so a dead holder's key is gone
//! within 2/3 of the period and taken within 2/3 + 1/4 = 11/12 of it. Requests left unacknowledged by a dead scheduler are
//! claimed (`XAUTOCLAIM`) once idle for a lease period, and run again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use leaderboard_hot::HotConnection;
use tokio_util::sync::CancellationToken;

use leaderboard_core::ids::ContestId;
use leaderboard_hot::jobs::{self, JobState, Lease, Request};
use leaderboard_service::admin::{self, ReadyCheck};
use leaderboard_service::config::{RedisArgs, RulesArgs, StoreArgs};
use leaderboard_store::SharedStore;

use crate::metrics;
use crate::recompute::{JobError, Recomputer};

#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    #[command(flatten)]
    pub engine: crate::EngineArgs,
    /// How often every live contest is recomputed (`5m`, `30s`, …).
    #[arg(long, env = "RECOMPUTE_EVERY", default_value = "5m", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// The scheduler lease's period: a dead active scheduler is replaced
    /// within it (`15s`, …).
    #[arg(long, env = "LEASE_PERIOD", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// This scheduler's name in the lease and the consumer group (default:
    /// host name and process id).
    #[arg(long, env = "JOBS_NODE")]
    pub node: Option<String>,
    /// Admin listen address (/metrics, /healthz, /readyz).
    #[arg(
        long = "http-addr",
        env = "HTTP_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    pub http_addr: SocketAddr,
}

/// Runs the scheduler until `shutdown`.
pub async fn run(args: ScheduleArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let rules = Arc::new(args.rules.load()?);
    let store = leaderboard_store::open(&args.store.store)
        .await
        .with_context(|| format!("cannot open the store {}", args.store.store))?;
    let connection = leaderboard_hot::connect(&args.redis.url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", args.redis.url))?;
    // Its own connection for the requests' blocking reads: a blocked
    // multiplexed connection would hold lease renewals up behind it.
    let blocking = leaderboard_hot::connect(&args.redis.url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", args.redis.url))?;
    let node = args.node.clone().unwrap_or_else(default_node);
    anyhow::ensure!(
        !node.contains('/') && !node.is_empty(),
        "--node `{node}` must be non-empty and have no `/`"
    );
    anyhow::ensure!(
        args.lease >= Duration::from_millis(300),
        "--lease must be at least 300ms"
    );
    let recomputer = Recomputer {
        store: store.clone(),
        redis: Some(connection.clone()),
        rules,
        engine: args.engine.options(),
        catch_up: args.engine.reconcile_wait.into(),
    };

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let admin_address = listener.local_addr()?;
    let store_check = store.clone();
    let checks = vec![
        ReadyCheck::new("redis", leaderboard_hot::pinger(&args.redis.url)?),
        ReadyCheck::new("store", move || {
            let store = store_check.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }),
    ];
    metrics::init();
    let admin_shutdown = shutdown.clone();
    let admin = tokio::spawn(admin::serve(
        listener,
        admin::router(metrics::REGISTRY.clone(), checks),
        admin_shutdown,
    ));
    tracing::info!(%node, admin = %admin_address, every = ?args.every, lease = ?args.lease, "scheduler started");

    let scheduler = Scheduler {
        connection,
        blocking,
        store,
        recomputer,
        node,
        every: args.every,
        lease_period: args.lease,
    };
    let outcome = scheduler.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = admin.await;
    outcome
}

fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "jobs".into());
    format!("{host}-{}", std::process::id())
}

struct Scheduler {
    connection: HotConnection,
    blocking: HotConnection,
    store: SharedStore,
    recomputer: Recomputer,
    node: String,
    every: Duration,
    lease_period: Duration,
}

impl Scheduler {
    async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        loop {
            // Waiting: try for the lease every third of its period.
            let lease = loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                match jobs::try_acquire_lease(
                    &mut connection,
                    &self.node,
                    lease_ttl(self.lease_period),
                )
                .await
                {
                    Ok(Some(lease)) => break lease,
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "cannot reach the lease, retrying"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.lease_period / 4) => {}
                }
            };
            metrics::LEASE_HELD.set(1);
            tracing::info!(node = %self.node, token = lease.token, "took the scheduler lease; active");
            let lost = shutdown.child_token();
            let renewal = tokio::spawn(renew(
                self.connection.clone(),
                lease.clone(),
                self.lease_period,
                lost.clone(),
            ));
            let outcome = self.lead(&lease, &lost).await;
            lost.cancel();
            let _ = renewal.await;
            metrics::LEASE_HELD.set(0);
            if shutdown.is_cancelled() {
                if let Err(error) = jobs::release_lease(&mut connection, &lease).await {
                    tracing::warn!(%error, "cannot release the lease; it expires by itself");
                } else {
                    tracing::info!("released the scheduler lease");
                }
                return outcome;
            }
            if let Err(error) = outcome {
                tracing::warn!(error = %format!("{error:#}"), "the active scheduler stopped; waiting for the lease again");
            } else {
                tracing::warn!("lost the scheduler lease; waiting for it again");
            }
        }
    }

    /// Active: scheduled passes and requests, until the lease is lost.
    async fn lead(&self, lease: &Lease, lost: &CancellationToken) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        let mut blocking = self.blocking.clone();
        jobs::ensure_group(&mut connection)
            .await
            .context("cannot create the requests' consumer group")?;
        let mut next_pass = Instant::now();
        while !lost.is_cancelled() {
            if Instant::now() >= next_pass {
                next_pass = Instant::now() + self.every;
                self.schedule_pass(&mut connection).await;
            }
            let claimed = jobs::claim_abandoned(&mut connection, &self.node, self.lease_period)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "cannot claim abandoned requests");
                    Vec::new()
                });
            let requests = if claimed.is_empty() {
                let wait = next_pass
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
                    .max(Duration::from_millis(10));
                tokio::select! {
                    _ = lost.cancelled() => break,
                    read = jobs::read_requests(&mut blocking, &self.node, wait) => read.unwrap_or_else(|error| {
                        tracing::warn!(%error, "cannot read requests");
                        Vec::new()
                    }),
                }
            } else {
                claimed
            };
            for request in requests {
                if lost.is_cancelled() {
                    break;
                }
                self.run_request(&mut connection, lease, lost, request)
                    .await;
            }
        }
        Ok(())
    }

    /// Queues a recompute of every live contest (joining any already queued).
    async fn schedule_pass(&self, connection: &mut HotConnection) {
        let contests = match self.store.list_contests().await {
            Ok(contests) => contests,
            Err(error) => {
                tracing::warn!(%error, "cannot list the contests for the scheduled pass");
                return;
            }
        };
        let live: Vec<_> = contests.into_iter().filter(|c| !c.finished).collect();
        tracing::info!(
            contests = live.len(),
            "scheduled recompute of every live contest"
        );
        for contest in live {
            if let Err(error) =
                jobs::request_recompute(connection, &contest.contest_id, "schedule").await
            {
                tracing::warn!(contest = %contest.contest_id, %error, "cannot queue a scheduled recompute");
            }
        }
    }

    async fn run_request(
        &self,
        connection: &mut HotConnection,
        lease: &Lease,
        lost: &CancellationToken,
        request: Request,
    ) {
        let job = match jobs::read_job(connection, &request.job_id).await {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!(job = %request.job_id, %error, "cannot read the job");
                return;
            }
        };
        let finished = job.as_ref().is_none_or(|job| !job.state.is_active());
        let contest = ContestId::parse(&request.contest_id);
        let (Ok(contest), false) = (contest, finished) else {
            // Already finished (run before its acknowledgement was lost), expired, or garbage.
            let _ = jobs::acknowledge(connection, &request.stream_id).await;
            return;
        };
        let attempts = job
            .as_ref()
            .and_then(|job| job.fields.get("attempts"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let _ = jobs::update_job(
            connection,
            &request.job_id,
            Some(JobState::Running),
            &[
                ("started_at_ms", jobs::now_ms().to_string()),
                ("node", self.node.clone()),
                ("fencing_token", lease.token.to_string()),
                ("attempts", attempts.to_string()),
            ],
        )
        .await;
        tracing::info!(job = %request.job_id, contest = %contest, attempts, "recompute started");
        let outcome = tokio::select! {
            _ = lost.cancelled() => None,
            outcome = self.recomputer.contest(&contest, &|_| {}) => Some(outcome),
        };
        let Some(outcome) = outcome else {
            tracing::warn!(job = %request.job_id, "lease lost mid-job; the next active scheduler runs it again");
            return;
        };
        // Fencing: a scheduler whose lease lapsed must not report over the
        // one that holds it now (which may be running this job again).
        match jobs::holds_lease(connection, lease).await {
            Ok(true) => {}
            _ => {
                tracing::warn!(job = %request.job_id, "lease lost before the job finished; not reporting");
                return;
            }
        }
        let finished_at = ("finished_at_ms", jobs::now_ms().to_string());
        match outcome {
            Ok(report) => {
                metrics::RECOMPUTES.with_label_values(&["done"]).inc();
                tracing::info!(
                    job = %request.job_id,
                    contest = %contest,
                    version = report.version,
                    rows = report.rows,
                    reconcile = ?report.reconcile,
                    differences = report.differences.map_or_else(|| "not compared".to_owned(), |d| d.to_string()),
                    total_ms = report.timings.total_ms,
                    "recompute done"
                );
                let mut fields = report.fields();
                fields.push(finished_at);
                let _ =
                    jobs::update_job(connection, &request.job_id, Some(JobState::Done), &fields)
                        .await;
            }
            Err(error) => {
                metrics::RECOMPUTES.with_label_values(&["failed"]).inc();
                tracing::error!(job = %request.job_id, contest = %contest, %error, "recompute failed; the previous snapshot stays");
                let kind = match error {
                    JobError::UnknownContest(_) => "unknown_contest",
                    JobError::Store(_) => "store",
                    JobError::Invalid { .. } => "invalid_data",
                    JobError::Query(_) => "query",
                    JobError::Redis(_) => "redis",
                    JobError::Cancelled(_) => "cancelled",
                };
                let _ = jobs::update_job(
                    connection,
                    &request.job_id,
                    Some(JobState::Failed),
                    &[
                        ("error", error.to_string()),
                        ("error_kind", kind.to_owned()),
                        finished_at,
                    ],
                )
                .await;
            }
        }
        let _ = jobs::clear_active(connection, &contest, &request.job_id).await;
        let _ = jobs::acknowledge(connection, &request.stream_id).await;
    }
}

/// How long the lease key lives: two thirds of the lease period (see the
/// module's docs for why).
fn lease_ttl(period: Duration) -> Duration {
    period * 2 / 3
}

/// Renews the lease every sixth of its period; cancels `lost` once it is no
/// longer ours, or Redis could not confirm it for as long as the key lives.
async fn renew(
    mut connection: HotConnection,
    lease: Lease,
    period: Duration,
    lost: CancellationToken,
) {
    let mut confirmed = Instant::now();
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(period / 6) => {}
        }
        match jobs::renew_lease(&mut connection, &lease, lease_ttl(period)).await {
            Ok(true) => confirmed = Instant::now(),
            Ok(false) => {
                tracing::warn!("the scheduler lease is held by another node now");
                lost.cancel();
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot renew the scheduler lease");
                if confirmed.elapsed() >= lease_ttl(period) {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}
