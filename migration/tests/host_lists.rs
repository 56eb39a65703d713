//! The migration CLI connects as the service does: given two nodes and
//! `target_session_attrs=read-write`, it migrates the one that takes writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)] // private clusters of the test's own

use std::process::Command;

use counseling_testkit::PgCluster;
use migration::sea_orm::sqlx::{self, Connection, Executor, PgConnection};

async fn admin(cluster: &PgCluster) -> PgConnection {
    PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap()
}

async fn has_users_table(connection: &mut PgConnection) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass('public.users') IS NOT NULL")
        .fetch_one(connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn up_migrates_the_writable_node_of_a_host_list() {
    let (a, b) = tokio::join!(PgCluster::start(), PgCluster::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    // The superuser, with one password on both nodes (the test kit's own hex password); these
    // two sessions stay open for the checks.
    let (mut first, mut second) = (admin(&a).await, admin(&b).await);
    b.set_password("postgres", a.password()).await.unwrap();
    a.set_read_only(true).await.unwrap();

    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        a.password(),
        a.port(),
        b.port()
    );
    // The migration CLI on the host list, with nothing else of the environment, in a folder of
    // its own (no `.env` anyone else could have put there).
    let workdir = tempfile::tempdir().unwrap();
    let migration = |command: &str| {
        let mut migration = Command::new(env!("CARGO_BIN_EXE_migration"));
        migration.arg(command).env_clear().env("DATABASE_URL", &url);
        // Without HOME, libpq's files would be looked for in the user's real home.
        migration.env("HOME", workdir.path());
        let output = migration.current_dir(workdir.path()).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = migration("up");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!has_users_table(&mut first).await);
    assert!(has_users_table(&mut second).await);

    // With no writable node, it says so and changes nothing.
    // b's handle still holds b's old password: switch it through the session opened before.
    second
        .execute("ALTER SYSTEM SET default_transaction_read_only = on")
        .await
        .unwrap();
    second.execute("SELECT pg_reload_conf()").await.unwrap();
    let (code, stderr) = migration("down");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no server of the list has a read-write session"),
        "{stderr}"
    );
    assert!(!stderr.contains(a.password()), "{stderr}");
    assert!(has_users_table(&mut second).await);
}
