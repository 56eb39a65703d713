//! Metrics switched off record nothing, even where a recorder is installed process-wide (by a
//! library, or by a test harness). A file of its own: the global recorder is per process, and
//! the tests of `metrics.rs` share theirs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::spawn_app;
use counseling_testkit::PgCluster;
use counseling_testkit::fixtures::get_local;
use metrics_exporter_prometheus::PrometheusBuilder;

#[cfg_attr(windows, ignore = "stops a private cluster (unix only)")]
#[tokio::test]
async fn metrics_switched_off_record_nothing_and_have_no_endpoint() {
    // Installed before the app is built, so that anything it registers or records outside a
    // recorder of its own lands here.
    let global = PrometheusBuilder::new().install_recorder().unwrap();
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let port = spawn_app(&db.url(), &[("METRICS_ENABLED", "false")]);

    // Everything the service counts when metrics are on: requests of each kind, health checks
    // and their round trips, pool use, a failed check.
    for (path, status) in [
        ("/health", 200),
        ("/health/live", 200),
        ("/no/such/page", 404),
        ("/metrics", 404),
    ] {
        assert_eq!(
            get_local(port, path).await.unwrap().status,
            status,
            "{path}"
        );
    }
    cluster.stop().await.unwrap();
    assert_eq!(get_local(port, "/health").await.unwrap().status, 503);

    let recorded = global.render();
    assert!(
        recorded.trim().is_empty(),
        "metrics switched off recorded:\n{recorded}"
    );
}
