//! libpq's host lists against real servers: two test-kit clusters stand in for two nodes. The
//! connector tries them in order and keeps the first whose session is what
//! `target_session_attrs` asks for; the pool follows the writable node.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)] // private clusters of the test's own

use std::time::{Duration, Instant};

use counseling_config::{
    ConnectError, Connector, DatabaseTarget, DatabaseUrl, SessionDefaults, TargetSessionAttrs,
};
use counseling_domain::{StoreError, Unavailability};
use counseling_persistence::{Database, DatabaseSettings};
use counseling_testkit::fixtures::eventually;
use counseling_testkit::tls::ServerTls;
use counseling_testkit::{ClusterOptions, PgCluster, TestDatabase};
use sea_orm::sqlx::{self, Connection, PgConnection};
use secrecy::ExposeSecret;

/// Two nodes whose service role has the same password (the first's), as replicas of one
/// cluster would: one URL can name both.
async fn two_nodes(options: impl Fn(&str) -> ClusterOptions) -> (PgCluster, PgCluster, String) {
    let (first, second) = tokio::join!(
        PgCluster::start_with(options("localhost")),
        PgCluster::start_with(options("127.0.0.1"))
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let url = DatabaseUrl::parse(&first.service_url("postgres")).unwrap();
    let (role, password) = (
        url.username().to_owned(),
        url.password().unwrap().expose_secret().to_owned(),
    );
    second.set_password(&role, &password).await.unwrap();
    (first, second, format!("{role}:{password}"))
}

fn plain(_: &str) -> ClusterOptions {
    ClusterOptions::default()
}

fn connector(url: &str) -> Connector {
    DatabaseTarget::from_url(DatabaseUrl::parse(url).unwrap())
        .resolve(&SessionDefaults::named("host-list-test"))
        .unwrap()
}

#[tokio::test]
async fn connect_keeps_the_first_host_whose_session_is_the_kind_asked_for() {
    let (a, b, credentials) = two_nodes(plain).await;
    let hosts = format!("127.0.0.1:{},127.0.0.1:{}", a.port(), b.port());
    let url = |attrs: &str| {
        format!("postgres://{credentials}@{hosts}/postgres?target_session_attrs={attrs}")
    };
    let reached = |attrs: &str| {
        let connector = connector(&url(attrs));
        async move {
            connector
                .connect()
                .await
                .map(|connected| connected.endpoint)
        }
    };
    assert_eq!(reached("read-write").await.unwrap(), 0);
    a.set_read_only(true).await.unwrap();
    assert_eq!(reached("read-write").await.unwrap(), 1);
    assert_eq!(reached("any").await.unwrap(), 0, "any keeps the first");
    assert_eq!(reached("read-only").await.unwrap(), 0);
    assert_eq!(reached("primary").await.unwrap(), 0, "not in recovery");
    b.set_read_only(true).await.unwrap();
    assert!(matches!(
        reached("read-write").await,
        Err(ConnectError::NoSuitableHost(TargetSessionAttrs::ReadWrite))
    ));
    assert!(matches!(
        reached("standby").await,
        Err(ConnectError::NoSuitableHost(_))
    ));
    assert_eq!(
        reached("prefer-standby").await.unwrap(),
        0,
        "no standby: any"
    );
    a.set_read_only(false).await.unwrap();
    assert_eq!(reached("read-write").await.unwrap(), 0);

    // A host that refuses comes first: the next one is tried.
    let refused = counseling_e2e_free_port();
    let url = format!(
        "postgres://{credentials}@127.0.0.1:{refused},127.0.0.1:{}/postgres",
        a.port()
    );
    assert_eq!(connector(&url).connect().await.unwrap().endpoint, 1);
    // Spread: both hosts are used when shuffled.
    let url = format!("postgres://{credentials}@{hosts}/postgres?load_balance_hosts=random");
    let shuffled = connector(&url);
    let mut seen = [false, false];
    for _ in 0..40 {
        seen[shuffled.connect().await.unwrap().endpoint] = true;
    }
    assert_eq!(seen, [true, true]);
}

/// A port nothing listens on.
fn counseling_e2e_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_host_that_never_answers_costs_connect_timeout_then_the_next_is_tried() {
    let b = PgCluster::start().await.unwrap();
    // Accepts TCP (the kernel's backlog) but never speaks: a frozen or partitioned node.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let url = DatabaseUrl::parse(&b.service_url("postgres")).unwrap();
    let credentials = format!(
        "{}:{}",
        url.username(),
        url.password().unwrap().expose_secret()
    );
    let url = format!(
        "postgres://{credentials}@127.0.0.1:{silent_port},127.0.0.1:{}/postgres?connect_timeout=2",
        b.port()
    );
    let started = Instant::now();
    let connected = tokio::time::timeout(Duration::from_secs(15), connector(&url).connect())
        .await
        .expect("connect_timeout must bound the silent host")
        .unwrap();
    assert_eq!(connected.endpoint, 1);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    drop(silent);
}

/// With `verify-full` each host's certificate must name that host: a node whose certificate
/// names another is skipped like one that refuses.
#[tokio::test]
async fn verify_full_checks_each_hosts_own_name() {
    let (a, b, credentials) = two_nodes(|name| ClusterOptions {
        tls: Some(ServerTls {
            server_names: vec![name.to_owned()],
            ..ServerTls::default()
        }),
        ..ClusterOptions::default()
    })
    .await;
    // One CA file trusting both nodes' CAs.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("cas.pem");
    let mut pem = std::fs::read_to_string(&a.tls_files().unwrap().root_cert).unwrap();
    pem.push_str(&std::fs::read_to_string(&b.tls_files().unwrap().root_cert).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    // Not group-writable whatever the umask (002 would be refused).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(&bundle, mode).unwrap();
    }
    let url = |first: &str| {
        format!(
            "postgres://{credentials}@{first}:{},127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
            a.port(),
            b.port(),
            bundle.display()
        )
    };
    // The first node's certificate names localhost only: as in libpq, a certificate that does
    // not verify ends the attempt, rather than pass the turn to the next node unseen.
    let error = connector(&url("127.0.0.1")).connect().await.unwrap_err();
    assert!(
        matches!(&error, ConnectError::Driver(sqlx::Error::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData),
        "{error:?}"
    );
    assert_eq!(
        connector(&url("localhost"))
            .connect()
            .await
            .unwrap()
            .endpoint,
        0
    );
}

/// The SQLSTATE of a connect's failure, when the server sent one.
fn sqlstate(outcome: Result<counseling_config::Connected, ConnectError>) -> Option<String> {
    match outcome {
        Err(ConnectError::Driver(error)) => Some(error.as_database_error()?.code()?.into_owned()),
        _ => None,
    }
}

/// As in libpq: a host that answers and refuses (here: no such database) ends the attempt; one
/// that cannot take connections now (57P03: shutting down) passes the turn to the next.
#[tokio::test]
async fn a_refusal_ends_the_attempt_and_cannot_connect_now_passes_the_turn() {
    let (a, b, credentials) = two_nodes(plain).await;
    let mut admin = PgConnection::connect_with(&b.admin_options())
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE only_on_the_second")
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    let url = |database: &str| {
        format!(
            "postgres://{credentials}@127.0.0.1:{},127.0.0.1:{}/{database}",
            a.port(),
            b.port()
        )
    };
    let outcome = connector(&url("only_on_the_second")).connect().await;
    assert_eq!(sqlstate(outcome).as_deref(), Some("3D000"));

    // A smart shutdown waits for this session, and meanwhile refuses new ones with 57P03.
    let mut kept = PgConnection::connect_with(&a.admin_options())
        .await
        .unwrap();
    let postmaster = a.postmaster_pid().unwrap();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &postmaster.to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let first_alone = connector(&format!(
        "postgres://{credentials}@127.0.0.1:{}/postgres",
        a.port()
    ));
    eventually(
        "the first node refusing with 57P03",
        Duration::from_secs(10),
        async || sqlstate(first_alone.connect().await).as_deref() == Some("57P03"),
    )
    .await
    .unwrap();
    assert_eq!(
        connector(&url("postgres"))
            .connect()
            .await
            .unwrap()
            .endpoint,
        1
    );
    sqlx::query("SELECT 1").execute(&mut kept).await.unwrap();
    let _ = kept.close().await;
}

#[tokio::test]
async fn the_pool_follows_the_writable_node_and_fails_at_once_when_there_is_none() {
    let (a, b, credentials) = two_nodes(plain).await;
    let url = format!(
        "postgres://{credentials}@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write&connect_timeout=2",
        a.port(),
        b.port()
    );
    let mut settings = DatabaseSettings::new(DatabaseUrl::parse(&url).unwrap());
    settings.pool.min_connections = 0;
    settings.pool.max_connections = 2;
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    let port_of = || async { database.server_setting("port").await };
    assert_eq!(port_of().await.unwrap(), a.port().to_string());

    // The first node is fenced: a check finds its pooled connection read-only (as soon as that
    // session has taken the reload) and closes it; the next call lands on the writable node.
    a.set_read_only(true).await.unwrap();
    until_read_only(&database).await;
    assert_eq!(port_of().await.unwrap(), b.port().to_string());

    // No node can write: a call fails at once, as read-only.
    b.set_read_only(true).await.unwrap();
    until_read_only(&database).await;
    let started = Instant::now();
    assert_eq!(
        port_of().await,
        Err(StoreError::Unavailable(Unavailability::ReadOnly))
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// A host list whose first host accepts TCP (the kernel's backlog) but never speaks, a frozen or
/// partitioned node, and whose second is `b`; no minimum of connections (and no traffic, as for
/// a service taken out of rotation), `connect_timeout=2`.
/// The database on `b` is migrated: a check passes only where the service could work.
async fn behind_a_silent_host(
    b: &PgCluster,
    silent: &std::net::TcpListener,
) -> (Database, TestDatabase) {
    let migrated = b.migrated_database().await.unwrap();
    let url = DatabaseUrl::parse(&migrated.url())
        .unwrap()
        .with_hosts(&[
            ("127.0.0.1", silent.local_addr().unwrap().port()),
            ("127.0.0.1", b.port()),
        ])
        .unwrap();
    let url = url.expose_secret();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}target_session_attrs=read-write&connect_timeout=2");
    let mut settings = DatabaseSettings::new(DatabaseUrl::parse(&url).unwrap());
    settings.pool.min_connections = 0;
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    (database, migrated)
}

/// A check's deadline (1 s here, the default) is shorter than the silent first host's
/// `connect_timeout` (2 s): the checkout a check starts goes on after the check gives up, so its
/// connection (to the second host) is in the pool for a later check. Cut off with each check, it
/// never got past the first host, and readiness never came back.
#[tokio::test]
async fn checks_shorter_than_a_silent_hosts_connect_timeout_still_reach_the_next_host() {
    let b = PgCluster::start().await.unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (database, _migrated) = behind_a_silent_host(&b, &silent).await;
    let check = Duration::from_secs(1);
    assert_eq!(
        database.ping(check).await,
        Err(StoreError::Unavailable(Unavailability::Timeout)),
        "the first check cannot get past the silent host in time"
    );
    eventually("a check that passes", Duration::from_secs(10), async || {
        database.ping(check).await.is_ok()
    })
    .await
    .unwrap();
}

/// The same when a check is dropped by its caller (a client gone, a caller's own timeout)
/// rather than timed out: its checkout goes on.
#[tokio::test]
async fn checks_dropped_by_their_caller_still_reach_the_next_host() {
    let b = PgCluster::start().await.unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (database, _migrated) = behind_a_silent_host(&b, &silent).await;
    let dropped_after = Duration::from_millis(500);
    eventually("a check that passes", Duration::from_secs(10), async || {
        let check = database.ping(Duration::from_secs(30));
        matches!(tokio::time::timeout(dropped_after, check).await, Ok(Ok(())))
    })
    .await
    .unwrap();
}

/// Checks that give up leave their checkout to finish, but one at a time: a storm of short
/// checks against a host that never answers keeps one connect open, not one per check (each
/// would hold a slot of the pool until the acquire timeout).
#[tokio::test]
async fn checks_that_give_up_leave_one_checkout_behind_not_one_each() {
    use std::io::Read;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgres://svc:pw@127.0.0.1:{port}/app?sslmode=disable");
    let mut settings = DatabaseSettings::new(DatabaseUrl::parse(&url).unwrap());
    settings.pool.min_connections = 0;
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    for _ in 0..10 {
        assert_eq!(
            database.ping(Duration::from_millis(200)).await,
            Err(StoreError::Unavailable(Unavailability::Timeout))
        );
    }
    // About 2 s in, within the first checkout's acquire timeout (5 s): the connections still
    // open are those whose client has not closed its end.
    silent.set_nonblocking(true).unwrap();
    let mut open = 0;
    while let Ok((mut stream, _)) = silent.accept() {
        stream.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 512];
        let closed = loop {
            match stream.read(&mut buffer) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(error) => break error.kind() != std::io::ErrorKind::WouldBlock,
            }
        };
        open += usize::from(!closed);
    }
    assert_eq!(open, 1, "connects left open by the checks");
}

/// Checks until the pool's connection reports its node read-only: a reload reaches a live
/// session when that session next waits for a command, a moment after `pg_reload_conf()`.
async fn until_read_only(database: &Database) {
    eventually(
        "a check reporting the node read-only",
        Duration::from_secs(10),
        async || {
            database.ping(Duration::from_secs(2)).await
                == Err(StoreError::Unavailable(Unavailability::ReadOnly))
        },
    )
    .await
    .unwrap();
}

/// With a real standby, `primary`, `standby` and `prefer-standby` tell the nodes apart by
/// recovery, as libpq does.
#[tokio::test]
async fn a_real_standby_is_told_apart_by_recovery() {
    let primary = PgCluster::start().await.unwrap();
    let standby = primary.start_standby().await.unwrap();
    let url = DatabaseUrl::parse(&primary.superuser_url("postgres"))
        .unwrap()
        .with_hosts(&[("127.0.0.1", primary.port()), ("127.0.0.1", standby.port())])
        .unwrap();
    let reached = |attrs: &str| {
        let url = format!("{}?target_session_attrs={attrs}", url.expose_secret());
        let connector = connector(&url);
        async move {
            connector
                .connect()
                .await
                .map(|connected| connected.endpoint)
        }
    };
    assert_eq!(reached("primary").await.unwrap(), 0);
    assert_eq!(reached("read-write").await.unwrap(), 0);
    assert_eq!(reached("standby").await.unwrap(), 1);
    assert_eq!(reached("read-only").await.unwrap(), 1);
    assert_eq!(reached("prefer-standby").await.unwrap(), 1);

    primary.stop().await.unwrap();
    standby.promote().await.unwrap();
    assert_eq!(reached("primary").await.unwrap(), 1);
    assert!(matches!(
        reached("standby").await,
        Err(ConnectError::NoSuitableHost(TargetSessionAttrs::Standby))
    ));
    assert_eq!(
        reached("prefer-standby").await.unwrap(),
        1,
        "no standby left: any"
    );
}

/// sqlx 0.9 panics on a frame shorter than its length prefix: the connector makes that a
/// protocol error, so a host that sends one is passed over like any host that fails, and the
/// caller's task lives on.
#[tokio::test]
async fn a_host_sending_a_malformed_message_fails_like_any_other_and_the_next_is_tried() {
    let fake = counseling_testkit::fixtures::malformed_postgres()
        .await
        .unwrap();
    let cluster = PgCluster::start().await.unwrap();
    let url = DatabaseUrl::parse(&cluster.service_url("postgres")).unwrap();
    let alone = url.with_hosts(&[("127.0.0.1", fake)]).unwrap();
    let alone = plaintext(alone.expose_secret());
    let error = connector(&alone).connect().await.unwrap_err();
    assert!(
        matches!(
            &error,
            ConnectError::Driver(sea_orm::sqlx::Error::Protocol(_))
        ),
        "{error:?}"
    );
    let listed = url
        .with_hosts(&[("127.0.0.1", fake), ("127.0.0.1", cluster.port())])
        .unwrap();
    let listed = plaintext(listed.expose_secret());
    let connected = connector(&listed).connect().await.unwrap();
    assert_eq!(connected.endpoint, 1);
}

/// `url` with `sslmode=disable`: the stand-in server answers no TLS request.
fn plaintext(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}sslmode=disable")
}
