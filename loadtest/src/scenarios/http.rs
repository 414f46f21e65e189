//! `loadtest http`: an open-loop, weighted mix of the read API's routes at a
//! target rate, with ramps and steps, shardable over processes or machines.
//!
//! Open loop: request k is due at a time fixed in advance by the rate
//! profile, whether or not earlier requests have been answered, and its
//! latency counts from that scheduled time. A stalled target therefore shows
//! in the latency of every request that was due during the stall, not only in
//! the few in flight (the coordinated omission a closed loop such as wrk has).
//! Due requests wait in one queue that all connections take from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use leaderboard_core::ContestId;
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::setup::Setup;
use crate::report::{Recorder, RunInfo};
use crate::BadInput;

#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// The read API (`leaderboard serve`), or a load balancer in front of it.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// A contest to read and its entry count, `ID:ENTRIES` (entries `e1`…`eN`); repeatable.
    #[arg(long = "contest", value_name = "ID:ENTRIES")]
    pub contests: Vec<ContestTarget>,
    /// The folder or `setup.json` that `loadtest setup` wrote: read its contests.
    #[arg(long, value_name = "PATH")]
    pub setup: Option<PathBuf>,
    /// Requests per second over all shards (after the ramp).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long requests are scheduled for.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Ramp the rate up from 0 over this long first (part of --duration).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// Steps instead of --rate/--duration/--ramp: `RATE:DURATION,…`, e.g. `1000:10s,5000:10s`.
    #[arg(long, value_name = "STEPS")]
    pub steps: Option<String>,
    /// The weighted mix of routes: `my-rank`, `page` (50 rows), `around` (radius 5).
    #[arg(long, default_value = "my-rank=70,page=20,around=10")]
    pub mix: Mix,
    /// Keep-alive connections that take due requests from the queue.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// A request not answered this long after its scheduled time is a timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// This process's share of the schedule, `i/N`: it sends requests i, i+N, …
    #[arg(long, default_value = "1/1")]
    pub shard: Shard,
    /// Seed of the entries and pages chosen.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The report folder (default `reports/http-<unix time>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `ID:ENTRIES`.
#[derive(Debug, Clone)]
pub struct ContestTarget {
    pub contest_id: ContestId,
    pub entries: usize,
}

impl FromStr for ContestTarget {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, entries) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: expected ID:ENTRIES, e.g. c1:10000"))?;
        Ok(ContestTarget {
            contest_id: ContestId::parse(id).map_err(|e| e.to_string())?,
            entries: entries
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .ok_or_else(|| format!("`{entries}`: the entry count must be at least 1"))?,
        })
    }
}

/// The routes a load tester mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    MyRank,
    Page,
    Around,
}

impl Route {
    pub fn stream(self) -> &'static str {
        match self {
            Route::MyRank => "http.my-rank",
            Route::Page => "http.page",
            Route::Around => "http.around",
        }
    }
}

/// Routes with weights.
#[derive(Debug, Clone)]
pub struct Mix {
    routes: Vec<(Route, f64)>,
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .routes
            .iter()
            .map(|(route, weight)| {
                format!("{}={weight}", route.stream().trim_start_matches("http."))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut routes = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected ROUTE=WEIGHT"))?;
            let route = match name.trim() {
                "my-rank" => Route::MyRank,
                "page" => Route::Page,
                "around" => Route::Around,
                other => {
                    return Err(format!(
                        "unknown route `{other}`: the routes are my-rank, page, around"
                    ))
                }
            };
            let weight: f64 = weight
                .trim()
                .parse()
                .ok()
                .filter(|w: &f64| *w >= 0.0 && w.is_finite())
                .ok_or_else(|| format!("`{weight}`: a weight is a number ≥ 0"))?;
            routes.push((route, weight));
        }
        if routes.iter().all(|(_, w)| *w == 0.0) {
            return Err("the mix needs a route with a weight above 0".into());
        }
        Ok(Mix { routes })
    }
}

/// `i/N`, 1-based.
#[derive(Debug, Clone, Copy)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = text
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
        match parsed {
            Some((index, count)) if index >= 1 && index <= count => Ok(Shard { index, count }),
            _ => Err(format!("`{text}`: expected i/N with 1 ≤ i ≤ N, e.g. 1/2")),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One stretch of the rate profile: from `from` to `to` per second, linearly.
#[derive(Debug, Clone, Copy)]
struct Segment {
    seconds: f64,
    from: f64,
    to: f64,
}

impl Segment {
    fn requests(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.seconds
    }

    /// The time into this segment at which `n` requests are due.
    fn time_of(&self, n: f64) -> f64 {
        let slope = (self.to - self.from) / self.seconds;
        if slope.abs() < 1e-12 {
            n / self.from
        } else {
            (-self.from + (self.from * self.from + 2.0 * slope * n).max(0.0).sqrt()) / slope
        }
    }
}

/// The rate over time: when the k-th request (0-based, over all shards) is due.
#[derive(Debug, Clone)]
pub struct Profile {
    segments: Vec<Segment>,
}

impl Profile {
    pub fn new(args: &HttpArgs) -> Result<Profile, String> {
        let mut segments = Vec::new();
        if let Some(steps) = &args.steps {
            for step in steps.split(',').filter(|s| !s.is_empty()) {
                let (rate, duration) = step
                    .split_once(':')
                    .ok_or_else(|| format!("--steps: `{step}`: expected RATE:DURATION"))?;
                let rate: f64 = rate
                    .parse()
                    .ok()
                    .filter(|r: &f64| *r > 0.0 && r.is_finite())
                    .ok_or_else(|| format!("--steps: `{rate}`: a rate is a number > 0"))?;
                let seconds = humantime::parse_duration(duration)
                    .map_err(|e| format!("--steps: `{duration}`: {e}"))?
                    .as_secs_f64();
                segments.push(Segment {
                    seconds,
                    from: rate,
                    to: rate,
                });
            }
        } else {
            if !(args.rate > 0.0 && args.rate.is_finite()) {
                return Err(format!("--rate must be a number > 0, not {}", args.rate));
            }
            let ramp = args.ramp.as_secs_f64().min(args.duration.as_secs_f64());
            if ramp > 0.0 {
                segments.push(Segment {
                    seconds: ramp,
                    from: 0.0,
                    to: args.rate,
                });
            }
            segments.push(Segment {
                seconds: args.duration.as_secs_f64() - ramp,
                from: args.rate,
                to: args.rate,
            });
        }
        segments.retain(|s| s.seconds > 0.0);
        if segments.is_empty() {
            return Err("the run must last longer than 0 s".into());
        }
        Ok(Profile { segments })
    }

    pub fn seconds(&self) -> f64 {
        self.segments.iter().map(|s| s.seconds).sum()
    }

    pub fn peak_rate(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| s.to.max(s.from))
            .fold(0.0, f64::max)
    }

    /// When request `k` is due, in seconds from the start; None past the end.
    pub fn time_of(&self, k: u64) -> Option<f64> {
        let mut before = 0.0;
        let mut start = 0.0;
        let n = k as f64;
        for segment in &self.segments {
            let requests = segment.requests();
            if n < before + requests {
                return Some(start + segment.time_of(n - before));
            }
            before += requests;
            start += segment.seconds;
        }
        None
    }
}

/// One request, due at `due`.
#[derive(Debug)]
struct Due {
    due: Instant,
    route: Route,
    path: String,
}

/// Chooses what each request reads: contests weighted by their entries
/// (bigger contests have more players reading), entries uniformly, pages
/// mostly near the top.
#[derive(Debug)]
pub struct Chooser {
    contests: Vec<ContestTarget>,
    by_size: WeightedIndex<f64>,
    mix: WeightedIndex<f64>,
    routes: Vec<Route>,
}

impl Chooser {
    pub fn new(contests: Vec<ContestTarget>, mix: &Mix) -> anyhow::Result<Chooser> {
        anyhow::ensure!(
            !contests.is_empty(),
            BadInput("name the contests to read: --contest ID:ENTRIES or --setup PATH".into())
        );
        let by_size = WeightedIndex::new(contests.iter().map(|c| c.entries as f64))?;
        Ok(Chooser {
            by_size,
            mix: WeightedIndex::new(mix.routes.iter().map(|(_, w)| *w))?,
            routes: mix.routes.iter().map(|(r, _)| *r).collect(),
            contests,
        })
    }

    fn pick(&self, rng: &mut StdRng) -> (Route, String) {
        let contest = &self.contests[self.by_size.sample(rng)];
        let route = self.routes[self.mix.sample(rng)];
        let id = &contest.contest_id;
        let entry = rng.random_range(1..=contest.entries);
        let path = match route {
            Route::MyRank => format!("/v1/contests/{id}/entries/e{entry}"),
            Route::Around => format!("/v1/contests/{id}/entries/e{entry}/around?radius=5"),
            Route::Page => {
                let pages = contest.entries.div_ceil(50).max(1);
                let page = if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(0..pages)
                };
                format!(
                    "/v1/contests/{id}/leaderboard?offset={}&limit=50",
                    page * 50
                )
            }
        };
        (route, path)
    }
}

/// `host:port` of an `http://` target, resolved.
pub async fn resolve(target: &str) -> anyhow::Result<(SocketAddr, String)> {
    let authority = target
        .strip_prefix("http://")
        .ok_or_else(|| BadInput(format!("--target `{target}`: expected http://HOST:PORT")))?
        .trim_end_matches('/');
    anyhow::ensure!(
        !authority.is_empty() && !authority.contains('/'),
        BadInput(format!(
            "--target `{target}`: expected http://HOST:PORT, without a path"
        ))
    );
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let address = tokio::net::lookup_host(&with_port)
        .await
        .with_context(|| format!("cannot resolve {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} resolves to no address"))?;
    Ok((address, authority.to_owned()))
}

/// What one connection's attempt came to.
enum Outcome {
    Status(hyper::StatusCode),
    Connect,
    Io,
}

async fn connect(address: SocketAddr) -> Option<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

async fn worker(
    queue: async_channel::Receiver<Due>,
    address: SocketAddr,
    host: Arc<str>,
    timeout: Duration,
    recorder: Arc<Recorder>,
) {
    let mut connection: Option<SendRequest<Empty<Bytes>>> = None;
    while let Ok(request) = queue.recv().await {
        let stream = request.route.stream();
        let deadline = request.due + timeout;
        if Instant::now() >= deadline {
            recorder.error(stream, "timeout", Instant::now());
            continue;
        }
        let attempt = async {
            if connection.as_ref().is_none_or(|c| c.is_closed()) {
                connection = connect(address).await;
            }
            let Some(sender) = connection.as_mut() else {
                return Outcome::Connect;
            };
            if sender.ready().await.is_err() {
                return Outcome::Io;
            }
            let built = hyper::Request::get(request.path.as_str())
                .header(hyper::header::HOST, &*host)
                .body(Empty::<Bytes>::new());
            let Ok(built) = built else {
                return Outcome::Io;
            };
            match sender.send_request(built).await {
                Ok(response) => {
                    let status = response.status();
                    match response.into_body().collect().await {
                        Ok(_) => Outcome::Status(status),
                        Err(_) => Outcome::Io,
                    }
                }
                Err(_) => Outcome::Io,
            }
        };
        let outcome = tokio::time::timeout_at(deadline.into(), attempt).await;
        let now = Instant::now();
        match outcome {
            Ok(Outcome::Status(status)) if status.is_success() => {
                recorder.ok(stream, now - request.due, now)
            }
            Ok(Outcome::Status(status)) => {
                recorder.error(stream, &format!("http_{}", status.as_u16()), now)
            }
            Ok(Outcome::Connect) => {
                recorder.error(stream, "connect", now);
                connection = None;
            }
            Ok(Outcome::Io) => {
                recorder.error(stream, "io", now);
                connection = None;
            }
            Err(_) => {
                recorder.error(stream, "timeout", now);
                // The connection may still carry the late answer: drop it.
                connection = None;
            }
        }
    }
}

/// The contests to read, from --contest and --setup.
pub fn contests(args: &HttpArgs) -> anyhow::Result<Vec<ContestTarget>> {
    let mut contests = args.contests.clone();
    if let Some(path) = &args.setup {
        let setup = Setup::load(path).map_err(|e| BadInput(format!("--setup: {e:#}")))?;
        contests.extend(setup.contests.into_iter().map(|c| ContestTarget {
            contest_id: c.contest_id,
            entries: c.entries,
        }));
    }
    Ok(contests)
}

/// Runs the schedule against the target, recording into `recorder`; returns
/// the run's description for its report.
pub async fn drive(
    args: &HttpArgs,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> anyhow::Result<RunInfo> {
    let profile = Profile::new(args).map_err(BadInput)?;
    let chooser = Chooser::new(contests(args)?, &args.mix)?;
    anyhow::ensure!(
        args.connections > 0,
        BadInput("--connections must be at least 1".into())
    );
    let (address, host) = resolve(&args.target).await?;
    let host: Arc<str> = host.into();
    let cpu_before = crate::report::process_cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started_unix = crate::report::unix_now();
    let (sender, queue) = async_channel::unbounded::<Due>();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(worker(
                queue.clone(),
                address,
                host.clone(),
                args.timeout,
                recorder.clone(),
            ))
        })
        .collect();
    // Due requests are sent from an OS thread of their own: its sleep wakes
    // within tens of microseconds, where the runtime's timer rounds to a
    // millisecond (lateness that would count against the target). Every
    // shard picks with its own stream of the same seed.
    let mut rng = StdRng::seed_from_u64(args.seed ^ (args.shard.index << 32));
    let shard = args.shard;
    let dispatcher = {
        let (profile, sender, stop) = (profile.clone(), sender.clone(), stop.clone());
        std::thread::Builder::new()
            .name("loadtest-dispatch".into())
            .spawn(move || {
                let start = Instant::now();
                let mut lateness = crate::report::histogram();
                let mut k = shard.index - 1;
                let mut scheduled = 0u64;
                while let Some(at) = profile.time_of(k) {
                    let due = start + Duration::from_secs_f64(at);
                    loop {
                        let now = Instant::now();
                        if stop.is_cancelled() || now >= due {
                            break;
                        }
                        std::thread::sleep((due - now).min(Duration::from_millis(100)));
                    }
                    if stop.is_cancelled() {
                        break;
                    }
                    let late = Instant::now().saturating_duration_since(due);
                    let _ = lateness.record((late.as_micros() as u64).max(1));
                    let (route, path) = chooser.pick(&mut rng);
                    if sender.send_blocking(Due { due, route, path }).is_err() {
                        break;
                    }
                    scheduled += 1;
                    k += shard.count;
                }
                (scheduled, lateness)
            })?
    };
    let (scheduled, lateness) = tokio::task::spawn_blocking(move || dispatcher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the dispatcher thread panicked"))?;
    sender.close();
    for worker in workers {
        let _ = worker.await;
    }
    let duration_s = profile.seconds();
    let cpu_after = crate::report::process_cpu_seconds(std::process::id()).unwrap_or(cpu_before);
    let rate = profile.peak_rate() / args.shard.count as f64;
    Ok(RunInfo {
        scenario: "http".into(),
        shards: vec![args.shard.to_string()],
        started_unix,
        duration_s,
        target_rate: Some(if args.steps.is_some() || !args.ramp.is_zero() {
            scheduled as f64 / duration_s
        } else {
            rate
        }),
        harness_cpu_s: cpu_after - cpu_before,
        notes: vec![
            format!(
                "{scheduled} requests scheduled against {} over {duration_s:.1} s ({} connections, mix {}, timeout {:?})",
                args.target, args.connections, args.mix, args.timeout
            ),
            format!(
                "the harness sent each request within {:.3} ms of its scheduled time at p99 ({:.3} ms at most)",
                lateness.value_at_quantile(0.99) as f64 / 1000.0,
                lateness.max() as f64 / 1000.0
            ),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        http: HttpArgs,
    }

    fn args(extra: &[&str]) -> HttpArgs {
        let mut argv = vec!["x", "--contest", "c1:100"];
        argv.extend_from_slice(extra);
        Wrapper::parse_from(argv).http
    }

    #[test]
    fn a_constant_rate_schedules_evenly() {
        let profile = Profile::new(&args(&["--rate", "100", "--duration", "2s"])).unwrap();
        assert_eq!(profile.time_of(0), Some(0.0));
        assert!((profile.time_of(50).unwrap() - 0.5).abs() < 1e-9);
        assert!((profile.time_of(199).unwrap() - 1.99).abs() < 1e-9);
        assert_eq!(profile.time_of(200), None);
    }

    #[test]
    fn a_ramp_then_a_plateau() {
        // 0 → 100/s over 2 s (100 requests), then 100/s for 2 s (200 more).
        let profile = Profile::new(&args(&[
            "--rate",
            "100",
            "--duration",
            "4s",
            "--ramp",
            "2s",
        ]))
        .unwrap();
        // N(t) = 25 t² during the ramp: 25 requests by 1 s.
        assert!((profile.time_of(25).unwrap() - 1.0).abs() < 1e-9);
        assert!((profile.time_of(100).unwrap() - 2.0).abs() < 1e-9);
        assert!((profile.time_of(150).unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(profile.time_of(300), None);
    }

    #[test]
    fn steps_and_shards_split_one_schedule() {
        let profile = Profile::new(&args(&["--steps", "10:1s,20:1s"])).unwrap();
        assert_eq!(profile.seconds(), 2.0);
        assert!((profile.time_of(10).unwrap() - 1.0).abs() < 1e-9);
        assert!((profile.time_of(20).unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(profile.time_of(30), None);
        // Two shards take the even and odd requests: together, all of them.
        let shard: Shard = "2/2".parse().unwrap();
        assert_eq!((shard.index, shard.count), (2, 2));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        assert!("0/2".parse::<Shard>().is_err());
        assert!("3/2".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert!("my-rank=1,teleport=2"
            .parse::<Mix>()
            .unwrap_err()
            .contains("unknown route"));
        assert!("page=0".parse::<Mix>().is_err());
        assert!("c1".parse::<ContestTarget>().is_err());
        assert!("c1:0".parse::<ContestTarget>().is_err());
        assert!(Profile::new(&args(&["--rate", "0"])).is_err());
        assert!(Profile::new(&args(&["--steps", "100"])).is_err());
    }

    #[test]
    fn the_mix_and_the_pages_stay_in_the_contest() {
        let mix: Mix = "my-rank=1,page=1,around=1".parse().unwrap();
        let chooser = Chooser::new(vec!["c1:120".parse().unwrap()], &mix).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (route, path) = chooser.pick(&mut rng);
            seen.insert(route.stream());
            assert!(path.starts_with("/v1/contests/c1/"), "{path}");
            if let Some(offset) = path.split("offset=").nth(1) {
                let offset: usize = offset.split('&').next().unwrap().parse().unwrap();
                assert!(offset < 120 && offset % 50 == 0, "{path}");
            }
        }
        assert_eq!(seen.len(), 3);
    }
}
