//! `GET /metrics` of the real `counseling-api` binary, against a private PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use counseling_e2e::{Api, free_port, get_text, wait_for_status};
use counseling_http::metrics::CONTENT_TYPE;
use counseling_testkit::fixtures::wait_until;
use counseling_testkit::{MetricKind, PgCluster, Scrape};

fn scrape(url: &str) -> Scrape {
    let (status, content_type, body) = get_text(url, Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, CONTENT_TYPE);
    Scrape::parse(&body).unwrap()
}

#[tokio::test]
async fn the_binary_reports_process_and_build_metrics_and_refused_checks() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let mut api = Api::spawn(&[("DATABASE_URL", &db.url())]);
    api.wait_listening();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));

    let scraped = scrape(&api.url("/metrics"));
    assert_eq!(
        scraped.value(
            "counseling_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    if cfg!(target_os = "linux") {
        for gauge in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert_eq!(scraped.kind(gauge), Some(MetricKind::Gauge), "{gauge}");
            assert!(scraped.value(gauge, &[]) > 0.0, "{gauge}");
        }
    }
    // The defaults: 15 connections at most, 5 kept open.
    assert_eq!(scraped.value("db_client_connections_max", &[]), 15.0);
    assert_eq!(scraped.value("db_client_connections_min", &[]), 5.0);

    cluster.stop().await.unwrap();
    wait_for_status(&api.url("/health"), 503, Duration::from_secs(5));
    // Until nothing listens any more, a check may see the cut connection first.
    let refused = [("outcome", "unhealthy"), ("reason", "connection refused")];
    let counted = wait_until("a refused check counted", Duration::from_secs(5), || {
        let _ = get_text(&api.url("/health"), Duration::from_secs(5));
        scrape(&api.url("/metrics")).value("counseling_health_checks_total", &refused) >= 1.0
    });
    counted.unwrap_or_else(|error| panic!("{error}: {}", api.output()));
}

#[tokio::test]
async fn metrics_port_and_metrics_enabled_are_read_by_the_binary() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let metrics_port = free_port();
    let metrics_port_text = metrics_port.to_string();
    let mut api = Api::spawn(&[
        ("DATABASE_URL", &db.url()),
        ("METRICS_PORT", &metrics_port_text),
    ]);
    api.wait_listening();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(5));
    // The start-up line says where /metrics is.
    let said = format!("\"metrics_port\":{metrics_port}");
    assert!(api.output().contains(&said), "{}", api.output());
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let scraped = scrape(&metrics_url);
    assert!(scraped.value("http_server_requests_total", &[("route", "/health")]) >= 1.0);
    let (status, _, _) = get_text(&api.url("/metrics"), Duration::from_secs(5)).unwrap();
    assert_eq!(status, 404);

    let mut off = Api::spawn(&[("DATABASE_URL", &db.url()), ("METRICS_ENABLED", "false")]);
    off.wait_listening();
    let (status, _, _) = get_text(&off.url("/metrics"), Duration::from_secs(5)).unwrap();
    assert_eq!(status, 404);
}
