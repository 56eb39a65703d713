//! `{:?}` of the kit's handles never shows a password (they hold the superuser's and the roles').
#![cfg(unix)] // the private cluster is unix-only
#![allow(clippy::unwrap_used, clippy::expect_used)]

use counseling_testkit::PgCluster;
use secrecy::ExposeSecret;

#[tokio::test]
async fn debug_of_a_cluster_and_its_databases_hides_the_password() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.empty_database().await.unwrap();
    // The superuser's, and the two roles' that the database's URLs carry.
    let role_password = |url: String| {
        let url = counseling_config::DatabaseUrl::parse(&url).unwrap();
        url.password().unwrap().expose_secret().to_owned()
    };
    let passwords = [
        cluster.password().to_owned(),
        role_password(db.url()),
        role_password(db.owner_url()),
    ];
    for password in &passwords {
        assert_eq!(password.len(), 64, "a password worth hiding");
    }
    for shown in [
        format!("{cluster:?}"),
        format!("{db:?}"),
        format!("{:?}", cluster.clone()),
    ] {
        for password in &passwords {
            assert!(!shown.contains(password.as_str()), "{shown}");
        }
        // Still useful: it says which cluster.
        assert!(shown.contains(&cluster.port().to_string()), "{shown}");
    }
}
