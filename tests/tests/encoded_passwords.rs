//! Passwords of every reserved URL character (`@ : / ? # %` and a space), percent-encoded in the
//! URLs as the README says: the roles get the decoded passwords, and the migration CLI and the
//! service decode them the same way. Unix only: it makes roles on a private cluster.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use counseling_e2e::{Api, migrate_up, wait_for_status};
use counseling_provision::password::generate_password;
use counseling_provision::roles::{Application, provision_application};
use counseling_provision::url::local_url;
use counseling_testkit::PgCluster;
use secrecy::{ExposeSecret, SecretString};

#[tokio::test]
async fn the_migrations_and_the_service_decode_reserved_characters_alike() {
    let cluster = PgCluster::start().await.unwrap();
    let reserved = |role: &str| {
        let fresh = generate_password().unwrap();
        SecretString::from(format!("@:/?#% {role}{}", fresh.expose_secret()))
    };
    let (owner, service) = (reserved("o"), reserved("s"));
    let application = Application {
        database: "encoded",
        owner: ("encoded_owner", &owner),
        service: ("encoded_service", &service),
        extensions: &[],
    };
    provision_application(&cluster.admin_options(), &application)
        .await
        .unwrap();
    let url = |(role, password)| local_url(cluster.port(), role, Some(password), "encoded", &[]);
    let (owner_url, service_url) = (
        url(application.owner).unwrap(),
        url(application.service).unwrap(),
    );
    assert!(owner_url.expose_secret().contains("%40%3A%2F%3F%23%25%20o"));

    migrate_up(owner_url.expose_secret(), service_url.expose_secret());

    let mut api = Api::spawn(&[("DATABASE_URL", service_url.expose_secret())]);
    api.wait_listening();
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(10));
    // Neither as the role has it nor as the URL carries it (percent-encoded): the random part
    // is the same in both.
    let output = api.output();
    let random = &service.expose_secret()["@:/?#% s".len()..];
    assert_eq!(random.len(), 64);
    assert!(!output.contains(random), "{output}");
}
