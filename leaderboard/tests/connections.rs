//! The read API's connection handling under clients that never finish their
//! headers: a normal client is still answered, and the slow ones are closed
//! once the header timeout passes; an idle keep-alive connection is closed
//! after the idle timeout.

use leaderboard::api::server::ServeOptions;
use leaderboard_service::http::ConnectionArgs;
use leaderboard_testkit as support;
use support::fixture::Fixture;

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_do_not_starve_a_normal_one_and_are_closed_after_the_header_timeout() {
    let fixture = Fixture::new().await;
    let (port, _, shutdown) = fixture
        .serve(ServeOptions {
            rate_limit: 0,
            connections: ConnectionArgs {
                max_connections: 10_000,
                header_timeout_ms: 2_000,
                idle_timeout_secs: 60,
            },
            ..ServeOptions::default()
        })
        .await;
    tokio::task::spawn_blocking(move || {
        let mut slow = support::slow_clients(port, 2_000);
        let (status, _, body) = support::http(port, "/v1/contests/c1/leaderboard?limit=3");
        assert_eq!(status, 200, "{body}");
        // Answered while the slow ones were still held open, not after.
        let closed = support::closed_by_server(&mut slow);
        assert!(closed < slow.len(), "every slow client was already closed");
        support::wait_until(30, "every slow client closed by the server", || {
            support::closed_by_server(&mut slow) == slow.len()
        });
    })
    .await
    .unwrap();
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    use std::io::{Read, Write};
    let fixture = Fixture::new().await;
    let (port, _, shutdown) = fixture
        .serve(ServeOptions {
            rate_limit: 0,
            connections: ConnectionArgs {
                max_connections: 100,
                header_timeout_ms: 60_000,
                idle_timeout_secs: 1,
            },
            ..ServeOptions::default()
        })
        .await;
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut response = [0_u8; 512];
        let read = stream.read(&mut response).unwrap();
        assert!(
            response[..read].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&response[..read])
        );
        // Kept alive, then left idle: the server closes it (read returns 0).
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        assert_eq!(
            stream.read(&mut response).unwrap(),
            0,
            "closed by the server"
        );
    })
    .await
    .unwrap();
    shutdown.cancel();
}
