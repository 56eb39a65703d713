//! The pool's keeper, which opens connections in the background, says when it cannot: once per
//! change, while the connections already open still serve (a password rotated wrongly shows no
//! other sign until the last of them closes). Its own test binary: it sets the global
//! subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Captured, connect, private_database};
use counseling_config::{DatabaseUrl, Sources};
use counseling_persistence::DatabaseSettings;
use counseling_testkit::fixtures::eventually;
use sea_orm::sqlx::postgres::PgConnectOptions;
use secrecy::ExposeSecret;

const FAILING: &str = "the pool could not open a connection";
const RECOVERED: &str = "the pool opens connections again";

#[tokio::test]
async fn a_keeper_that_cannot_connect_warns_once_and_says_when_it_can_again() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (cluster, test_db, mut settings) = private_database().await;
    let service: PgConnectOptions = test_db.url().parse().unwrap();
    let (role, password) = (service.get_username().to_owned(), "n0t-the-Password-9");
    settings.pool.min_connections = 2;
    // Connections close after 1 s, so that the keeper keeps opening new ones.
    settings.pool.max_lifetime = Duration::from_secs(1);
    let database = connect(&settings);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!captured.take().contains(FAILING));

    // Rotated wrongly: the service's secret no longer matches.
    cluster.set_password(&role, password).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let failing = captured.take();
    assert_eq!(failing.matches(FAILING).count(), 1, "{failing}");
    assert!(failing.contains("WARN"), "{failing}");
    assert!(!failing.contains(password), "{failing}");

    // Mended: said once too.
    let url = DatabaseUrl::parse(&test_db.url()).unwrap();
    let original = url.password().unwrap().expose_secret().to_owned();
    cluster.set_password(&role, &original).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recovered = captured.take();
    assert_eq!(recovered.matches(RECOVERED).count(), 1, "{recovered}");
    assert!(!recovered.contains(FAILING), "{recovered}");

    // The same failure again, later: said again.
    cluster.set_password(&role, password).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = captured.take();
    assert_eq!(again.matches(FAILING).count(), 1, "{again}");

    // A caller's connect that works ends the failure too: with the pool at its minimum the
    // keeper opens nothing, and the same failure, come back later, would go unsaid.
    assert!(database.close(Duration::from_secs(3)).await);
    drop(captured.take());
    settings.pool.min_connections = 1;
    settings.pool.max_lifetime = Duration::from_secs(600);
    let database = connect(&settings);
    eventually(
        "the new pool's keeper warns",
        Duration::from_secs(5),
        async || captured.take().contains(FAILING),
    )
    .await
    .unwrap();
    cluster.set_password(&role, &original).await.unwrap();
    // At once, before the keeper's next look (every second): the caller opens the connection.
    database.server_setting("application_name").await.unwrap();
    let recovered = captured.take();
    assert_eq!(recovered.matches(RECOVERED).count(), 1, "{recovered}");

    // A password file that cannot be read fails every caller's connect: said once, not once
    // per caller (it was an ERROR line each time: one per health probe).
    assert!(database.close(Duration::from_secs(3)).await);
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, &original).unwrap();
    let without_password = test_db.url().replacen(&format!(":{original}@"), "@", 1);
    let sources = Sources::from_vars([
        ("DATABASE_URL", without_password.as_str()),
        ("DATABASE_PASSWORD_FILE", password_file.to_str().unwrap()),
    ]);
    let mut settings = DatabaseSettings::from_sources(&sources).unwrap();
    settings.pool.min_connections = 0;
    let database = connect(&settings);
    // Gone before any connect (the pool keeps none open: no keeper at a minimum of 0).
    std::fs::remove_file(&password_file).unwrap();
    drop(captured.take());
    for _caller in 0..5 {
        let refused = database.server_setting("application_name").await;
        assert!(refused.is_err());
    }
    let said = captured.take();
    assert_eq!(said.matches("DATABASE_PASSWORD_FILE").count(), 1, "{said}");
    assert!(!said.contains(&original), "{said}");
}
