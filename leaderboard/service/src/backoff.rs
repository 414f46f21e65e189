//! The one retry/backoff helper every service uses: exponential delays with
//! jitter, transient failures retried, permanent ones returned at once, and
//! a [`Health`] flag that `/readyz` reads while a dependency keeps failing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter: each delay doubles up to `max`, and a
/// random extra of up to half the delay keeps many clients from retrying in
/// lock step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        debug_assert!(initial <= max);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// 100 ms doubling up to 5 s: reconnecting to Redis or Kafka.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The next delay (jitter included), and the one after it doubled.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        let jitter_ms = rand::rng().random_range(0..=base.as_millis() as u64 / 2);
        self.current = (self.current * 2).min(self.max);
        base + Duration::from_millis(jitter_ms)
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Sleeps the next delay; `false` when `shutdown` came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// Whether a failure can pass by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A connection dropped, a timeout, a server busy or failing over: retry.
    Transient,
    /// A rejected configuration, a missing permission, a corrupt record:
    /// retrying repeats it, so the service stops and says why.
    Permanent,
}

/// What a dependency's retry loops last saw: `/readyz` is not ready while
/// any of them is failing.
#[derive(Debug, Clone, Default)]
pub struct Health {
    failing: Arc<Mutex<Vec<(&'static str, String)>>>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    fn set(&self, what: &'static str, error: Option<String>) {
        let mut failing = self.failing.lock().expect("health lock");
        failing.retain(|(name, _)| *name != what);
        if let Some(error) = error {
            failing.push((what, error));
        }
    }

    /// `Err` naming each failing operation while any keeps failing.
    pub fn check(&self) -> Result<(), String> {
        let failing = self.failing.lock().expect("health lock");
        if failing.is_empty() {
            return Ok(());
        }
        Err(failing
            .iter()
            .map(|(what, error)| format!("{what}: {error}"))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// Why [`retry`] stopped without a value.
#[derive(Debug)]
pub enum Stopped<E> {
    /// The service is shutting down.
    Shutdown,
    /// A permanent failure: retrying would only repeat it.
    Permanent(E),
}

/// Retries `attempt` while it fails transiently, with [`Backoff::reconnect`]
/// delays, until it succeeds, fails permanently, or `shutdown` is cancelled.
/// `health` is failing from the first failed attempt until one succeeds;
/// `on_retry` is called once per retried failure (for a metric).
pub async fn retry<T, E, F, Fut>(
    what: &'static str,
    shutdown: &CancellationToken,
    health: &Health,
    classify: impl Fn(&E) -> Failure,
    on_retry: impl Fn(),
    mut attempt: F,
) -> Result<T, Stopped<E>>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::reconnect();
    loop {
        match attempt().await {
            Ok(value) => {
                health.set(what, None);
                return Ok(value);
            }
            Err(error) if classify(&error) == Failure::Permanent => {
                tracing::error!(operation = what, %error, "permanent failure, not retrying");
                health.set(what, Some(error.to_string()));
                return Err(Stopped::Permanent(error));
            }
            Err(error) => {
                on_retry();
                health.set(what, Some(error.to_string()));
                let delay = backoff.next_delay();
                tracing::warn!(operation = what, %error, retry_in_ms = delay.as_millis() as u64, "failed, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(Stopped::Shutdown),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_double_up_to_the_cap_with_at_most_half_of_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        for (delay, base) in delays.iter().zip([100, 200, 400, 400, 400]) {
            let base = Duration::from_millis(base);
            assert!(
                *delay >= base && *delay <= base + base / 2,
                "{delay:?} vs {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_reported_until_one_succeeds() {
        let health = Health::new();
        let attempts = AtomicU32::new(0);
        let retried = AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        let result = retry(
            "write",
            &shutdown,
            &health,
            |_: &String| Failure::Transient,
            || {
                retried.fetch_add(1, Ordering::Relaxed);
            },
            || {
                let attempt = attempts.fetch_add(1, Ordering::Relaxed);
                let health = health.clone();
                async move {
                    if attempt < 3 {
                        Err(format!("down {attempt}"))
                    } else {
                        // Failing while the outage lasted: not ready.
                        assert!(health.check().unwrap_err().contains("write: down 2"));
                        Ok(attempt)
                    }
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retried.load(Ordering::Relaxed), 3);
        assert_eq!(health.check(), Ok(()), "ready again after the success");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_stops_at_once() {
        let health = Health::new();
        let attempts = AtomicU32::new(0);
        let result: Result<(), _> = retry(
            "connect",
            &CancellationToken::new(),
            &health,
            |error: &String| {
                if error.contains("NOPERM") {
                    Failure::Permanent
                } else {
                    Failure::Transient
                }
            },
            || {},
            || {
                attempts.fetch_add(1, Ordering::Relaxed);
                async { Err("NOPERM this user has no permissions".to_owned()) }
            },
        )
        .await;
        assert!(matches!(result, Err(Stopped::Permanent(ref e)) if e.contains("NOPERM")));
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
        assert!(health.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_retries() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let result: Result<(), Stopped<String>> = retry(
            "write",
            &shutdown,
            &Health::new(),
            |_| Failure::Transient,
            || {},
            || async { Err("down".to_owned()) },
        )
        .await;
        assert!(matches!(result, Err(Stopped::Shutdown)));
    }
}
