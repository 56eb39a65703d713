//! `{:?}` of the kit's handles never shows a password (they hold the superuser's).
#![cfg(unix)] // the private cluster is unix-only
#![allow(clippy::unwrap_used, clippy::expect_used)]

use counseling_testkit::PgCluster;

#[tokio::test]
async fn debug_of_a_cluster_and_its_databases_hides_the_password() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.empty_database().await.unwrap();
    let password = cluster.password();
    assert!(password.len() >= 8, "a password worth hiding");
    for shown in [
        format!("{cluster:?}"),
        format!("{db:?}"),
        format!("{:?}", cluster.clone()),
    ] {
        assert!(!shown.contains(password), "{shown}");
        // Still useful: it says which cluster.
        assert!(shown.contains(&cluster.port().to_string()), "{shown}");
    }
}
