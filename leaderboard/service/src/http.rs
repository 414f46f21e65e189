//! Serving TCP connections: one accept loop with a connection cap, HTTP/1.1
//! connections with header-read and idle timeouts, and optionally one
//! single-threaded event loop per core that each connection is handed to.
//! Shared by `leaderboard serve`, the gateway and the benchmark's bare
//! server, so that all of them serve the same way.
//!
//! The cap is taken before accepting, as mini-redis does: past it new
//! connections wait in the kernel's backlog instead of each costing a task,
//! and a client that never finishes its headers holds its slot only until
//! the header timeout closes it.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connection limits and timeouts of a plain HTTP/1.1 listener.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Most TCP connections served at once; more wait in the listen backlog.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Milliseconds a client may take to send a request's headers; slower
    /// connections are closed.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Seconds a keep-alive connection may stay idle between requests.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
}

impl Default for ConnectionArgs {
    fn default() -> ConnectionArgs {
        ConnectionArgs {
            max_connections: 10_000,
            header_timeout_ms: 10_000,
            idle_timeout_secs: 60,
        }
    }
}

impl ConnectionArgs {
    /// The permits of the connection cap.
    pub fn permits(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.max_connections.max(1)))
    }

    /// An HTTP/1.1 connection builder with the header-read timeout (and the
    /// timer hyper needs for it).
    pub fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_millis(self.header_timeout_ms.max(1)));
        builder
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
}

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

/// An accepted connection and its slot under the connection cap (freed when
/// the permit drops).
pub type Accepted = (TcpStream, SocketAddr, OwnedSemaphorePermit);

/// The next connection, or `None` once `shutdown` is cancelled. A slot of
/// `permits` is taken first: while every slot is in use nothing is accepted.
/// Accept errors (out of descriptors, a connection reset before it was
/// taken) are logged and retried after a pause.
pub async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<Accepted> {
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        permit = permits.clone().acquire_owned() => permit.ok()?,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((stream, peer, permit)),
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
    permits: Arc<Semaphore>,
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
    while let Some((stream, peer, permit)) = accept(&listener, &permits, &shutdown).await {
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
                drop(permit);
            },
            handle,
        );
    }
    // A loop that panicked is an error of the whole server, not a detail.
    let panicked = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .filter_map(|handle| handle.join().err())
            .count()
    })
    .await?;
    if panicked > 0 {
        return Err(std::io::Error::other(format!(
            "{panicked} of {threads} event loops panicked"
        )));
    }
    Ok(())
}

/// Serves one HTTP/1.1 connection with `service` until it ends or is
/// upgraded (an upgraded stream is an [`idle::Watched`] `TcpStream`); closes it
/// once it has been idle (no request in flight, nothing read) for
/// `idle_timeout`; after `shutdown`, lets its request in flight finish.
pub async fn serve_http1<S, B>(
    args: &ConnectionArgs,
    stream: TcpStream,
    service: S,
    shutdown: CancellationToken,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    let (io, activity) = idle::Watched::new(stream);
    let builder = args.http1();
    let connection = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let idle_timeout = args.idle_timeout();
    let mut check = tokio::time::interval(idle_timeout / 4 + Duration::from_millis(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = shutdown.cancelled() => break,
            _ = check.tick() => {
                if activity.idle_for() >= idle_timeout {
                    break;
                }
            }
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

pub mod idle {
    //! Time since a connection last read or wrote a byte.

    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// When the wrapped stream last moved bytes, as milliseconds since `start`.
    #[derive(Debug, Clone)]
    pub struct Activity {
        start: Instant,
        last_ms: Arc<AtomicU64>,
    }

    impl Activity {
        fn touch(&self) {
            let now = self.start.elapsed().as_millis() as u64;
            self.last_ms.store(now, Ordering::Relaxed);
        }

        pub fn idle_for(&self) -> Duration {
            let now = self.start.elapsed().as_millis() as u64;
            Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
        }
    }

    /// A stream that records its activity.
    #[derive(Debug)]
    pub struct Watched<T> {
        inner: T,
        activity: Activity,
    }

    impl<T> Watched<T> {
        /// The stream itself (after an upgrade, say).
        pub fn into_inner(self) -> T {
            self.inner
        }

        pub fn new(inner: T) -> (Watched<T>, Activity) {
            let activity = Activity {
                start: Instant::now(),
                last_ms: Arc::new(AtomicU64::new(0)),
            };
            (
                Watched {
                    inner,
                    activity: activity.clone(),
                },
                activity,
            )
        }
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if buf.filled().len() > before {
                self.activity.touch();
            }
            polled
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
                self.activity.touch();
            }
            polled
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
                self.activity.touch();
            }
            polled
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }
    }
}
