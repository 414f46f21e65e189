//! Serving TCP connections: one accept loop, and optionally one
//! single-threaded event loop per core that each connection is handed to.
//! Shared by `leaderboard serve` and the benchmark's bare server, so that
//! both can be measured serving the same way.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

thread_local! {
    /// The tracker of the event loop this thread runs, if it runs one.
    static LOOP_TASKS: RefCell<Option<TaskTracker>> = const { RefCell::new(None) };
}

/// Spawns `task` on the current runtime. On one of [`serve_per_thread`]'s
/// event loops it is tracked with that loop's connections, so the loop waits
/// for it on shutdown: for work that outlives the connection that started it
/// (an upgraded WebSocket session, say), and must stay on its core.
pub fn spawn_on_this_loop<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match LOOP_TASKS.with(|tasks| tasks.borrow().clone()) {
        Some(tracker) => drop(tracker.spawn(task)),
        None => drop(tokio::spawn(task)),
    }
}

/// The next connection, or `None` once `shutdown` is cancelled. Accept
/// errors (out of descriptors, a connection reset before it was taken) are
/// logged and retried after a pause.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves connections with `threads` single-threaded event loops, each in a
/// thread of its own: this task accepts, and each connection is handed to
/// the next loop in turn and served there by `serve` to its end, so its
/// requests never hop threads or wake another core. On `shutdown` it stops
/// accepting and waits for every connection's `serve` to return (each gets a
/// child of `shutdown` to finish its request in flight), and for the tasks
/// its connections started with [`spawn_on_this_loop`].
pub async fn serve_per_thread<S, F>(
    listener: TcpListener,
    threads: usize,
    shutdown: CancellationToken,
    serve: S,
) -> std::io::Result<()>
where
    S: Fn(TcpStream, SocketAddr, CancellationToken) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let threads = threads.max(1);
    let mut loops = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let tracker = TaskTracker::new();
        loops.push((runtime.handle().clone(), tracker.clone()));
        let shutdown = shutdown.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("http-{index}"))
                .spawn(move || {
                    LOOP_TASKS.with(|tasks| *tasks.borrow_mut() = Some(tracker.clone()));
                    runtime.block_on(async move {
                        shutdown.cancelled().await;
                        tracker.close();
                        tracker.wait().await;
                    })
                })?,
        );
    }
    let mut next = 0;
    while let Some((stream, peer)) = accept(&listener, &shutdown).await {
        let (handle, tracker) = &loops[next % threads];
        next += 1;
        // Leave this loop's reactor; the chosen loop registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot hand over a connection");
                continue;
            }
        };
        let (serve, shutdown) = (serve.clone(), shutdown.child_token());
        tracker.spawn_on(
            async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => serve(stream, peer, shutdown).await,
                    Err(error) => tracing::warn!(%error, "cannot take over a connection"),
                }
            },
            handle,
        );
    }
    tokio::task::spawn_blocking(move || {
        for handle in handles {
            let _ = handle.join();
        }
    })
    .await?;
    Ok(())
}
