//! The roles of production on every test database: the service's role may read and write rows
//! and nothing else; the owner runs migrations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use counseling_testkit::TestDatabase;
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::{Connection, PgConnection};

async fn as_role(url: &str) -> PgConnection {
    PgConnection::connect_with(&PgConnectOptions::from_str(url).unwrap())
        .await
        .unwrap()
}

fn sqlstate(error: &sea_orm::sqlx::Error) -> String {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .unwrap_or_default()
        .into_owned()
}

/// A migrated test database with the kit's two roles: on the shared server, as every test gets
/// one; on `DATABASE_URL_TEST` one role does everything, so then on a private cluster of the
/// kit's (kept alive by the first element).
async fn with_the_kits_roles() -> (Option<counseling_testkit::PgCluster>, TestDatabase) {
    if std::env::var_os("DATABASE_URL_TEST").is_none() {
        return (None, TestDatabase::migrated().await.unwrap());
    }
    let cluster = counseling_testkit::PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    (Some(cluster), db)
}

// On Windows `DATABASE_URL_TEST` is always set, and no private cluster can start there.
#[cfg_attr(
    windows,
    ignore = "needs the kit's roles: a private cluster (unix only)"
)]
#[tokio::test]
async fn the_service_role_reads_and_writes_rows_but_cannot_change_the_schema() {
    let (_cluster, db) = with_the_kits_roles().await;
    let mut service = as_role(&db.url()).await;
    let user: String = sea_orm::sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut service)
        .await
        .unwrap();
    assert_eq!(user, counseling_testkit::SERVICE_ROLE);
    let rows: i64 = sea_orm::sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut service)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    sea_orm::sqlx::query("DELETE FROM users")
        .execute(&mut service)
        .await
        .unwrap();

    for ddl in [
        "CREATE TABLE sneaky (id int)",
        "DROP TABLE users",
        "ALTER TABLE users ADD COLUMN extra int",
        "TRUNCATE users",
    ] {
        let error = sea_orm::sqlx::query(ddl)
            .execute(&mut service)
            .await
            .unwrap_err();
        // insufficient_privilege, or must_be_owner (also 42501).
        assert_eq!(sqlstate(&error), "42501", "{ddl}: {error}");
    }

    let mut owner = as_role(&db.owner_url()).await;
    sea_orm::sqlx::query("CREATE TABLE allowed (id int)")
        .execute(&mut owner)
        .await
        .unwrap();
}

/// What a local attacker would look for on a cluster the kit started: `trust` rules, a unix
/// socket, a readable directory, a powerful application role.
#[cfg(unix)]
#[tokio::test]
async fn a_private_cluster_trusts_nobody_and_opens_no_socket() {
    use std::os::unix::fs::PermissionsExt;

    let cluster = counseling_testkit::PgCluster::start().await.unwrap();
    let mut admin = PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap();
    let rules: Vec<(String, String, Vec<String>)> = sea_orm::sqlx::query_as(
        "SELECT type, auth_method, address_list FROM pg_hba_file_rules \
         CROSS JOIN LATERAL (SELECT coalesce(array_agg(a), '{}') AS address_list \
                             FROM unnest(ARRAY[address]) a WHERE a IS NOT NULL) addresses",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!rules.is_empty());
    for (kind, method, addresses) in &rules {
        assert_ne!(method, "trust", "{rules:?}");
        assert_ne!(kind, "local", "{rules:?}");
        assert_eq!(addresses, &["127.0.0.1".to_owned()], "{rules:?}");
    }
    let sockets: String = sea_orm::sqlx::query_scalar("SHOW unix_socket_directories")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(sockets, "");
    let listen: String = sea_orm::sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(listen, "127.0.0.1");
    for role in [
        counseling_testkit::OWNER_ROLE,
        counseling_testkit::SERVICE_ROLE,
    ] {
        let powers = counseling_testkit::fixtures::powers_beyond_login(&mut admin, role);
        assert_eq!(powers.await.unwrap(), Vec::<&str>::new(), "{role}");
    }

    let data_directory: String = sea_orm::sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let data = std::path::Path::new(&data_directory);
    let mode = |dir: &std::path::Path| std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data), 0o700);
    // The cluster's folder is the kit's own; as root, the postgres user may only pass through.
    let root = data.parent().unwrap();
    let is_root = nix::unistd::Uid::effective().is_root();
    assert_eq!(mode(root), if is_root { 0o710 } else { 0o700 });
    assert!(!root.join("initdb-password").exists());
}

#[cfg_attr(
    windows,
    ignore = "needs the kit's roles: a private cluster (unix only)"
)]
#[tokio::test]
async fn only_the_two_roles_may_connect_to_a_test_database() {
    // Test databases are clones of a migrated template; a clone does not copy who may connect.
    let (_cluster, db) = with_the_kits_roles().await;
    let mut owner = as_role(&db.owner_url()).await;
    let acl: Option<String> =
        sea_orm::sqlx::query_scalar("SELECT datacl::text FROM pg_database WHERE datname = $1")
            .bind(db.name())
            .fetch_one(&mut owner)
            .await
            .unwrap();
    // No ACL at all means PostgreSQL's default: PUBLIC may connect. Entries for PUBLIC start
    // with "=".
    let acl = acl.expect("an explicit ACL");
    assert!(!acl.contains("{=") && !acl.contains(",="), "{acl}");
    assert!(
        acl.contains(&format!("{}=c/", counseling_testkit::SERVICE_ROLE)),
        "{acl}"
    );
    let _ = owner.close().await;
}

/// A role that exists already with powers (here every one a role can have, and no login) keeps
/// none of them once it is provisioned as the application's owner or service: the same powers
/// as a role made afresh (and as compose's `03-roles.sql` makes them).
#[cfg(unix)]
#[tokio::test]
async fn provisioning_takes_every_power_from_a_role_that_had_some() {
    use counseling_provision::roles::{Application, execute, provision_application};
    use counseling_testkit::fixtures::powers_beyond_login;
    use secrecy::SecretString;

    let cluster = counseling_testkit::PgCluster::start().await.unwrap();
    let mut admin = PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap();
    for role in ["powerful_owner", "powerful_service"] {
        let powers = "SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS";
        execute(&mut admin, &format!("CREATE ROLE {role} {powers}"))
            .await
            .unwrap();
    }
    let password = SecretString::from("a-password-for-this-test");
    let application = Application {
        database: "powers",
        owner: ("powerful_owner", &password),
        service: ("powerful_service", &password),
        extensions: &[],
    };
    provision_application(&cluster.admin_options(), &application)
        .await
        .unwrap();
    for role in ["powerful_owner", "powerful_service"] {
        let powers = powers_beyond_login(&mut admin, role).await.unwrap();
        assert_eq!(powers, Vec::<&str>::new(), "{role}");
    }
}
