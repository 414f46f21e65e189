//! Shutdown passed in, not discovered: one `CancellationToken` per process,
//! cancelled by SIGINT or SIGTERM, or by the first task that fails
//! ([`Supervisor`]).

use std::collections::HashMap;
use std::future::Future;

pub use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGINT or SIGTERM.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining");
        cancel.cancel();
    });
    token
}

/// The long-running tasks of one service. The first that fails, by an error
/// or a panic, cancels the shutdown token its siblings watch, and
/// [`Supervisor::wait`] returns its reason once all have ended, so the
/// binary exits non-zero with it (shaped like arroyo's `shutdown.rs`).
#[derive(Debug)]
pub struct Supervisor {
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, &'static str>,
    shutdown: CancellationToken,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken) -> Supervisor {
        Supervisor {
            tasks: tokio::task::JoinSet::new(),
            names: HashMap::new(),
            shutdown,
        }
    }

    /// Runs `task` under the name `name` (used in the failure's message).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for every task; the first failure cancels the rest and is
    /// returned. A task that ends cleanly before shutdown is not a failure.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first: Option<anyhow::Error> = None;
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let failure = match joined {
                Ok((_, Ok(()))) => None,
                Ok((id, Err(error))) => {
                    let name = self.names.get(&id).copied().unwrap_or("a task");
                    Some(error.context(format!("{name} failed")))
                }
                Err(error) if error.is_panic() => {
                    let name = self.names.get(&error.id()).copied().unwrap_or("a task");
                    let payload = error.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|text| (*text).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".to_owned());
                    Some(anyhow::anyhow!("{name} panicked: {message}"))
                }
                Err(_) => None,
            };
            if let Some(failure) = failure {
                if first.is_none() {
                    tracing::error!(
                        error = format!("{failure:#}"),
                        "a task failed; stopping the service"
                    );
                    self.shutdown.cancel();
                    first = Some(failure);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_cancels_its_siblings_and_is_returned() {
        let shutdown = CancellationToken::new();
        let mut tasks = Supervisor::new(shutdown.clone());
        let sibling = shutdown.clone();
        tasks.spawn("server", async move {
            sibling.cancelled().await;
            Ok(())
        });
        tasks.spawn("follower", async {
            anyhow::bail!("redis refused the subscription")
        });
        let error = tasks.wait().await.unwrap_err();
        assert!(shutdown.is_cancelled());
        let message = format!("{error:#}");
        assert!(message.contains("follower failed"), "{message}");
        assert!(message.contains("redis refused"), "{message}");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_with_its_message() {
        let shutdown = CancellationToken::new();
        let mut tasks = Supervisor::new(shutdown.clone());
        let sibling = shutdown.clone();
        tasks.spawn("server", async move {
            sibling.cancelled().await;
            Ok(())
        });
        tasks.spawn("refresher", async { panic!("index out of range") });
        let error = tasks.wait().await.unwrap_err();
        assert!(shutdown.is_cancelled());
        assert_eq!(error.to_string(), "refresher panicked: index out of range");
    }

    #[tokio::test]
    async fn clean_ends_are_not_failures() {
        let shutdown = CancellationToken::new();
        let mut tasks = Supervisor::new(shutdown.clone());
        tasks.spawn("one", async { Ok(()) });
        tasks.spawn("two", async { Ok(()) });
        tasks.wait().await.unwrap();
        assert!(!shutdown.is_cancelled());
    }
}
