//! The real `counseling-api` binary against a private PostgreSQL that goes down and comes back.
//! Unix only: every test here starts a cluster of its own or signals the process, neither of
//! which exists on Windows (see the test kit's `platform` module and `counseling_e2e::signal`).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use counseling_e2e::signal::Signal;
use counseling_e2e::{Api, get_json, get_text, wait_for_status};
use counseling_testkit::fixtures::eventually;
use counseling_testkit::{PgCluster, Scrape, TestDatabase};
use sea_orm::sqlx::{Connection, PgConnection};

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
    // The pooled session was ended by the stop, or a new one was refused: either is the truth.
    let reason = body["error"].as_str().unwrap();
    assert!(
        ["connection lost", "connection refused"].contains(&reason),
        "{body}"
    );
    // More probes while it is down, each logged only if its reason is new.
    for _ in 0..5 {
        let (status, body) = get_json(&api.url("/health"), Duration::from_secs(5)).unwrap();
        assert_eq!(status, 503, "{body}");
    }

    cluster.restart().await.unwrap();
    // wait_for_status fails the test unless 200 comes within 5 s.
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
    // Still the same process: it recovered by itself.
    assert!(api.child.try_wait().unwrap().is_none());

    // The change is logged once each way, not at every probe.
    for _ in 0..3 {
        let (status, body) = get_json(&api.url("/health"), Duration::from_secs(5)).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let lines = |text: &str| api.output().lines().filter(|l| l.contains(text)).count();
    eventually("the recovery logged", Duration::from_secs(2), async || {
        lines("database healthy again") == 1
    })
    .await
    .unwrap_or_else(|error| panic!("{error}:\n{}", api.output()));
    // Once per reason it met (a lost session, refused connections, maybe a server starting up
    // while the restart was polled), not per probe: at least six probes were unhealthy.
    let unhealthy = lines("database unhealthy");
    assert!((1..=3).contains(&unhealthy), "{}", api.output());
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
        // The story's own words for a database that does not answer.
        assert_eq!(body["error"], "Connection timeout", "{body}");
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

/// `signals`, each after its pause, while a request is in flight (a health check waiting on a
/// frozen server for its 2 s timeout): the request runs to its end, then the process exits 0.
async fn a_request_in_flight_completes_after(signals: &[(u64, Signal)]) {
    let (cluster, _db, mut api) = healthy_api(&[("HEALTH_TIMEOUT_MS", "2000")]).await;
    cluster.freeze().unwrap();

    let url = api.url("/health");
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        (get_json(&url, Duration::from_secs(10)), started.elapsed())
    });
    for &(pause_ms, signal) in signals {
        std::thread::sleep(Duration::from_millis(pause_ms));
        api.signal(signal);
    }

    let (reply, took) = slow.join().unwrap();
    let (status, body) = reply.unwrap_or_else(|error| {
        panic!(
            "the in-flight request must complete: {error}\n{}",
            api.output()
        )
    });
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

/// Twice, as a wrapper that passes on its process group's SIGTERM (`just`) delivers it: still
/// one request to drain.
#[tokio::test]
async fn sigterm_during_a_slow_request_even_twice_lets_it_finish_and_exits_0() {
    a_request_in_flight_completes_after(&[(500, Signal::SIGTERM), (300, Signal::SIGTERM)]).await;
}

/// Twice within moments too, as a wrapper that passes on the Ctrl-C its process group also got
/// (not at once: the two would merge into one signal on the way).
#[tokio::test]
async fn sigint_also_drains_and_exits_0() {
    a_request_in_flight_completes_after(&[(500, Signal::SIGINT), (100, Signal::SIGINT)]).await;
}

/// A Ctrl-C during the drain stops at once, without waiting for the in-flight request (a health
/// check that may wait 20 s on a frozen server), and the exit code says the drain was cut short.
#[tokio::test]
async fn a_second_signal_stops_at_once_and_exits_1() {
    // Soon after: only a Ctrl-C right after a Ctrl-C is taken for the same request.
    a_ctrl_c_while_draining_stops_at_once(Signal::SIGTERM, Duration::from_millis(100)).await;
}

/// A person's second Ctrl-C, a second after the first, is no wrapper passing the first on.
#[tokio::test]
async fn a_second_ctrl_c_a_second_later_stops_at_once_and_exits_1() {
    a_ctrl_c_while_draining_stops_at_once(Signal::SIGINT, Duration::from_secs(1)).await;
}

/// `first`, then SIGINT `pause` later, while a health check waits on a frozen server: the
/// process exits 1 at once, saying the drain was cut short.
async fn a_ctrl_c_while_draining_stops_at_once(first: Signal, pause: Duration) {
    let (cluster, _db, mut api) = healthy_api(&[("HEALTH_TIMEOUT_MS", "20000")]).await;
    cluster.freeze().unwrap();

    let url = api.url("/health");
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        (get_json(&url, Duration::from_secs(30)), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    api.signal(first);
    // The pause counts from when the service took the first signal, not from when it was sent.
    let draining = || api.output().contains("received: draining");
    counseling_testkit::fixtures::wait_until("the drain", Duration::from_secs(10), draining)
        .unwrap();
    std::thread::sleep(pause);
    api.signal(Signal::SIGINT);

    let exit = api.wait_exit(Duration::from_secs(5));
    assert_eq!(exit.code(), Some(1), "{}", api.output());
    assert!(
        api.output()
            .contains("SIGINT received while draining: stopped at once"),
        "{}",
        api.output()
    );
    // Cut, or answered 503 as its check lost the pool: either way not left to its 20 s.
    let (reply, took) = slow.join().unwrap();
    assert!(!matches!(reply, Ok((200, _))), "{reply:?}");
    assert!(
        took < Duration::from_secs(5),
        "the request took {took:?}: {reply:?}"
    );
    cluster.thaw().unwrap();
}

/// `APP_SHUTDOWN_TIMEOUT_SECS` bounds the drain: a request still waiting on a frozen server
/// (its check may take 20 s) is given up after 1 s, the pool's close after its own 3 s (the
/// check still holds a connection, which is said), and the process exits 0 long before 20 s.
#[tokio::test]
async fn the_shutdown_timeout_bounds_the_drain() {
    let (cluster, _db, mut api) = healthy_api(&[
        ("HEALTH_TIMEOUT_MS", "20000"),
        ("APP_SHUTDOWN_TIMEOUT_SECS", "1"),
    ])
    .await;
    cluster.freeze().unwrap();
    let url = api.url("/health");
    let slow = std::thread::spawn(move || get_json(&url, Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    api.signal(Signal::SIGTERM);
    let exit = api.wait_exit(Duration::from_secs(12));
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "{}", api.output());
    assert!(took >= Duration::from_secs(1), "no drain at all: {took:?}");
    assert!(
        api.output()
            .contains("database connections did not close in time"),
        "{}",
        api.output()
    );
    assert!(!matches!(slow.join().unwrap(), Ok((200, _))));
    cluster.thaw().unwrap();
}

/// The service's sessions on `db`, as the server counts them.
async fn service_sessions(admin: &mut PgConnection, db: &TestDatabase) -> i64 {
    sea_orm::sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'counseling-api'",
    )
    .bind(db.name())
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn sigterm_closes_the_pool_the_server_sees_each_session_say_goodbye() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let mut admin = PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap();
    // The service's sessions log how they end: a client that closes its socket without
    // PostgreSQL's Terminate message (a process that exits with its pool open) is logged at
    // DEBUG1 as "unexpected EOF on client connection".
    // Every session logs its end (this cluster is the test's own).
    for statement in [
        format!(
            "ALTER ROLE {} IN DATABASE {} SET log_min_messages = debug1",
            counseling_testkit::SERVICE_ROLE,
            db.name()
        ),
        "ALTER SYSTEM SET log_disconnections = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let mut api = Api::spawn(&[
        ("DATABASE_URL", &db.url()),
        ("DATABASE_MIN_CONNECTIONS", "3"),
    ]);
    api.wait_listening();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
    // The pool's minimum open and back in the pool (the keeper holds the connections it opens
    // until it has them all), as the service and the server see it.
    let idle = || {
        let (_, _, body) = get_text(&api.url("/metrics"), Duration::from_secs(5)).unwrap();
        Scrape::parse(&body)
            .unwrap()
            .value("db_client_connections_idle", &[])
    };
    let pool_open = async || service_sessions(&mut admin, &db).await == 3 && idle() >= 3.0;
    let within = Duration::from_secs(5);
    eventually(
        "the pool's minimum, open before the signal",
        within,
        pool_open,
    )
    .await
    .unwrap();

    api.signal(Signal::SIGTERM);
    assert_eq!(
        api.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        api.output()
    );
    let gone = async || service_sessions(&mut admin, &db).await == 0;
    eventually("the service's sessions end with it", within, gone)
        .await
        .unwrap();
    let server_log = std::fs::read_to_string(cluster.log_path()).unwrap();
    let goodbyes = server_log
        .lines()
        .filter(|line| {
            line.contains("disconnection:")
                && line.contains(&format!("database={}", db.name()))
                && line.contains(&format!("user={}", counseling_testkit::SERVICE_ROLE))
        })
        .count();
    assert!(
        goodbyes >= 3,
        "{goodbyes} disconnections logged:\n{server_log}"
    );
    // The control: a session of the same role and database dropped without Terminate is
    // logged. Once its line is there (the server logs in order, and the service's sessions
    // ended first), it must be the only one: the service's sessions said goodbye.
    drop(PgConnection::connect(&db.url()).await.unwrap());
    let eofs = || {
        std::fs::read_to_string(cluster.log_path())
            .unwrap()
            .matches("unexpected EOF on client connection")
            .count()
    };
    eventually("the dropped session logged", within, async || eofs() > 0)
        .await
        .unwrap();
    // A moment for a line of the service's that the server wrote late.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        eofs(),
        1,
        "a session was cut off instead of closed:\n{}\n{}",
        std::fs::read_to_string(cluster.log_path()).unwrap(),
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

/// Each request's log line carries the id its response gave the client: the client's own when
/// sane, else the one made for it, never a rejected value (which could forge log fields).
#[tokio::test]
async fn each_request_line_carries_the_id_its_response_gave() {
    let (_cluster, _db, mut api) = healthy_api(&[("LOG_FORMAT", "json")]).await;
    let mut given = Vec::new();
    for sent in [None, Some("client-id-7"), Some("a b=forged")] {
        let headers: Vec<(&str, &str)> = sent.map(|id| ("x-request-id", id)).into_iter().collect();
        let url = api.url("/health/live");
        let reply =
            counseling_provision::http::get(&url, &headers, Duration::from_secs(5)).unwrap();
        let id = reply.header("x-request-id").unwrap().to_owned();
        if let Some(sent) = sent.filter(|sent| !sent.contains(' ')) {
            assert_eq!(id, sent);
        }
        given.push(id);
    }
    api.signal(Signal::SIGTERM);
    assert_eq!(api.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let output = api.output();
    let request_lines: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("request completed") && line.contains("/health/live"))
        .collect();
    assert_eq!(request_lines.len(), 3, "{output}");
    for (line, id) in request_lines.iter().zip(&given) {
        let request_id = format!("\"request_id\":\"{id}\"");
        assert!(line.contains(&request_id), "{id}: {line}");
    }
    assert!(!output.contains("forged"), "{output}");
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
