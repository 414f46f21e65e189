//! The shared admin routes, served for real on a loopback port.

use std::time::Duration;

use leaderboard_service::admin::{self, ReadyCheck};
use leaderboard_service::shutdown::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let registry = prometheus::Registry::new();
    let counter = prometheus::IntCounter::new("test_events_total", "events").unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    counter.inc_by(3);

    let ready = ReadyCheck::new("always", || async { Ok(()) });
    let failing = ReadyCheck::new("redis", || async { Err("connection refused".to_owned()) });
    let shutdown = CancellationToken::new();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let green = listener.local_addr().unwrap();
    let server = tokio::spawn(admin::serve(
        listener,
        admin::router(registry.clone(), vec![ready.clone()]),
        shutdown.clone(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let red = listener.local_addr().unwrap();
    let red_server = tokio::spawn(admin::serve(
        listener,
        admin::router(registry, vec![ready, failing]),
        shutdown.clone(),
    ));

    let (status, body) = get(green, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("test_events_total 3"), "{body}");
    assert_eq!(get(green, "/healthz").await.0, 200);
    assert_eq!(get(green, "/readyz").await.0, 200);

    let (status, body) = get(red, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("redis") && body.contains("connection refused"),
        "{body}"
    );
    assert_eq!(get(red, "/healthz").await.0, 200, "alive while not ready");
    // Each scrape runs the checks: the failing dependency shows as 0.
    let (_, body) = get(red, "/metrics").await;
    assert!(
        body.contains("service_dependency_up{dependency=\"redis\"} 0")
            && body.contains("service_dependency_up{dependency=\"always\"} 1"),
        "{body}"
    );

    // A dependency that never answers counts as down, and /readyz answers anyway.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = listener.local_addr().unwrap();
    let never = ReadyCheck::new("store", std::future::pending::<Result<(), String>>);
    let hung_server = tokio::spawn(admin::serve(
        listener,
        admin::router(prometheus::Registry::new(), vec![never]),
        shutdown.clone(),
    ));
    let (status, body) = get(hung, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("no answer within"), "{body}");
    let (_, body) = get(hung, "/metrics").await;
    assert!(
        body.contains("service_dependency_up{dependency=\"store\"} 0"),
        "{body}"
    );

    shutdown.cancel();
    for handle in [server, red_server, hung_server] {
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("drains on shutdown")
            .unwrap()
            .unwrap();
    }
}
