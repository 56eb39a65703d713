//! The real `counseling-api` binary against a private PostgreSQL that goes down and comes back.
//! Unix only: every test here starts a cluster of its own or signals the process, neither of
//! which exists on Windows (see the test kit's `platform` module and `counseling_e2e::signal`).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use counseling_e2e::signal::Signal;
use counseling_e2e::{Api, get_json, wait_for_status};
use counseling_testkit::{PgCluster, TestDatabase};

/// A private cluster, a migrated database on it, and the service reporting healthy against it.
async fn healthy_api(extra: &[(&str, &str)]) -> (PgCluster, TestDatabase, Api) {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let url = db.url();
    let mut vars = vec![("DATABASE_URL", url.as_str())];
    vars.extend_from_slice(extra);
    let mut api = Api::spawn(&vars);
    api.wait_listening();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
    (cluster, db, api)
}

#[tokio::test]
async fn stopped_database_gives_503_within_2s_and_restart_gives_200_within_5s() {
    let (cluster, _db, mut api) = healthy_api(&[]).await;

    cluster.stop().await.unwrap();
    let started = Instant::now();
    let (status, body) = get_json(&api.url("/health"), Duration::from_secs(5)).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["database"], "disconnected");
    assert!(body["error"].is_string());

    cluster.restart().await.unwrap();
    // wait_for_status fails the test unless 200 comes within 5 s.
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
    // Still the same process: it recovered by itself.
    assert!(api.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn frozen_database_gives_503_within_2s() {
    let (cluster, _db, api) = healthy_api(&[]).await;

    cluster.freeze().unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = get_json(&api.url("/health"), Duration::from_secs(5)).unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // Liveness does not depend on the database.
    assert_eq!(
        get_json(&api.url("/health/live"), Duration::from_secs(2))
            .unwrap()
            .0,
        200
    );
    cluster.thaw().unwrap();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
}

#[tokio::test]
async fn unreachable_at_start_the_process_still_serves_503_then_heals() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    cluster.stop().await.unwrap();

    let mut api = Api::spawn(&[("DATABASE_URL", &db.url())]);
    api.wait_listening();
    let (status, body) = get_json(&api.url("/health"), Duration::from_secs(5)).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "connection refused");
    assert_eq!(
        get_json(&api.url("/health/live"), Duration::from_secs(2))
            .unwrap()
            .0,
        200
    );

    cluster.restart().await.unwrap();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_during_a_slow_request_lets_it_finish_and_exits_0() {
    let (cluster, _db, mut api) = healthy_api(&[("HEALTH_TIMEOUT_MS", "2000")]).await;
    cluster.freeze().unwrap();

    let url = api.url("/health");
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        (get_json(&url, Duration::from_secs(10)), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    api.signal(Signal::SIGTERM);

    let (reply, took) = slow.join().unwrap();
    let (status, body) = reply.expect("the in-flight request must complete");
    assert_eq!(status, 503, "{body}");
    assert!(
        took >= Duration::from_millis(1500),
        "it ran to its end: {took:?} {body}\n{}",
        api.output()
    );
    let exit = api.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "{}", api.output());
    cluster.thaw().unwrap();
}

#[tokio::test]
async fn sigint_also_drains_and_exits_0() {
    let (_cluster, _db, mut api) = healthy_api(&[]).await;
    api.signal(Signal::SIGINT);
    assert_eq!(
        api.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        api.output()
    );
}

#[tokio::test]
async fn debug_logs_are_json_lines_and_never_contain_the_password() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    // The service role's password, as the URL carries it.
    let url = db.url();
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map(|(_, password)| password.to_owned())
        .unwrap();
    assert!(password.len() >= 32);
    let mut api = Api::spawn(&[
        ("DATABASE_URL", &db.url()),
        ("RUST_LOG", "trace"),
        ("DATABASE_ECHO", "true"),
        ("LOG_FORMAT", "json"),
    ]);
    api.wait_listening();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
    cluster.stop().await.unwrap();
    wait_for_status(&api.url("/health"), 503, Duration::from_secs(5));
    cluster.restart().await.unwrap();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
    api.signal(Signal::SIGTERM);
    assert_eq!(api.wait_exit(Duration::from_secs(10)).code(), Some(0));

    let output = api.output();
    assert!(
        output.lines().count() > 5,
        "expected plenty of debug output:\n{output}"
    );
    for line in output.lines() {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
    }
    assert!(
        !output.contains(&password),
        "the database password leaked into the logs"
    );
    assert!(
        output.contains("request completed"),
        "request lines are logged"
    );
    assert!(output.contains("x-request-id") || output.contains("request_id"));
}

#[tokio::test]
async fn pretty_logs_are_readable_lines() {
    let (_cluster, _db, mut api) = healthy_api(&[("LOG_FORMAT", "pretty")]).await;
    api.signal(Signal::SIGTERM);
    api.wait_exit(Duration::from_secs(10));
    let output = api.output();
    assert!(output.contains("counseling-api listening"), "{output}");
    assert!(!output.trim_start().starts_with('{'), "{output}");
}
