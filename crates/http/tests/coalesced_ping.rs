//! Probe coalescing: concurrent health checks share database round trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use counseling_domain::{StoreError, Unavailability};
use counseling_http::coalesced_ping::CoalescedPing;
use counseling_persistence::Database;
use counseling_testkit::fixtures::eventually;
use counseling_testkit::{PgCluster, Scrape, TestDatabase};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::runtime::Handle;

/// The test kit's pool (at most five connections, none kept open), its I/O on the test's
/// runtime.
fn connect(test_db: &TestDatabase) -> Database {
    Database::connect_lazy(&test_db.pool_settings().unwrap(), Handle::current()).unwrap()
}

#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn coalesced_checks_keep_one_round_trip_in_flight_and_answer_within_the_timeout() {
    let cluster = PgCluster::start().await.unwrap();
    let test_db = cluster.migrated_database().await.unwrap();
    let database = connect(&test_db);
    let timeout = Duration::from_millis(500);
    let recorder = PrometheusBuilder::new().build_recorder();
    let checks = metrics::with_local_recorder(&recorder, || {
        CoalescedPing::new(database.clone(), Handle::current(), timeout)
    });
    let round_trips = || {
        let scrape = Scrape::parse(&recorder.handle().render()).unwrap();
        scrape.value("counseling_health_check_round_trips_total", &[])
    };

    // Healthy: a crowd of concurrent checks all succeed with one check in flight at a time, on
    // one connection: each round's connection is back in the pool, as it is, before the next
    // round asks for one. (A pool that checks returned connections in the background, as sqlx's
    // does, opens a second one here. Unshared, 200 checks would take all five.)
    let crowd: Vec<_> = (0..200)
        .map(|_| {
            let checks = checks.clone();
            tokio::spawn(async move { checks.check().await })
        })
        .collect();
    for check in crowd {
        check.await.unwrap().unwrap();
    }
    assert_eq!(database.status().open, 1, "{:?}", database.status());
    let healthy_round_trips = round_trips();
    assert!(
        (1.0..=10.0).contains(&healthy_round_trips),
        "{healthy_round_trips} round trips for 200 checks"
    );

    // Frozen: callers arriving at any moment get their answer within about one timeout, and
    // share rounds (a caller that arrives during a round that fails takes its failure, and the
    // round it asked for runs after): arrivals over 0.7 s with 0.5 s rounds make three.
    cluster.freeze().unwrap();
    let storm: Vec<_> = (0..20)
        .map(|i| {
            let checks = checks.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(37 * i)).await;
                let started = Instant::now();
                let outcome = checks.check().await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    for caller in storm {
        let (outcome, took) = caller.await.unwrap();
        assert!(
            matches!(
                outcome,
                Err(StoreError::Unavailable(Unavailability::Timeout))
            ),
            "{outcome:?}"
        );
        assert!(
            took < timeout + Duration::from_millis(400),
            "answer took {took:?}"
        );
    }
    let frozen_round_trips = round_trips() - healthy_round_trips;
    assert!(
        (1.0..=4.0).contains(&frozen_round_trips),
        "{frozen_round_trips} round trips for 20 checks"
    );
    cluster.thaw().unwrap();

    let recovered = async || checks.check().await.is_ok();
    eventually("recovery after thaw", Duration::from_secs(5), recovered)
        .await
        .unwrap();
}
