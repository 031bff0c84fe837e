//! `--healthcheck` asks the component's own health endpoint: exit 0 when it
//! answers 200, 1 otherwise, always within its 5 s budget.

mod support;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant;
use support::*;

/// Serves `reply` to `count` requests and returns the request lines.
fn http_server(reply: &'static str, count: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..count {
            let Ok((mut conn, _)) = listener.accept() else {
                break;
            };
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap_or(0);
            seen.push(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
            let _ = conn.write_all(reply.as_bytes());
        }
        seen
    });
    (port, handle)
}

#[test]
fn api_server_health_200_is_healthy_and_503_or_nothing_is_not() {
    // A scheduler that is down does not make the api-server unhealthy.
    let (port, server) = http_server("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"metadatabase\":{\"status\":\"healthy\"},\"scheduler\":{\"status\":\"unhealthy\"}}", 1);
    let f = Run::new(Mode::Subreaper, "hc")
        .env("AIRFLOW__API__PORT", port.to_string())
        .env("AIRFLOW_VERSION", "3.3.2")
        .args(["--healthcheck", "webserver"])
        .run(secs(20));
    f.expect_code(0);
    assert!(f.stdout.starts_with("healthy"), "{}", f.stdout);
    assert_eq!(
        server.join().unwrap(),
        vec!["GET /api/v2/monitor/health HTTP/1.0"]
    );

    let (port, server) = http_server(
        "HTTP/1.1 503 Service Unavailable\r\n\r\n{\"metadatabase\":{\"status\":\"unhealthy\"}}",
        1,
    );
    let f = Run::new(Mode::Subreaper, "hc")
        .env("AIRFLOW__WEBSERVER__WEB_SERVER_PORT", port.to_string())
        .env("AIRFLOW_VERSION", "2.11.0")
        .args(["--healthcheck", "webserver"])
        .run(secs(20));
    f.expect_code(1);
    assert!(f.stdout.contains("503"), "{}", f.stdout);
    assert_eq!(server.join().unwrap(), vec!["GET /health HTTP/1.0"]);

    let started = Instant::now();
    let f = Run::new(Mode::Subreaper, "hc")
        .env(
            "AIRFLOW__API__PORT",
            support::servers::free_port().to_string(),
        )
        .args(["--healthcheck", "api-server"])
        .run(secs(20));
    f.expect_code(1);
    assert!(f.stdout.contains("connection refused"), "{}", f.stdout);
    assert!(started.elapsed() < secs(15));
}

#[test]
fn a_server_that_never_answers_is_unhealthy_within_the_budget() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let f = Run::new(Mode::Subreaper, "hc")
        .env("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "true")
        .env(
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
            port.to_string(),
        )
        .args(["--healthcheck", "scheduler"])
        .run(secs(30));
    f.expect_code(1);
    assert!(started.elapsed() < secs(15), "{:?}", started.elapsed());
    drop(listener);
}
