//! The real app, in process, on port 0, against a real or an unreachable PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::spawn_app;
use counseling_testkit::TestDatabase;
use counseling_testkit::fixtures::{Reply, get_async, send};
use sea_orm::sqlx::{self, Connection, PgConnection};
use serde_json::Value;

/// The test kit's GET, with an `x-request-id` header when given.
async fn get(port: u16, path: &str, request_id: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = request_id
        .map(|id| ("x-request-id", id))
        .into_iter()
        .collect();
    let url = format!("http://127.0.0.1:{port}{path}");
    get_async(&url, &headers, Duration::from_secs(10))
        .await
        .unwrap()
}

fn assert_timestamp_is_now(body: &Value) {
    let text = body["timestamp"].as_str().unwrap();
    // RFC 3339 in UTC with a Z and whole seconds: 2025-12-20T12:34:56Z.
    assert_eq!(text.len(), 20, "{text}");
    assert!(text.ends_with('Z') && text.as_bytes()[10] == b'T', "{text}");
    let parsed = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    let skew = chrono::Utc::now()
        .signed_duration_since(parsed)
        .num_seconds()
        .abs();
    assert!(skew <= 5, "{text} is {skew}s off");
}

#[tokio::test]
async fn healthy_database_gives_200_with_the_contract_body() {
    let db = TestDatabase::migrated().await.unwrap();
    let port = spawn_app(&db.url(), &[]);
    for path in ["/health", "/health/ready"] {
        let reply = get(port, path, None).await;
        assert_eq!(reply.status, 200, "{path}");
        let body = reply.json();
        let object = body.as_object().unwrap();
        let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["database", "status", "timestamp"], "{path}");
        assert_eq!(reply.json()["status"], "healthy");
        assert_eq!(reply.json()["database"], "connected");
        assert_timestamp_is_now(&reply.json());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let id = reply.header("x-request-id").unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    }
}

/// `method path` with an empty body for methods that carry one.
async fn request(port: u16, method: &'static str, path: &str) -> Reply {
    let url = format!("http://127.0.0.1:{port}{path}");
    let body = (method != "HEAD").then_some("");
    tokio::task::spawn_blocking(move || send(method, &url, &[], body, Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap()
}

/// `HEAD path` on a plain connection, read to its end: everything the server sent, so a body
/// (which an HTTP client would not read after HEAD) shows.
async fn raw_head(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let request = format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap()
}

/// Monitors and load balancers often probe with HEAD: it answers as GET does, status and
/// headers (the length of the body GET would send included), without a body, on the metrics
/// port of its own too. Another method is told which ones the path takes, not that it has no
/// such path.
#[tokio::test]
async fn head_answers_as_get_does_and_other_methods_get_405() {
    let db = TestDatabase::migrated().await.unwrap();
    let (port, metrics_port) = common::spawn_application(&db.url(), &[("METRICS_PORT", "0")]);
    let metrics_port = metrics_port.unwrap();
    // And /metrics on the main port, where it is without METRICS_PORT.
    let main_metrics_port = spawn_app(&db.url(), &[]);
    let paths = [
        (port, "/health"),
        (port, "/health/ready"),
        (port, "/health/live"),
        (metrics_port, "/metrics"),
        (main_metrics_port, "/metrics"),
    ];
    for (port, path) in paths {
        let got = get(port, path, None).await;
        let head = request(port, "HEAD", path).await;
        assert_eq!(head.status, got.status, "{path}");
        assert_eq!(head.status, 200, "{path}");
        let raw = raw_head(port, path).await;
        assert!(
            raw.ends_with("\r\n\r\n"),
            "a body after the headers: {raw:?}"
        );
        if path != "/metrics" {
            // /metrics' length changes between two scrapes (its own counters).
            let length = got.body.len().to_string();
            assert!(
                raw.to_lowercase()
                    .contains(&format!("content-length: {length}\r\n")),
                "{path}: GET sent {length} bytes: {raw:?}"
            );
        }
        for header in ["content-type", "cache-control"] {
            assert_eq!(head.header(header), got.header(header), "{path} {header}");
        }
        for method in ["POST", "PUT", "DELETE"] {
            let refused = request(port, method, path).await;
            assert_eq!(refused.status, 405, "{method} {path}");
            assert_eq!(
                refused.header("allow"),
                Some("GET, HEAD"),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn a_client_request_id_is_kept_and_a_bad_one_replaced() {
    let db = TestDatabase::migrated().await.unwrap();
    let port = spawn_app(&db.url(), &[]);
    for kept in ["req-42.abc", "A_b-C.d", &"x".repeat(64)] {
        let reply = get(port, "/health/live", Some(kept)).await;
        assert_eq!(reply.header("x-request-id"), Some(kept));
    }
    // Replaced by a generated UUID: too long, or characters outside [A-Za-z0-9._-].
    for replaced in [&"x".repeat(65), "a b", "id\"=1", "a/b", "{x}", "a%0Ab"] {
        let reply = get(port, "/health/live", Some(replaced)).await;
        let id = reply.header("x-request-id").unwrap();
        assert_ne!(id, replaced);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{replaced:?} -> {id}");
    }
}

#[tokio::test]
async fn unreachable_database_gives_503_quickly_and_live_stays_200() {
    // Port 1 on loopback: connection refused. The password must not surface anywhere.
    let url = "postgres://probe_user:pr0be-secret@127.0.0.1:1/probe_db";
    // A refusal is the answer: it does not wait out the (long) timeout.
    let port = spawn_app(url, &[("HEALTH_TIMEOUT_MS", "5000")]);
    for path in ["/health", "/health/ready"] {
        let started = Instant::now();
        let reply = get(port, path, None).await;
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(reply.status, 503, "{path}");
        let body = reply.json();
        let object = body.as_object().unwrap();
        let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["database", "error", "status", "timestamp"]);
        assert_eq!(reply.json()["status"], "unhealthy");
        assert_eq!(reply.json()["database"], "disconnected");
        assert_eq!(reply.json()["error"], "connection refused");
        assert_timestamp_is_now(&reply.json());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let text = reply.json().to_string();
        for secret in ["pr0be-secret", "probe_user", "127.0.0.1", "probe_db"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
    let reply = get(port, "/health/live", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"status": "alive"}));
    // A cache in between must not answer "alive" for a process that has since died.
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

/// Down three ways: refusing connections (port 1) or a name that does not resolve answers at
/// once, whatever the timeout; a black hole (a listener that never accepts) only by the timeout,
/// which 40 probes at once must not stretch (they share the round in flight).
#[tokio::test]
async fn many_probes_while_the_database_is_down_all_answer_within_the_timeout() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let black_holed = format!("postgres://u:p@{}/db", black_hole.local_addr().unwrap());
    for (url, reason, timeout_ms, bound_ms) in [
        (
            "postgres://u:p@127.0.0.1:1/db",
            "connection refused",
            "5000",
            2000,
        ),
        // RFC 6761: `.invalid` never resolves.
        (
            "postgres://u:p@db.invalid/db",
            "host name not resolved",
            "5000",
            2000,
        ),
        (black_holed.as_str(), "Connection timeout", "800", 1200),
    ] {
        let port = spawn_app(url, &[("HEALTH_TIMEOUT_MS", timeout_ms)]);
        let probes: Vec<_> = (0..40)
            .map(|_| {
                tokio::spawn(async move {
                    let started = Instant::now();
                    let reply = get(port, "/health", None).await;
                    (reply, started.elapsed())
                })
            })
            .collect();
        for probe in probes {
            let (reply, took) = probe.await.unwrap();
            assert_eq!(reply.status, 503, "{reason}");
            assert_eq!(reply.json()["error"], reason);
            let bound = Duration::from_millis(bound_ms);
            assert!(took < bound, "{reason}: a probe took {took:?}");
        }
    }
    drop(black_hole);
}

#[tokio::test]
async fn a_black_holed_database_gives_503_within_the_timeout() {
    // A listener nobody accepts from: TCP handshakes complete in the kernel's backlog, then no
    // byte ever comes back, like a network partition or a hung host.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = black_hole.local_addr().unwrap();
    let url = format!("postgres://u:p@{address}/db");
    let port = spawn_app(&url, &[("HEALTH_TIMEOUT_MS", "700")]);
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get(port, "/health", None).await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1200), "{took:?}");
        assert_eq!(reply.status, 503);
        // As the health contract (story.md) spells it.
        assert_eq!(reply.json()["error"], "Connection timeout");
    }
    drop(black_hole);
}

/// The reasons a running server refuses a session are told apart in the body (fixed text, never
/// the name or password given): a database that does not exist, a wrong password.
#[tokio::test]
async fn a_missing_database_and_a_wrong_password_give_their_own_reason() {
    let db = TestDatabase::migrated().await.unwrap();
    for (parameter, value, reason) in [
        ("dbname", "no_such_database", "database does not exist"),
        ("password", "not-the-password", "authentication failed"),
    ] {
        let port = spawn_app(&db.url_with(&[(parameter, value)]), &[]);
        let reply = get(port, "/health", None).await;
        assert_eq!(reply.status, 503, "{parameter}: {}", reply.body);
        assert_eq!(reply.json()["error"], reason, "{parameter}");
        assert!(!reply.body.contains(value), "{}", reply.body);
    }
}

/// Ready means this service can do its work: a database the migrations never reached, or one
/// where the service's role lost a grant it needs, is unready with its own reason, and ready
/// again once mended.
#[tokio::test]
async fn a_database_without_the_schema_or_the_grants_is_not_ready() {
    let unmigrated = TestDatabase::empty().await.unwrap();
    let port = spawn_app(&unmigrated.url(), &[]);
    let reply = get(port, "/health/ready", None).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["error"], "schema not migrated");

    let db = TestDatabase::migrated().await.unwrap();
    let port = spawn_app(&db.url(), &[]);
    assert_eq!(get(port, "/health", None).await.status, 200);
    let mut owner = PgConnection::connect(&db.owner_url()).await.unwrap();
    for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        let service: sqlx::postgres::PgConnectOptions = db.url().parse().unwrap();
        let user = service.get_username().to_owned();
        let grant = |verb: &str, to: &str| format!("{verb} {privilege} ON users {to} \"{user}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(grant("REVOKE", "FROM")))
            .execute(&mut owner)
            .await
            .unwrap();
        let reply = get(port, "/health", None).await;
        assert_eq!(reply.status, 503, "{privilege}: {}", reply.body);
        assert_eq!(reply.json()["error"], "permission denied", "{privilege}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(grant("GRANT", "TO")))
            .execute(&mut owner)
            .await
            .unwrap();
        assert_eq!(get(port, "/health", None).await.status, 200, "{privilege}");
    }
}
