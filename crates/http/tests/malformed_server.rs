//! A server that sends a malformed message (a frame shorter than its length prefix, on which
//! sqlx 0.9 panics) makes `/health` unhealthy, every time and promptly: the panic is contained
//! where the driver is called, so the task running the health check's rounds lives on. Without
//! that, the first probe's round died with its task and every later probe waited twice the
//! timeout for a round nobody ran.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use counseling_testkit::fixtures::{get_local, malformed_postgres};

#[tokio::test]
async fn a_server_sending_a_malformed_message_is_unhealthy_at_every_probe_not_a_dead_check() {
    let port = malformed_postgres().await.unwrap();
    let url = format!("postgres://someone:secret@127.0.0.1:{port}/db?sslmode=disable");
    let app = common::spawn_app(&url, &[("HEALTH_TIMEOUT_MS", "1000")]);
    for probe in 1..=3 {
        let started = Instant::now();
        let reply = get_local(app, "/health").await.unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 503, "probe {probe}: {}", reply.body);
        // The contained panic reads as a protocol error: a lost connection, not a timeout.
        assert_eq!(
            reply.json()["error"],
            "connection lost",
            "probe {probe}: {}",
            reply.body
        );
        assert!(!reply.body.contains("secret"), "{}", reply.body);
        assert!(
            took < Duration::from_millis(900),
            "probe {probe} took {took:?}"
        );
    }
}
