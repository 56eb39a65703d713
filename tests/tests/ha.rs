//! The service on a highly available PostgreSQL (etcd, two Patroni nodes, HAProxy), through a
//! planned switchover and an unplanned failover, under load: three `counseling-api` processes
//! probed continuously, and a writer creating users through `PgUserRepository`. Both routes to
//! the primary, one after the other on the same stack: through HAProxy's primary port, and
//! directly, both nodes as a libpq host list with `target_session_attrs=read-write` (and
//! `connect_timeout=2`, which the service requires of a host list). On each:
//! no acknowledged write lost (a write a demoted node accepted would be missing on the new
//! primary), every 503 given while no writable primary was reachable on that route, and 200
//! again within 2 s of one being reachable.
//!
//! Ignored by default (it needs Patroni, etcd and HAProxy and takes a minute or two): run it with
//! `just ha-test`, or three rounds with `just ha-bench` (`HA_RUNS=3`), which prints the figures
//! for BENCHMARKS.md.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use counseling_config::DatabaseUrl;
use counseling_domain::{
    CreateUserError, NewUser, PasswordHash, StoreError, Unavailability, UserId, UserRepository,
    Username,
};
use counseling_e2e::{Api, get_json, migrate_up, wait_for_status};
use counseling_ha::{APP_DATABASE, ETCD_NAMESPACE, ETCD_USER, HaStack, Ports, SPAN, StackOptions};
use counseling_persistence::{Database, DatabaseSettings, PgUserRepository};
use counseling_provision::server::{Listener, tcp_listeners};
use counseling_testkit::fixtures::{self, wait_until};
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::sqlx::{self, Connection};
use secrecy::{ExposeSecret, SecretString};

/// How soon after the switchover command every service must answer 200 again (measured: ~3 s).
const SWITCHOVER_HEAL_BOUND: Duration = Duration::from_secs(15);
/// How soon after the kill every service must answer 200 again (measured: ttl 10 s + ~2 s).
const FAILOVER_HEAL_BOUND: Duration = Duration::from_secs(25);
/// Pause between two writes, and between two probes of one service.
const WRITE_PACE: Duration = Duration::from_millis(10);
const PROBE_PACE: Duration = Duration::from_millis(100);
/// A 503 is truthful if no writable primary was reachable on the route within this much of it:
/// one health budget (HEALTH_TIMEOUT_MS, 1 s by default) plus the observer's pace.
const TRUTH_MARGIN: f64 = 1.2;
/// Every service answers 200 again within this long of a writable primary being reachable on
/// its route (issue 24), in seconds.
const HEALTHY_AFTER_WRITABLE: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Disruption {
    Switchover,
    Failover,
}

impl Disruption {
    fn name(self) -> &'static str {
        match self {
            Self::Switchover => "switchover",
            Self::Failover => "kill -9 failover",
        }
    }
}

/// How the services and the writer reach the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    /// HAProxy's primary port, which Patroni's REST API steers.
    Haproxy,
    /// Both nodes as a libpq host list with `target_session_attrs=read-write`, `connect_timeout=2`.
    Direct,
}

impl std::fmt::Display for Route {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Haproxy => "HAProxy",
            Self::Direct => "direct host list",
        })
    }
}

#[derive(Debug)]
struct WriteEvent {
    start: f64,
    end: f64,
    outcome: Result<(UserId, String), CreateUserError>,
}

#[derive(Debug)]
struct Probe {
    api: usize,
    start: f64,
    end: f64,
    status: Option<u16>,
    body: String,
}

/// Whether the route led to a writable primary, checked with fresh connections.
#[derive(Debug)]
struct PrimarySample {
    start: f64,
    end: f64,
    primary: bool,
}

/// Everything observed, in seconds since the test started.
#[derive(Debug, Default)]
struct Record {
    writes: Mutex<Vec<WriteEvent>>,
    probes: Mutex<Vec<Probe>>,
    primary: Mutex<Vec<PrimarySample>>,
}

#[derive(Debug)]
struct Figures {
    write_downtime: f64,
    unhealthy_window: f64,
    healthy_again_after: f64,
    /// From the first moment a writable primary was reachable again to the last service's
    /// first 200 (0 when no service turned unhealthy).
    after_writable: f64,
}

/// Stops the observers and the stack however the test ends.
struct Teardown {
    stop: Arc<AtomicBool>,
    stack: Option<HaStack>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut stack) = self.stack.take() {
            // Give the observers a moment to notice before their servers go.
            std::thread::sleep(Duration::from_millis(300));
            if std::thread::panicking() {
                stack.copy_logs(&failure_logs());
                eprintln!("the stack's logs are in {}", failure_logs().display());
            }
            if let Err(error) = stack.stop() {
                eprintln!("stopping the HA stack: {error}");
            }
        }
    }
}

#[test]
#[ignore = "needs patroni, etcd and haproxy; run with `just ha-test`"]
fn switchover_and_failover_lose_no_write_and_every_service_heals_by_itself() {
    // At least one run: 0 (or a typo read as 1) would pass without a single disruption.
    let runs: usize = std::env::var("HA_RUNS").map_or(1, |value| {
        value
            .parse()
            .ok()
            .filter(|runs| *runs >= 1)
            .unwrap_or_else(|| panic!("HA_RUNS={value:?}: a number of runs, at least 1"))
    });
    let clock = Instant::now();
    let seconds = move || clock.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut options = StackOptions::new(free_ports()).unwrap();
    options.logs_on_failure = Some(failure_logs());
    let stack = HaStack::start(&options).unwrap();
    println!("HA stack up in {:.1} s", started.elapsed().as_secs_f64());
    let stop = Arc::new(AtomicBool::new(false));
    let mut teardown = Teardown {
        stop: Arc::clone(&stop),
        stack: Some(stack),
    };
    let stack = teardown.stack.as_mut().unwrap();
    assert_everything_listens_on_loopback_only(stack);

    let url = stack.app_url().unwrap();
    // Migrations run as the owner; the service (below) as the rows-only role.
    migrate_up(
        stack.owner_url().unwrap().expose_secret(),
        url.expose_secret(),
    );

    the_services_role_has_rows_but_not_the_schema(stack);
    a_write_on_a_read_only_node_is_unavailable_and_drops_its_connection(stack);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut figures: BTreeMap<(Route, Disruption), Vec<Figures>> = BTreeMap::new();
    for route in [Route::Haproxy, Route::Direct] {
        let url = match route {
            Route::Haproxy => stack.app_url().unwrap(),
            Route::Direct => stack.app_url_direct().unwrap(),
        };
        let apis: Vec<Api> = (0..3)
            .map(|_| {
                let mut api =
                    Api::spawn(&[("DATABASE_URL", url.expose_secret()), ("RUST_LOG", "warn")]);
                api.wait_listening();
                wait_for_status(&api.url("/health"), 200, Duration::from_secs(10));
                api
            })
            .collect();

        let record = Arc::new(Record::default());
        stop.store(false, Ordering::SeqCst);
        let observers =
            start_observers(stack, route, &apis, &url, &record, &stop, &runtime, seconds);

        std::thread::sleep(Duration::from_secs(2));
        for run in 1..=runs {
            for disruption in [Disruption::Switchover, Disruption::Failover] {
                let result = disrupt_and_check(stack, route, disruption, &record, seconds);
                println!(
                    "HA figures: {route} {disruption:?} run {run}: write downtime {:.2} s, \
                     /health unhealthy for {:.2} s (longest of 3 services), all healthy {:.2} s \
                     after the {}, {:.2} s after a writable primary was reachable",
                    result.write_downtime,
                    result.unhealthy_window,
                    result.healthy_again_after,
                    disruption.name(),
                    result.after_writable,
                );
                figures.entry((route, disruption)).or_default().push(result);
            }
        }

        stop.store(true, Ordering::SeqCst);
        for observer in observers {
            observer.join().unwrap();
        }
        // Still the same three processes: they healed without a restart.
        for mut api in apis {
            assert!(api.child.try_wait().unwrap().is_none(), "{}", api.output());
        }
    }

    println!(
        "\n| route | disruption | runs | write downtime (median) | /health unhealthy (median) | \
         all healthy after (median) | 200 after a writable primary (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((route, disruption), results) in &figures {
        let median = |pick: fn(&Figures) -> f64| {
            let values: Vec<f64> = results.iter().map(pick).collect();
            fixtures::median(&values).unwrap_or(f64::NAN)
        };
        println!(
            "| {route} | {} | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
            disruption.name(),
            results.len(),
            median(|f| f.write_downtime),
            median(|f| f.unhealthy_window),
            median(|f| f.healthy_again_after),
            median(|f| f.after_writable),
        );
    }
    drop(teardown);
}

/// Nobody but the stack's own tools can steer it: an unauthenticated `PATCH /config` (here an
/// `archive_command`, code execution as the servers' user), `POST /switchover` and etcd write
/// are each refused, and change nothing; with the stack's credentials the same calls are
/// accepted. Every failure is collected, so one run shows each that is missing.
#[test]
#[ignore = "needs patroni, etcd and haproxy; run with `just ha-test`"]
fn the_stack_refuses_whoever_has_no_credentials() {
    let mut options = StackOptions::new(free_ports()).unwrap();
    options.logs_on_failure = Some(failure_logs());
    // Another user of the machine, asking etcd's client port for an account of its own from
    // before the stack starts until it is up.
    let started = Arc::new(AtomicBool::new(false));
    let intruder = {
        let (started, port) = (started.clone(), options.ports.etcd_client());
        std::thread::spawn(move || {
            let (url, body) = (
                format!("http://127.0.0.1:{port}/v3/auth/user/add"),
                r#"{"name":"intruder","password":"x"}"#,
            );
            let mut accepted = 0;
            while !started.load(Ordering::SeqCst) {
                let sent = counseling_provision::http::send(
                    "POST",
                    &url,
                    &[],
                    Some(body),
                    Duration::from_secs(1),
                );
                accepted += usize::from(sent.is_ok_and(|reply| reply.status == 200));
                std::thread::sleep(Duration::from_millis(2));
            }
            accepted
        })
    };
    let stack = HaStack::start(&options);
    started.store(true, Ordering::SeqCst);
    let teardown = Teardown {
        stop: Arc::new(AtomicBool::new(false)),
        stack: Some(stack.unwrap()),
    };
    let stack = teardown.stack.as_ref().unwrap();
    let mut failures: Vec<String> = Vec::new();
    let accepted = intruder.join().unwrap();
    if accepted > 0 {
        failures.push(format!("etcd made the intruder's account {accepted} times"));
    }
    // etcd's peers' API (raft, unauthenticated) is no TCP port: only its client port is.
    let etcd = stack
        .processes()
        .into_iter()
        .filter(|(name, _)| name == "etcd");
    let etcd_ports: Vec<u16> = etcd
        .flat_map(|(_, pid)| listeners_of(pid))
        .map(|l| l.port)
        .collect();
    if etcd_ports != [stack.ports().etcd_client()] {
        failures.push(format!(
            "etcd listens on TCP ports {etcd_ports:?}, not its client port only"
        ));
    }
    let root = stack.password("etcd-root").unwrap();
    let users = stack
        .etcdctl(&["user", "list"], Some(("root", &root)), None)
        .unwrap();
    let users = String::from_utf8_lossy(&users.stdout).into_owned();
    if users.split_whitespace().collect::<Vec<_>>() != ["patroni", "root"] {
        failures.push(format!("etcd's users are not only ours: {users:?}"));
    }
    let leader = stack.leader().unwrap();
    let (rest, other) = (stack.ports().rest(leader), HaStack::node_name(1 - leader));
    let credentials = stack.rest_api_credentials().unwrap();
    let credentials = Some((credentials.0, &credentials.1));

    let marker = "touch /tmp/counseling-ha-intruder";
    let evil = format!(r#"{{"postgresql":{{"parameters":{{"archive_command":"{marker}"}}}}}}"#);
    let patched = send("PATCH", rest, "/config", &evil, None).unwrap();
    if patched.status != 401 {
        failures.push(format!("unauthenticated PATCH /config: {}", patched.status));
    }
    let config = rest_get(rest, "/config");
    if config.contains(marker) {
        failures.push(format!("PATCH /config took effect: {config}"));
    }
    // The same call, harmless, with the stack's credentials: accepted.
    let harmless = send("PATCH", rest, "/config", r#"{"loop_wait":2}"#, credentials).unwrap();
    assert_eq!(harmless.status, 200, "{}", harmless.body);

    let switch = format!(
        r#"{{"leader":"{}","candidate":"{other}"}}"#,
        HaStack::node_name(leader)
    );
    let switched = send("POST", rest, "/switchover", &switch, None).unwrap();
    if switched.status != 401 {
        failures.push(format!(
            "unauthenticated POST /switchover: {} {}",
            switched.status, switched.body
        ));
    }

    // Patroni's own configuration key, written by someone without a user.
    let key = format!("{ETCD_NAMESPACE}counseling/config");
    let written = stack
        .etcdctl(&["put", &key, r#"{"ttl":1}"#], None, None)
        .unwrap();
    if written.status.success() {
        failures.push("an unauthenticated etcd write was accepted".into());
    }
    let peeked = stack.etcdctl(&["get", &key], None, None).unwrap();
    if peeked.status.success() {
        failures.push("an unauthenticated etcd read was accepted".into());
    }
    // Patroni's etcd user may write its own keys only.
    let patroni = stack.password("etcd-patroni").unwrap();
    let outside = stack
        .etcdctl(
            &["put", "/elsewhere", "x"],
            Some((ETCD_USER, &patroni)),
            None,
        )
        .unwrap();
    if outside.status.success() {
        failures.push("Patroni's etcd user wrote outside its namespace".into());
    }
    let read = stack
        .etcdctl(
            &["get", &key, "--print-value-only"],
            Some(("root", &root)),
            None,
        )
        .unwrap();
    let value = String::from_utf8_lossy(&read.stdout).into_owned();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    if value.contains(r#""ttl":1}"#) {
        failures.push(format!(
            "the unauthenticated etcd write took effect: {value}"
        ));
    }

    // Secrets: one 0600 file each, in a 0700 folder.
    use std::os::unix::fs::PermissionsExt;
    let secrets = stack.dir().join("secrets");
    let mode = |path: &std::path::Path| {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&secrets), 0o700);
    for file in std::fs::read_dir(&secrets).unwrap().flatten() {
        assert_eq!(mode(&file.path()), 0o600, "{}", file.path().display());
    }

    // The refused switchover did not happen behind the 401 either.
    std::thread::sleep(Duration::from_secs(3));
    if stack.leader() != Some(leader) {
        failures.push("the leader changed after an unauthenticated switchover".into());
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Our own tool passes the credentials: patronictl switches over through the REST API.
    stack.switchover().unwrap();
    wait_until("the switchover", Duration::from_secs(30), || {
        stack.leader() == Some(1 - leader)
    })
    .unwrap();
    drop(teardown);
}

/// A program of someone else's takes etcd's client port while etcd is being set up on its
/// private socket, and answers `/health` as etcd would: the stack does not take it for etcd,
/// so no Patroni (which would send it its etcd password) is started.
#[test]
#[ignore = "needs patroni, etcd and haproxy; run with `just ha-test`"]
fn a_program_holding_etcds_port_is_not_taken_for_etcd() {
    // The squatter is this process: another user than the servers' only when we are root.
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (a squatter of another user than the servers')");
        return;
    }
    let mut options = StackOptions::new(free_ports()).unwrap();
    let logs = tempfile::tempdir().unwrap();
    options.logs_on_failure = Some(logs.path().to_owned());
    let squatter = std::net::TcpListener::bind(("127.0.0.1", options.ports.etcd_client())).unwrap();
    squatter.set_nonblocking(true).unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let answering = {
        let started = started.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            while !started.load(Ordering::SeqCst) {
                let Ok((mut client, _)) = squatter.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let _ = client.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = client.read(&mut [0; 4096]);
                let body = r#"{"health":"true"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(reply.as_bytes());
            }
        })
    };
    let stack = HaStack::start(&options);
    started.store(true, Ordering::SeqCst);
    answering.join().unwrap();
    let error = stack.map(drop).unwrap_err().to_string();
    assert!(error.contains("etcd exited"), "{error}");
    let started: Vec<String> = std::fs::read_dir(logs.path())
        .unwrap()
        .flatten()
        .map(|log| log.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(started, ["etcd.log"], "{error}");
}

/// A stack's ports, every one free now: a base picked at random among 20000-31999, below
/// Linux's ephemeral range (32768-60999), where a client's source port could take one.
fn free_ports() -> Ports {
    for _ in 0..50 {
        let mut bytes = [0u8; 2];
        getrandom::fill(&mut bytes).unwrap();
        let ports = Ports::new(20_000 + u16::from_le_bytes(bytes) % 12_000).unwrap();
        let free = |port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if ports.all().into_iter().all(free) {
            return ports;
        }
    }
    panic!("no range of {} free ports found on 127.0.0.1", SPAN + 1);
}

/// `method http://127.0.0.1:{port}{path}` with a JSON `body`, as `credentials` (user, password;
/// basic authentication) or as no one, within 10 s: what changes state on a Patroni REST API
/// (`PATCH /config`, `POST /switchover`). Every status is an answer; an error only when nothing
/// answered.
fn send(
    method: &str,
    port: u16,
    path: &str,
    body: &str,
    credentials: Option<(&str, &SecretString)>,
) -> counseling_provision::Result<counseling_provision::http::Reply> {
    use base64::Engine;
    let url = format!("http://127.0.0.1:{port}{path}");
    let authorization = credentials.map(|(user, password)| {
        let pair = format!("{user}:{}", password.expose_secret());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    });
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(
        authorization
            .as_deref()
            .map(|value| ("authorization", value)),
    );
    counseling_provision::http::send(method, &url, &headers, Some(body), Duration::from_secs(10))
}

/// The body of `GET http://127.0.0.1:{port}{path}` (empty if nothing answered).
fn rest_get(port: u16, path: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    counseling_provision::http::get(&url, &[], Duration::from_secs(5))
        .map(|reply| reply.body)
        .unwrap_or_default()
}

/// Least privilege on the stack too: the service's role reads and writes rows of the migrated
/// table, and can neither create nor drop a table.
fn the_services_role_has_rows_but_not_the_schema(stack: &HaStack) {
    let url = stack.app_url().unwrap();
    let options = url.connect_options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection = PgConnection::connect_with(&options).await.unwrap();
        let rows = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(&mut connection)
            .await;
        assert!(rows.is_ok(), "{rows:?}");
        for ddl in ["CREATE TABLE intruder (id int)", "DROP TABLE users"] {
            let refused = sqlx::query(ddl).execute(&mut connection).await.unwrap_err();
            let code = refused
                .as_database_error()
                .and_then(|error| error.code().map(|code| code.into_owned()));
            // 42501 insufficient_privilege
            assert_eq!(code.as_deref(), Some("42501"), "{ddl}: {refused}");
        }
        let _ = connection.close().await;
    });
}

/// What the service sees when HAProxy still leads to a node that was demoted: the write fails
/// as `Unavailable(ReadOnly)` (SQLSTATE 25006), and the connection is closed rather than handed
/// to the next caller. Through HAProxy's replica port, every write meets a read-only node.
fn a_write_on_a_read_only_node_is_unavailable_and_drops_its_connection(stack: &HaStack) {
    let mut settings = DatabaseSettings::new(stack.app_url_on(stack.ports().replica()).unwrap());
    // No idle connections kept by the pool: an open connection afterwards is one given back.
    settings.pool.min_connections = 0;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // A synchronous commit waits for the standby's flush, not its replay: wait until the
    // replica has the table the migration created.
    let options = stack
        .superuser_options(stack.ports().replica(), APP_DATABASE)
        .unwrap();
    wait_until("the replica has the table", Duration::from_secs(10), || {
        runtime.block_on(async {
            let Ok(mut connection) = PgConnection::connect_with(&options).await else {
                return false;
            };
            let replayed = sqlx::query_scalar::<_, bool>("SELECT to_regclass('users') IS NOT NULL")
                .fetch_one(&mut connection)
                .await
                .unwrap_or(false);
            let _ = connection.close().await;
            replayed
        })
    })
    .unwrap();
    let database = Database::connect_lazy(&settings, runtime.handle().clone()).unwrap();
    let users = PgUserRepository::new(database.clone());
    let hash = PasswordHash::hash(&SecretString::from("ha-test-password")).unwrap();
    for attempt in 0..3 {
        let outcome = runtime.block_on(users.create(NewUser {
            username: Username::parse(format!("\\ha\\readonly{attempt}")).unwrap(),
            password_hash: hash.clone(),
        }));
        assert_eq!(
            outcome.unwrap_err(),
            CreateUserError::Store(StoreError::Unavailable(Unavailability::ReadOnly))
        );
        assert_eq!(
            database.status().open,
            0,
            "the connection that met a read-only node went back to the pool"
        );
    }
}

/// The writer, the three services' probes and the primary observer, until `stop`.
#[allow(clippy::too_many_arguments)]
fn start_observers(
    stack: &HaStack,
    route: Route,
    apis: &[Api],
    url: &DatabaseUrl,
    record: &Arc<Record>,
    stop: &Arc<AtomicBool>,
    runtime: &tokio::runtime::Runtime,
    seconds: impl Fn() -> f64 + Copy + Send + 'static,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();

    let mut settings = DatabaseSettings::new(url.clone());
    settings.application_name = "ha-writer".into();
    let database = Database::connect_lazy(&settings, runtime.handle().clone()).unwrap();
    let users = PgUserRepository::new(database);
    let hash = PasswordHash::hash(&SecretString::from("ha-test-password")).unwrap();
    let (writer_record, writer_stop) = (Arc::clone(record), Arc::clone(stop));
    // One route's users are still there when the next route's writer starts.
    let prefix = match route {
        Route::Haproxy => "proxied",
        Route::Direct => "direct",
    };
    let handle = runtime.handle().clone();
    threads.push(std::thread::spawn(move || {
        let mut sequence = 0u64;
        while !writer_stop.load(Ordering::SeqCst) {
            sequence += 1;
            let username = format!("\\ha\\{prefix}{sequence}");
            let new_user = NewUser {
                username: Username::parse(username.clone()).unwrap(),
                password_hash: hash.clone(),
            };
            let start = seconds();
            let outcome = handle.block_on(users.create(new_user));
            let end = seconds();
            writer_record
                .writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(WriteEvent {
                    start,
                    end,
                    outcome: outcome.map(|user| (user.id, username)),
                });
            std::thread::sleep(WRITE_PACE);
        }
    }));

    for (index, api) in apis.iter().enumerate() {
        let health = api.url("/health");
        let (probe_record, probe_stop) = (Arc::clone(record), Arc::clone(stop));
        threads.push(std::thread::spawn(move || {
            while !probe_stop.load(Ordering::SeqCst) {
                let start = seconds();
                let answer = get_json(&health, Duration::from_secs(5));
                let end = seconds();
                let (status, body) = match answer {
                    Ok((status, body)) => (Some(status), body.to_string()),
                    Err(error) => (None, error),
                };
                probe_record
                    .probes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Probe {
                        api: index,
                        start,
                        end,
                        status,
                        body,
                    });
                std::thread::sleep(PROBE_PACE);
            }
        }));
    }

    // Where the route leads: HAProxy's primary port, or each node (a host list keeps the first
    // writable one).
    let ports: Vec<u16> = match route {
        Route::Haproxy => vec![stack.ports().primary()],
        Route::Direct => (0..2).map(|index| stack.ports().postgres(index)).collect(),
    };
    let options: Vec<_> = ports
        .into_iter()
        .map(|port| stack.superuser_options(port, APP_DATABASE).unwrap())
        .collect();
    let (primary_record, primary_stop) = (Arc::clone(record), Arc::clone(stop));
    let handle = runtime.handle().clone();
    threads.push(std::thread::spawn(move || {
        while !primary_stop.load(Ordering::SeqCst) {
            let start = seconds();
            let checks = options.iter().cloned().map(|options| async move {
                let check = async {
                    let mut connection = PgConnection::connect_with(&options).await.ok()?;
                    let writable = sqlx::query_scalar::<_, bool>(
                        "SELECT NOT pg_is_in_recovery() \
                         AND current_setting('transaction_read_only') = 'off'",
                    )
                    .fetch_one(&mut connection)
                    .await
                    .ok();
                    let _ = connection.close().await;
                    writable
                };
                tokio::time::timeout(Duration::from_secs(1), check)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(false)
            });
            let checks: Vec<_> = checks.map(|check| handle.spawn(check)).collect();
            let primary = handle.block_on(async {
                let mut any = false;
                for check in checks {
                    any |= check.await.unwrap_or(false);
                }
                any
            });
            let end = seconds();
            primary_record
                .primary
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(PrimarySample {
                    start,
                    end,
                    primary,
                });
            std::thread::sleep(PROBE_PACE);
        }
    }));
    threads
}

/// Runs one disruption and checks everything the service promises about it.
fn disrupt_and_check(
    stack: &mut HaStack,
    route: Route,
    disruption: Disruption,
    record: &Record,
    seconds: impl Fn() -> f64,
) -> Figures {
    // synchronous_mode promotes only the synchronous standby: start from a whole cluster.
    stack.wait_until_healthy(Duration::from_secs(60)).unwrap();
    let old_leader = stack.leader().unwrap();
    let new_leader = (old_leader + 1) % 2;
    let disrupted_at = seconds();
    match disruption {
        Disruption::Switchover => stack.switchover().unwrap(),
        Disruption::Failover => stack.kill_node(old_leader).unwrap(),
    }
    wait_until("a new leader", Duration::from_secs(60), || {
        stack.leader() == Some(new_leader)
    })
    .unwrap();
    if disruption == Disruption::Failover {
        // What a supervisor (systemd) does: start the crashed node again; it must rejoin.
        stack.start_node(old_leader).unwrap();
    }
    stack.wait_until_healthy(Duration::from_secs(60)).unwrap();
    let members = stack.members().unwrap();
    let old = members
        .iter()
        .find(|member| member.name == HaStack::node_name(old_leader))
        .unwrap();
    assert!(old.is_sync_standby(), "{members:?}");
    assert_eq!(
        stack.haproxy_primary_targets(),
        vec![new_leader],
        "HAProxy's primary port must lead to the new leader only"
    );
    // Every service answers 200 again, then a steady stretch to see that it stays so.
    let healed_at = wait_all_healthy(record, disrupted_at, &seconds);
    std::thread::sleep(Duration::from_secs(2));
    let until = seconds();

    let figures = check_window(record, route, disruption, disrupted_at, healed_at, until);
    check_nothing_lost(stack, new_leader, record);
    if disruption == Disruption::Failover {
        let log = std::fs::read_to_string(stack.patroni_log(old_leader)).unwrap_or_default();
        println!(
            "old leader {} rejoined as synchronous standby{}",
            HaStack::node_name(old_leader),
            if log.contains("running pg_rewind from") {
                " after pg_rewind"
            } else {
                " (no rewind was needed)"
            }
        );
    }
    figures
}

/// Waits until each service's latest answer, started after `since`, is 200; returns when.
fn wait_all_healthy(record: &Record, since: f64, seconds: &impl Fn() -> f64) -> f64 {
    let all_healthy = || {
        let probes = record.probes.lock().unwrap_or_else(PoisonError::into_inner);
        let latest = |api| {
            probes
                .iter()
                .rev()
                .find(|p| p.api == api && p.start > since)
        };
        (0..3).all(|api| latest(api).is_some_and(|p| p.status == Some(200)))
    };
    wait_until("all services healthy", Duration::from_secs(60), all_healthy).unwrap();
    seconds()
}

/// Figures and promises of one disruption, over what was recorded from `from` to `until`.
fn check_window(
    record: &Record,
    route: Route,
    disruption: Disruption,
    from: f64,
    healed_at: f64,
    until: f64,
) -> Figures {
    let writes = record.writes.lock().unwrap_or_else(PoisonError::into_inner);
    let window: Vec<&WriteEvent> = writes
        .iter()
        .filter(|write| write.start >= from - 1.0 && write.end <= until)
        .collect();

    // A write fails as `Unavailable` (a demoted or read-only node is reported as such) or, in
    // flight when its connection broke, as `OutcomeUnknown` (it may be stored; its name is never
    // written again); nothing else (no duplicate, no unexpected error) happens.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for write in &window {
        match &write.outcome {
            Ok(_) => {}
            Err(CreateUserError::Store(StoreError::Unavailable(why))) => {
                *reasons.entry(why.to_string()).or_default() += 1;
            }
            Err(CreateUserError::Store(StoreError::OutcomeUnknown)) => {
                *reasons.entry("unconfirmed".to_owned()).or_default() += 1;
            }
            Err(other) => panic!("{route} {disruption:?}: a write failed with {other:?}"),
        }
    }
    println!("{route} {disruption:?}: failed writes by reason: {reasons:?}");

    // Writes resumed: the last ones of the window were acknowledged.
    let tail: Vec<&&WriteEvent> = window.iter().rev().take(20).collect();
    assert!(
        tail.len() == 20 && tail.iter().all(|write| write.outcome.is_ok()),
        "{route} {disruption:?}: writes did not resume on the new primary"
    );
    // Write downtime: the longest stretch between two acknowledged writes.
    let acknowledged: Vec<f64> = window
        .iter()
        .filter(|write| write.outcome.is_ok())
        .map(|write| write.end)
        .collect();
    let write_downtime = acknowledged
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .fold(0.0, f64::max);

    let probes = record.probes.lock().unwrap_or_else(PoisonError::into_inner);
    let primary = record
        .primary
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // When a writable primary was reachable again for good: the end of the first writable
    // sample after the last one that found none.
    let samples: Vec<&PrimarySample> = primary
        .iter()
        .filter(|sample| sample.start >= from && sample.end <= until)
        .collect();
    let last_unwritable = samples.iter().rposition(|sample| !sample.primary);
    let writable_at = samples
        .iter()
        .skip(last_unwritable.map_or(0, |index| index + 1))
        .find(|sample| sample.primary)
        .map_or(from, |sample| sample.end);
    let mut unhealthy_window: f64 = 0.0;
    let mut healthy_again_at = from;
    for api in 0..3 {
        let answers: Vec<&Probe> = probes
            .iter()
            .filter(|probe| probe.api == api && probe.start >= from - 1.0 && probe.end <= until)
            .collect();
        let unhealthy: Vec<&&Probe> = answers
            .iter()
            .filter(|probe| probe.status != Some(200))
            .collect();
        for probe in &unhealthy {
            // Answered, and with a 503 that says why.
            assert_eq!(probe.status, Some(503), "{route} {disruption:?}: {probe:?}");
            assert!(probe.body.contains("\"unhealthy\""), "{probe:?}");
            // Truthful: no writable primary was reachable on the route around that time.
            let no_primary_nearby = primary.iter().any(|sample| {
                !sample.primary
                    && sample.end >= probe.start - TRUTH_MARGIN
                    && sample.start <= probe.end + TRUTH_MARGIN
            });
            assert!(
                no_primary_nearby,
                "{route} {disruption:?}: service {api} answered 503 at {:.2}-{:.2} s while a primary was \
                 reachable on the route: {}",
                probe.start, probe.end, probe.body
            );
        }
        if let (Some(first), Some(last)) = (unhealthy.first(), unhealthy.last()) {
            let recovered = answers
                .iter()
                .find(|probe| probe.start > last.start && probe.status == Some(200))
                .map(|probe| probe.end)
                .unwrap_or(until);
            unhealthy_window = unhealthy_window.max(recovered - first.start);
            healthy_again_at = healthy_again_at.max(recovered);
            // 200 again soon after a writable primary is there to be found: within the bound,
            // plus one probe's pace (the first probe after it may start that much later).
            let late = recovered - writable_at;
            assert!(
                late <= HEALTHY_AFTER_WRITABLE + PROBE_PACE.as_secs_f64(),
                "{route} {disruption:?}: service {api} answered 200 again {late:.2} s after a \
                 writable primary was reachable (at {writable_at:.2} s; bound \
                 {HEALTHY_AFTER_WRITABLE} s)"
            );
            // Healthy again, and stayed so through the steady stretch.
            assert!(
                last.start < healed_at,
                "{route} {disruption:?}: service {api} turned unhealthy again after recovering"
            );
        }
    }
    let healthy_again_after = healthy_again_at - from;
    let bound = match disruption {
        Disruption::Switchover => SWITCHOVER_HEAL_BOUND,
        Disruption::Failover => FAILOVER_HEAL_BOUND,
    };
    assert!(
        healthy_again_after <= bound.as_secs_f64(),
        "{route} {disruption:?}: the services took {healthy_again_after:.1} s to turn healthy (bound \
         {bound:?})"
    );
    let after_writable = if healthy_again_at > from {
        (healthy_again_at - writable_at).max(0.0)
    } else {
        0.0
    };
    Figures {
        write_downtime,
        unhealthy_window,
        healthy_again_after,
        after_writable,
    }
}

/// Every acknowledged user is on the new primary, and no username is there twice.
fn check_nothing_lost(stack: &HaStack, leader: usize, record: &Record) {
    // Writes go on meanwhile: check those acknowledged before the primary is read.
    let acknowledged: Vec<(UserId, String)> = record
        .writes
        .lock()
        .unwrap()
        .iter()
        .filter_map(|write| write.outcome.clone().ok())
        .collect();
    let options = stack
        .superuser_options(stack.ports().postgres(leader), APP_DATABASE)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stored, duplicates) = runtime.block_on(async {
        let mut connection = PgConnection::connect_with(&options).await.unwrap();
        // What pg_rewind needs to rejoin a diverged old primary.
        for setting in ["data_checksums", "wal_log_hints"] {
            let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                .fetch_one(&mut connection)
                .await
                .unwrap();
            assert_eq!(value, "on", "{setting}");
        }
        let stored: Vec<String> = sqlx::query_scalar("SELECT id::text FROM users")
            .fetch_all(&mut connection)
            .await
            .unwrap();
        let duplicates: i64 =
            sqlx::query_scalar("SELECT count(*) - count(DISTINCT lower(username)) FROM users")
                .fetch_one(&mut connection)
                .await
                .unwrap();
        (stored.into_iter().collect::<HashSet<String>>(), duplicates)
    });
    assert_eq!(duplicates, 0);
    let mut usernames = HashSet::new();
    for (id, username) in &acknowledged {
        assert!(usernames.insert(username), "{username} acknowledged twice");
        assert!(
            stored.contains(&id.to_string()),
            "acknowledged user {username} ({id}) is missing on the new primary"
        );
    }
    assert!(
        acknowledged.len() > 100,
        "only {} writes acknowledged",
        acknowledged.len()
    );
    println!(
        "{} acknowledged writes, all on the new primary {}",
        acknowledged.len(),
        HaStack::node_name(leader)
    );
}

/// Where the stack's logs go when the test fails (its directory is deleted on stop).
fn failure_logs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ha-test-logs")
}

/// Every listening TCP socket of the stack's processes is bound to 127.0.0.1.
fn assert_everything_listens_on_loopback_only(stack: &HaStack) {
    let processes = stack.processes().into_iter();
    let listening: Vec<Listener> = processes.flat_map(|(_, pid)| listeners_of(pid)).collect();
    for listener in &listening {
        assert_eq!(
            listener.address.to_string(),
            "127.0.0.1",
            "a stack process listens on {listener:?}"
        );
    }
    // etcd 1 (its peers' API is a unix socket), Patroni 2, PostgreSQL 2, HAProxy 3.
    assert!(listening.len() >= 8, "found only {listening:?}");
}

/// The listening sockets that process `pid` holds (Linux; empty elsewhere, or for a process
/// that is gone or not ours to inspect).
fn listeners_of(pid: u32) -> Vec<Listener> {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            target.parse().ok()
        })
        .collect();
    let listeners = tcp_listeners().unwrap_or_default().into_iter();
    listeners
        .filter(|listener| inodes.contains(&listener.inode))
        .collect()
}
