//! `find_by_username` at scale, run by `just bench` against a private PostgreSQL:
//! bulk-loads BENCH_USERS users (default 1,000,000), shows the query plan, then times
//! BENCH_LOOKUPS (default 10,000) random case-insensitive lookups through the repository, one at
//! a time, then as many as 15 concurrent tasks manage in BENCH_SECONDS (default 10), on the
//! pool's runtime and then from another runtime. BENCH_PHASE=load runs only the first part,
//! BENCH_PHASE=lookups only the second (`just bench` runs it in rounds next to pgbench with the
//! same query and 15 clients). Prints Markdown for BENCHMARKS.md; writes the two concurrent
//! rates to BENCH_RATE_FILE when set. Exit code 2 without BENCH_DATABASE_URL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: any failure should abort it

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use counseling_domain::{UserRepository, Username};
use counseling_persistence::{Database, DatabaseSettings, PgUserRepository};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use counseling_testkit::fixtures::BCRYPT_HASH as HASH;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(url) = std::env::var("BENCH_DATABASE_URL") else {
        eprintln!("find_by_username: set BENCH_DATABASE_URL (just bench does)");
        return ExitCode::from(2);
    };
    let users = env_number("BENCH_USERS", 1_000_000);
    let lookups = env_number("BENCH_LOOKUPS", 10_000) as usize;

    let mut settings = DatabaseSettings::new(counseling_config::DatabaseUrl::parse(&url).unwrap());
    settings.pool.statement_timeout = Duration::from_secs(600);
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    let repository = PgUserRepository::new(database.clone());
    // `just bench` runs the load (with the sequential timings and the plan) once, then the
    // concurrent lookups in rounds next to pgbench; unset, both run.
    let phase = std::env::var("BENCH_PHASE").unwrap_or_default();
    let mut healthy = true;
    if phase != "lookups" {
        healthy = load_and_time(&url, &repository, users, lookups).await;
    }
    if phase != "load" {
        // Throughput: 15 tasks (the pool's size) looking up random users for a fixed time. Names
        // parsed beforehand (as pgbench makes its names on the server: what is timed is the
        // repository, not the parsing of input), a random sample of up to 200,000 of them.
        let seconds = env_number("BENCH_SECONDS", 10);
        let names: Arc<Vec<Username>> = {
            let mut rng = fastrand::Rng::with_seed(42);
            Arc::new(
                (0..users.min(200_000))
                    .map(|_| name(rng.u64(1..=users)))
                    .collect(),
            )
        };
        // The tasks on the runtime that owns the pool: calls run there directly.
        let rate = lookups_per_second(&repository, &names, seconds).await;
        // The tasks on another runtime, as the service's HTTP handlers (on actix's runtimes) call:
        // each call hops to the pool's runtime and back.
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hopping =
            PgUserRepository::new(Database::connect_lazy(&settings, io.handle().clone()).unwrap());
        let hop_rate = lookups_per_second(&hopping, &names, seconds).await;
        drop(hopping);
        io.shutdown_background();
        if let Ok(path) = std::env::var("BENCH_RATE_FILE") {
            std::fs::write(path, format!("{rate:.0} {hop_rate:.0}\n")).unwrap();
        }
        println!(
            "| lookups, {TASKS} concurrent tasks on the pool's runtime, {seconds} s | {rate:.0} per second |"
        );
        println!(
            "| lookups, {TASKS} concurrent tasks on another runtime (the service's path), {seconds} s | {hop_rate:.0} per second |"
        );
    }
    database.close(Duration::from_secs(5)).await;
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Mixed case, so the lookup really depends on the database's identity rule.
fn name(i: u64) -> Username {
    let text = format!(r"\DOM{}\User{}", i % 100, i);
    Username::parse(text).unwrap()
}

/// Loads `users` users, shows the plan, times `lookups` sequential lookups and prints the table;
/// whether the plan uses the index.
async fn load_and_time(
    url: &str,
    repository: &PgUserRepository,
    users: u64,
    lookups: usize,
) -> bool {
    // Loading and EXPLAIN go around the repository, on a connection of their own.
    let db = sea_orm::Database::connect(url).await.unwrap();

    // Bulk load on the server: one INSERT ... SELECT over generate_series.
    let started = Instant::now();
    db.execute_unprepared("TRUNCATE users").await.unwrap();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        // A plain INSERT, as any client writes (the database fills in what the previous
        // release's key column needs).
        r"INSERT INTO users (username, password_hash)
          SELECT format('\dom%s\user%s', i % 100, i), $1 FROM generate_series(1, $2::bigint) AS i",
        [HASH.into(), (users as i64).into()],
    ))
    .await
    .unwrap();
    db.execute_unprepared("VACUUM ANALYZE users").await.unwrap();
    let load_time = started.elapsed();

    // The plan of the repository's statement, with the probe's values in place of $1 and $2.
    let probe = Username::parse(r"\DOM42\USER4242").unwrap();
    let sql = PgUserRepository::find_by_username_sql()
        .replace("$1", &format!("'{}'", probe.as_str().replace('\'', "''")))
        .replace("$2", "1");
    let plan: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}"),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect();
    let uses_index = plan
        .iter()
        .any(|line| line.contains("Index Scan using idx_users_username_identity"));

    for i in 1..=200 {
        repository
            .find_by_username(&name(i))
            .await
            .unwrap()
            .unwrap();
    }
    let mut rng = fastrand::Rng::with_seed(20251220);
    let mut timings = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let username = name(rng.u64(1..=users));
        let started = Instant::now();
        let found = repository.find_by_username(&username).await.unwrap();
        timings.push(started.elapsed());
        assert!(found.is_some(), "{username} must exist");
    }
    timings.sort();

    let p50 = percentile(&timings, 0.50);
    let p99 = percentile(&timings, 0.99);
    let target = Duration::from_micros(300);

    println!("| users loaded | {users} |");
    println!(
        "| load time (INSERT ... SELECT generate_series, then VACUUM ANALYZE) | {:.1} s |",
        load_time.as_secs_f64()
    );
    println!(
        "| lookups (sequential, one connection at a time, random names, mixed case) | {lookups} |"
    );
    println!(
        "| p50 | {} (target ≤ 0.300 ms: {}) |",
        ms(p50),
        if p50 <= target { "met" } else { "missed" }
    );
    println!("| p99 | {} |", ms(p99));
    println!("| max | {} |", ms(*timings.last().unwrap()));
    println!(
        "| plan uses `idx_users_username_identity` | {} |",
        if uses_index { "yes" } else { "NO" }
    );
    println!();
    println!("```");
    println!("{sql}");
    for line in &plan {
        println!("{line}");
    }
    println!("```");
    uses_index
}

const TASKS: u64 = 15;

/// Lookups per second of [`TASKS`] tasks, each looking up random names of `names` for `seconds`.
async fn lookups_per_second(
    repository: &PgUserRepository,
    names: &Arc<Vec<Username>>,
    seconds: u64,
) -> f64 {
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..TASKS)
        .map(|task| {
            let (repository, names) = (repository.clone(), names.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(task);
                let mut done = 0u64;
                while Instant::now() < until {
                    let username = &names[rng.usize(..names.len())];
                    assert!(
                        repository
                            .find_by_username(username)
                            .await
                            .unwrap()
                            .is_some()
                    );
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut lookups = 0;
    for worker in workers {
        lookups += worker.await.unwrap();
    }
    lookups as f64 / seconds as f64
}
