//! `GET /metrics` of the real app, in process: every app has a recorder of its own, so these
//! tests run in parallel and each counts exactly its own requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{spawn_app, spawn_application};
use counseling_http::metrics::{CONTENT_TYPE, UNMATCHED_ROUTE};
use counseling_testkit::fixtures::{Reply, get_local};
use counseling_testkit::{MetricKind, PgCluster, Scrape, TestDatabase};

async fn get(port: u16, path: &str) -> Reply {
    get_local(port, path).await.unwrap()
}

async fn scrape(port: u16) -> Scrape {
    let reply = get(port, "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some(CONTENT_TYPE));
    Scrape::parse(&reply.body).unwrap()
}

const REQUESTS: &str = "http_server_requests_total";
const REQUEST_DURATION: &str = "http_server_request_duration_seconds";
const HEALTH_CHECKS: &str = "counseling_health_checks_total";
const ROUND_TRIPS: &str = "counseling_health_check_round_trips_total";

#[tokio::test]
async fn a_scrape_parses_with_help_and_types_and_counts_exactly_the_requests_made() {
    let db = TestDatabase::migrated().await.unwrap();
    let port = spawn_app(
        &db.url(),
        &[
            ("DATABASE_MAX_CONNECTIONS", "7"),
            ("DATABASE_MIN_CONNECTIONS", "0"),
        ],
    );
    assert_eq!(get(port, "/health").await.status, 200);
    let before = scrape(port).await;

    for _ in 0..7 {
        assert_eq!(get(port, "/health/live").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(port, "/health").await.status, 200);
    }
    let after = scrape(port).await;

    let live = [
        ("method", "GET"),
        ("route", "/health/live"),
        ("status_class", "2xx"),
    ];
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(moved(REQUESTS, &live), 7.0);
    assert_eq!(
        after.histogram_count(REQUEST_DURATION, &live)
            - before.histogram_count(REQUEST_DURATION, &live),
        7.0
    );
    let healthy = [("outcome", "healthy"), ("reason", "none")];
    assert_eq!(moved(HEALTH_CHECKS, &healthy), 3.0);
    // One after the other, each check needs a round trip of its own.
    assert_eq!(moved(ROUND_TRIPS, &[]), 3.0);
    // The first scrape is counted as a request too, under its route.
    assert_eq!(
        after.value(REQUESTS, &[("route", "/metrics"), ("status_class", "2xx")]),
        1.0
    );

    for (name, kind) in [
        (REQUESTS, MetricKind::Counter),
        (REQUEST_DURATION, MetricKind::Histogram),
        (HEALTH_CHECKS, MetricKind::Counter),
        (
            "counseling_health_check_duration_seconds",
            MetricKind::Histogram,
        ),
        (ROUND_TRIPS, MetricKind::Counter),
        ("db_client_connections_open", MetricKind::Gauge),
        ("db_client_connections_idle", MetricKind::Gauge),
        ("db_client_connections_used", MetricKind::Gauge),
        ("db_client_connections_max", MetricKind::Gauge),
        ("db_client_connections_min", MetricKind::Gauge),
        (
            "db_client_connection_wait_time_seconds",
            MetricKind::Histogram,
        ),
        ("db_client_connection_timeouts_total", MetricKind::Counter),
        ("db_client_operations_total", MetricKind::Counter),
        (
            "db_client_operation_duration_seconds",
            MetricKind::Histogram,
        ),
        ("counseling_build_info", MetricKind::Gauge),
    ] {
        assert_eq!(after.kind(name), Some(kind), "{name}");
    }
    // Every family says what it is.
    for name in after.names() {
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| after.kind(base) == Some(MetricKind::Histogram))
            .unwrap_or(name);
        assert!(after.help(family).is_some(), "{family} has no HELP line");
    }
    assert_eq!(after.value("db_client_connections_max", &[]), 7.0);
    assert_eq!(after.value("db_client_connections_min", &[]), 0.0);
    let open = after.value("db_client_connections_open", &[]);
    assert_eq!(
        open,
        after.value("db_client_connections_idle", &[])
            + after.value("db_client_connections_used", &[])
    );
    assert!(open >= 1.0, "the health checks opened a connection");
    assert_eq!(
        after.value(
            "counseling_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    if cfg!(target_os = "linux") {
        assert!(after.value("process_resident_memory_bytes", &[]) > 0.0);
        assert_eq!(
            after.kind("process_cpu_seconds_total"),
            Some(MetricKind::Counter)
        );
    }
}

#[tokio::test]
async fn a_404_storm_on_random_paths_adds_no_label_values() {
    let db = TestDatabase::migrated().await.unwrap();
    let port = spawn_app(&db.url(), &[]);
    assert_eq!(get(port, "/no/such/page").await.status, 404);
    // A first scrape, so that the /metrics series exist before the one compared.
    scrape(port).await;
    let before = scrape(port).await;

    let mut paths = Vec::new();
    for _ in 0..100 {
        let path = format!(
            "/{:x}/{:x}?user=\\school\\{:x}",
            fastrand::u64(..),
            fastrand::u32(..),
            fastrand::u16(..)
        );
        assert_eq!(get(port, &path).await.status, 404, "{path}");
        paths.push(path);
    }
    let after = scrape(port).await;

    let text = get(port, "/metrics").await.body;
    for path in &paths {
        let segment = path.split('/').nth(1).unwrap();
        assert!(!text.contains(segment), "{path} leaked into the metrics");
    }
    // The only change: the counters of series that already existed moved.
    assert_eq!(after.series(), before.series());
    assert_eq!(
        after.label_values(REQUESTS, "route"),
        before.label_values(REQUESTS, "route")
    );
    let unmatched = [("route", UNMATCHED_ROUTE), ("status_class", "4xx")];
    assert_eq!(
        after.value(REQUESTS, &unmatched) - before.value(REQUESTS, &unmatched),
        100.0
    );
}

#[tokio::test]
async fn a_stopped_database_counts_failed_checks_with_reason_connection_refused() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let port = spawn_app(&db.url(), &[]);
    assert_eq!(get(port, "/health").await.status, 200);
    cluster.stop().await.unwrap();
    let before = scrape(port).await;

    // The first check may still find the connection the stop cut ("connection lost"); then
    // nothing listens.
    let mut refusals = 0.0;
    for _ in 0..3 {
        let reply = get(port, "/health").await;
        assert_eq!(reply.status, 503);
        if reply.body.contains(r#""error":"connection refused""#) {
            refusals += 1.0;
        }
    }
    assert!(refusals >= 2.0, "{refusals}");
    let after = scrape(port).await;
    let refused = [("outcome", "unhealthy"), ("reason", "connection refused")];
    assert_eq!(
        after.value(HEALTH_CHECKS, &refused) - before.value(HEALTH_CHECKS, &refused),
        refusals
    );
    assert_eq!(
        after.histogram_count(
            "counseling_health_check_duration_seconds",
            &[("outcome", "unhealthy")]
        ),
        3.0
    );
}

#[tokio::test]
async fn concurrent_probes_on_a_frozen_database_share_round_trips() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let port = spawn_app(&db.url(), &[("HEALTH_TIMEOUT_MS", "500")]);
    assert_eq!(get(port, "/health").await.status, 200);
    let before = scrape(port).await;

    cluster.freeze().unwrap();
    let probes: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get(port, "/health")))
        .collect();
    for probe in probes {
        assert_eq!(probe.await.unwrap().status, 503);
    }
    let after = scrape(port).await;
    cluster.thaw().unwrap();

    let checks = after.value(HEALTH_CHECKS, &[("outcome", "unhealthy")])
        - before.value(HEALTH_CHECKS, &[("outcome", "unhealthy")]);
    let round_trips = after.value(ROUND_TRIPS, &[]) - before.value(ROUND_TRIPS, &[]);
    assert_eq!(checks, 20.0);
    assert!(
        (1.0..=3.0).contains(&round_trips),
        "{round_trips} round trips for 20 checks"
    );
}

#[tokio::test]
async fn metrics_port_serves_the_scrape_apart_from_the_api() {
    let db = TestDatabase::migrated().await.unwrap();
    let (port, metrics_port) = spawn_application(&db.url(), &[("METRICS_PORT", "0")]);
    let metrics_port = metrics_port.expect("METRICS_PORT gives /metrics a port of its own");
    assert_ne!(metrics_port, port);
    assert_eq!(get(port, "/metrics").await.status, 404);
    assert_eq!(get(port, "/health/live").await.status, 200);
    let scraped = scrape(metrics_port).await;
    assert_eq!(scraped.value(REQUESTS, &[("route", "/health/live")]), 1.0);
    // Scrapes on their own port are not API traffic; /metrics on the API port matched nothing.
    assert_eq!(scraped.value(REQUESTS, &[("route", "/metrics")]), 0.0);
}

#[tokio::test]
async fn every_response_of_both_listeners_says_nosniff_and_its_request_id() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let (port, metrics_port) = spawn_application(&db.url(), &[("METRICS_PORT", "0")]);
    let metrics_port = metrics_port.unwrap();
    let (api_with_metrics, _) = spawn_application(&db.url(), &[]);
    let mut replies = vec![
        (200, get(port, "/health").await),
        (200, get(port, "/health/live").await),
        (404, get(port, "/no/such/page").await),
        (404, get(port, "/metrics").await),
        (200, get(metrics_port, "/metrics").await),
        (404, get(metrics_port, "/health").await),
        (200, get(api_with_metrics, "/metrics").await),
    ];
    cluster.stop().await.unwrap();
    replies.push((503, get(port, "/health").await));
    for (index, (status, reply)) in replies.iter().enumerate() {
        assert_eq!(reply.status, *status, "reply {index}: {}", reply.body);
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "reply {index}"
        );
        assert!(reply.header("x-request-id").is_some(), "reply {index}");
    }
}

/// The metrics listener is stopped without a drain: a scraper that stopped reading does not
/// hold the process past the API's own drain. Drained, this stop would wait for the scraper's
/// responses to be written, until actix's shutdown timeout (30 s).
#[tokio::test]
async fn a_scraper_that_stopped_reading_does_not_hold_the_stop() {
    use tokio::io::AsyncWriteExt;

    let settings = counseling_http::Settings::from_vars([
        ("DATABASE_URL", "postgres://u@127.0.0.1:1/db"),
        ("APP_PORT", "0"),
        ("METRICS_PORT", "0"),
    ])
    .unwrap();
    let application =
        counseling_http::Application::build(&settings, tokio::runtime::Handle::current()).unwrap();
    let metrics_port = application.metrics_port().unwrap();
    let handle = application.handle();
    let running = tokio::spawn(application.run());
    // Scrapes asked for back to back, never read: their replies fill the socket's buffers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let scraper = socket
        .connect(([127, 0, 0, 1], metrics_port).into())
        .await
        .unwrap();
    let (_unread, mut asking) = scraper.into_split();
    let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5_000);
    let _asking = tokio::spawn(async move {
        let _ = asking.write_all(requests.as_bytes()).await;
        asking
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    handle.stop(true).await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(3), running).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "still writing to the scraper: {stopped:?}"
    );
}
