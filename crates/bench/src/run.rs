//! One `just bench` run: what runs, in which order, with which settings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use counseling_config::DatabaseUrl;
use counseling_testkit::tls::ServerTls;
use counseling_testkit::{ClusterOptions, PgCluster};
use sea_orm::sqlx::{Connection, PgConnection};

use crate::report::{Figures, merge};
use crate::stats::{Pairs, percentile};
use crate::tools::{PgbenchRun, WrkRun};

const POOL: u32 = 15;
const METRICS_ROUNDS: usize = 5;
const TLS_ROUNDS: usize = 3;
const LOOKUP_ROUNDS: usize = 5;
/// Durability as PostgreSQL ships it, not the kit's test settings; room for the load.
const SERVER_SETTINGS: [(&str, &str); 5] = [
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("max_connections", "200"),
    ("shared_buffers", "256MB"),
];

fn say(what: &str) {
    eprintln!("bench: {what}");
}

pub fn run() -> Result<()> {
    ensure_wrk()?;
    let work = tempfile::tempdir().context("creating a scratch folder")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let settings = SERVER_SETTINGS.map(|(name, value)| (name.to_owned(), value.to_owned()));
    let options = ClusterOptions {
        tls: Some(ServerTls::default()),
        server_settings: settings.into(),
    };
    let cluster = runtime.block_on(PgCluster::start_with(options))?;
    let pgbench = cluster.bin_dir().join("pgbench");
    if !pgbench.is_file() {
        bail!(
            "pgbench is not in {} (apt-get install postgresql)",
            cluster.bin_dir().display()
        );
    }
    // The service's role, as deployed: it may read and write rows, nothing more. The load phase
    // of the lookups (TRUNCATE, VACUUM) runs as the schema's owner.
    let database = runtime.block_on(cluster.migrated_database())?;
    // Plaintext explicitly (pgbench too): the server offers TLS, and `prefer` would take it.
    let plaintext = [("sslmode", "disable")];
    let url = DatabaseUrl::parse(&database.url_with(&plaintext))?;
    let owner_url = DatabaseUrl::parse(&database.owner_url_with(&plaintext))?;
    let ca = cluster
        .tls_files()
        .context("the cluster serves TLS")?
        .parameters("verify-full");
    let tls_url = DatabaseUrl::parse(&database.url_with(&ca))?;
    let mut libpq = database.libpq_environment()?;
    libpq.push(("PGSSLMODE", "disable".to_owned()));
    let bench = Bench {
        work: work.path().to_owned(),
        pgbench,
        libpq,
    };

    let mut figures = Figures {
        pool: POOL,
        ..Figures::default()
    };
    figures.date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    figures.machine = machine();
    figures.postgres_version = postgres_version(cluster.bin_dir());

    // Cold start, then the database's own ceiling and /health next to it.
    let started = Instant::now();
    let mut api = bench.api(&url, &[], "api")?;
    api.wait_answering("/health", Duration::from_millis(1))?;
    figures.cold_start_ms = started.elapsed().as_millis();
    std::thread::sleep(Duration::from_secs(1));
    figures.idle_kb = (api.rss_kb("VmRSS")?, api.rss_kb("VmHWM")?);
    say(&format!("pgbench: SELECT 1, {POOL} clients, 10 s"));
    std::fs::write(bench.work.join("select1.sql"), "SELECT 1;\n")?;
    figures.select1 = bench.pgbench(&["-c", "15", "-j", "2", "-T", "10", "-f"], "select1.sql")?;
    say("wrk: GET /health, 32 connections, 10 s");
    figures.health = wrk(&["-t2", "-c32", "-d10s", "--latency"], &api.url("/health"))?;
    say("wrk: GET /health, 1 connection, 5 s (the cost of one uncontended probe)");
    figures.single = wrk(&["-t1", "-c1", "-d5s", "--latency"], &api.url("/health"))?;
    figures.load_kb = (api.rss_kb("VmRSS")?, api.rss_kb("VmHWM")?);

    // The cost of metrics: the same service with METRICS_ENABLED=false, in paired rounds.
    let mut off = bench.api(&url, &[("METRICS_ENABLED", "false")], "api-off")?;
    off.wait_answering("/health", Duration::from_millis(10))?;
    say(&format!(
        "wrk: GET /health, metrics off and on, {METRICS_ROUNDS} paired rounds of 5 s"
    ));
    figures.metrics = Pairs::run(METRICS_ROUNDS, || rate(&off), || rate(&api));
    off.stop();
    say("GET /metrics, 1000 sequential scrapes");
    figures.scrape = scrapes(&api.url("/metrics"))?;

    say("wrk: GET /health, 500 connections, 5 s");
    let overload = ["-t2", "-c500", "-d5s", "--timeout", "10s", "--latency"];
    figures.overload = wrk(&overload, &api.url("/health"))?;
    figures.final_peak_kb = api.rss_kb("VmHWM")?;
    api.stop();

    // verify-full TLS, alone on the server first, so that pg_stat_ssl counts only its
    // connections; then next to a plaintext instance in paired rounds.
    let mut tls = bench.api(&tls_url, &[], "api-tls")?;
    tls.wait_answering("/health", Duration::from_millis(10))?;
    figures.tls_connections = runtime.block_on(encrypted_connections(&cluster))?;
    say("wrk: GET /health over verify-full TLS, 32 connections, 10 s");
    figures.tls = wrk(&["-t2", "-c32", "-d10s", "--latency"], &tls.url("/health"))?;
    let mut plain = bench.api(&url, &[], "api-plain")?;
    plain.wait_answering("/health", Duration::from_millis(10))?;
    say(&format!(
        "wrk: GET /health, plaintext and TLS, {TLS_ROUNDS} paired rounds of 5 s"
    ));
    figures.tls_pairs = Pairs::run(TLS_ROUNDS, || rate(&plain), || rate(&tls));
    plain.stop();
    tls.stop();

    say("find_by_username: loading users and timing lookups");
    figures.lookup_table = bench.lookups(&owner_url, &[("BENCH_PHASE", "load")])?;
    std::fs::write(bench.work.join("lookup.sql"), LOOKUP_SQL)?;
    let mut hops = Vec::new();
    let mut repository = || -> f64 {
        let rate_file = bench.work.join("rate");
        let rate_path = rate_file.display().to_string();
        let phase = [
            ("BENCH_PHASE", "lookups"),
            ("BENCH_SECONDS", "5"),
            ("BENCH_RATE_FILE", &rate_path),
        ];
        let rates = bench
            .lookups(&url, &phase)
            .and_then(|_| Ok(std::fs::read_to_string(&rate_file)?));
        let rates: Vec<f64> = rates
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|r| r.parse().ok())
            .collect();
        hops.push(rates.get(1).copied().unwrap_or(f64::NAN));
        rates.first().copied().unwrap_or(f64::NAN)
    };
    let lookup = ["-M", "prepared", "-c", "15", "-j", "2", "-T", "5", "-f"];
    let mut pgbench = || {
        bench
            .pgbench(&lookup, "lookup.sql")
            .map_or(f64::NAN, |run| run.tps)
    };
    say(&format!(
        "find_by_username: repository and pgbench, {LOOKUP_ROUNDS} paired rounds"
    ));
    figures.lookups = Pairs::run(LOOKUP_ROUNDS, &mut pgbench, &mut repository);
    figures.lookups_hop = hops;

    say("GET /health with PostgreSQL stopped, 100 sequential probes");
    drop(database);
    runtime.block_on(cluster.stop())?;
    let mut stopped = bench.api(&url, &[("RUST_LOG", "error")], "api-stopped")?;
    stopped.wait_answering("/health/live", Duration::from_millis(10))?;
    figures.refused = refused_probes(&stopped.url("/health"))?;
    stopped.stop();

    let old = std::fs::read_to_string("BENCHMARKS.md").unwrap_or_default();
    let report = merge(&figures.markdown()?, &old);
    std::fs::write("BENCHMARKS.md", &report).context("writing BENCHMARKS.md")?;
    say("wrote BENCHMARKS.md");
    print!("{report}");
    Ok(())
}

/// The repository's SELECT, with the name built on the server from a random number, as a
/// prepared statement: the same SQL shape, plan and result rows the repository gets.
const LOOKUP_SQL: &str = r#"\set i random(1, 1000000)
SELECT "users"."id", "users"."username", "users"."password_hash", "users"."is_blocked", "users"."created_at", "users"."updated_at" FROM "users" WHERE username_identity("users"."username") COLLATE "C" = username_identity(format('\DOM%s\User%s', :i::int % 100, :i::int)) LIMIT 1;
"#;

/// What every step shares: a scratch folder, pgbench and libpq's variables for the database.
struct Bench {
    work: PathBuf,
    pgbench: PathBuf,
    libpq: Vec<(&'static str, String)>,
}

impl Bench {
    /// The release build of counseling-api on a free port, its output to `<log>.log`.
    fn api(&self, url: &DatabaseUrl, extra: &[(&str, &str)], log: &str) -> Result<Api> {
        let port = counseling_provision::server::free_port()?;
        let output = std::fs::File::create(self.work.join(format!("{log}.log")))?;
        let binary = std::env::current_exe()?.with_file_name("counseling-api");
        let child = Command::new(&binary)
            .env("DATABASE_URL", url.expose_secret())
            .env("APP_PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {} (just bench builds it)", binary.display()))?;
        Ok(Api { child, port })
    }

    /// `pgbench -n ARGS WORK/SCRIPT` on the bench database.
    fn pgbench(&self, args: &[&str], script: &str) -> Result<PgbenchRun> {
        let output = Command::new(&self.pgbench)
            .arg("-n")
            .args(args)
            .arg(self.work.join(script))
            .envs(
                self.libpq
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            )
            .output()?;
        let run = PgbenchRun::parse(&String::from_utf8_lossy(&output.stdout));
        if !output.status.success() || run.tps == 0.0 {
            bail!(
                "pgbench failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(run)
    }

    /// The repository's benchmark (`find_by_username`) on `url`; what it printed.
    fn lookups(&self, url: &DatabaseUrl, phase: &[(&str, &str)]) -> Result<String> {
        let output = Command::new("cargo")
            .args(["bench", "--locked", "-q", "-p", "counseling-persistence"])
            .args(["--bench", "find_by_username"])
            .env("BENCH_DATABASE_URL", url.expose_secret())
            .envs(phase.iter().copied())
            .stderr(Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!("the find_by_username benchmark failed");
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A running counseling-api, stopped (SIGTERM) when dropped.
struct Api {
    child: Child,
    port: u16,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Polls `path` every `every` until it answers 200 (a fine poll: the cold start is timed
    /// by it), failing at once if the service exits.
    fn wait_answering(&mut self, path: &str, every: Duration) -> Result<()> {
        let (url, agent) = (self.url(path), agent());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent
            .get(&url)
            .call()
            .is_ok_and(|reply| reply.status() == 200)
        {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("counseling-api exited ({status}) before answering");
            }
            if Instant::now() > deadline {
                bail!("counseling-api did not answer {path} within 30 s");
            }
            std::thread::sleep(every);
        }
        Ok(())
    }

    /// A field of /proc/<pid>/status in kB (`VmRSS`, `VmHWM`). An error, never 0 (which would
    /// meet the memory target), when the service is gone.
    fn rss_kb(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the service's memory: did it exit?")?;
        status_kb(&status, field)
            .with_context(|| format!("the service has no {field}: did it exit?"))
    }

    fn stop(&mut self) {
        let _ = counseling_provision::process::signal(
            self.child.id(),
            counseling_provision::process::Signal::Terminate,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that keeps its connection alive between requests and takes any status.
fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder().http_status_as_error(false);
    config
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn wrk(args: &[&str], url: &str) -> Result<WrkRun> {
    let output = Command::new("wrk")
        .args(args)
        .arg(url)
        .output()
        .context("running wrk")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(WrkRun::parse(&String::from_utf8_lossy(&output.stdout)))
}

/// `field`'s kB in the text of a /proc/<pid>/status (a zombie's has no `Vm` lines).
fn status_kb(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|line| {
        line.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Requests per second of 5 s of `wrk` with 32 connections on the service's /health.
fn rate(api: &Api) -> f64 {
    wrk(&["-t2", "-c32", "-d5s"], &api.url("/health"))
        .map_or(f64::NAN, |run| run.requests_per_second)
}

/// `n` sequential GETs of `url` on one keep-alive connection: their times, sorted, and the
/// last reply's status and body.
fn sequential(url: &str, n: usize) -> Result<(Vec<Duration>, u16, String)> {
    let agent = agent();
    let (mut timings, mut last) = (Vec::with_capacity(n), (0, String::new()));
    for _ in 0..n {
        let started = Instant::now();
        let mut reply = agent.get(url).call()?;
        let body = reply.body_mut().read_to_string()?;
        timings.push(started.elapsed());
        last = (reply.status().as_u16(), body);
    }
    timings.sort();
    Ok((timings, last.0, last.1))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// 1000 scrapes of /metrics: p50, p99, slowest (ms) and the size of the last.
fn scrapes(url: &str) -> Result<(f64, f64, f64, usize)> {
    let (timings, _, body) = sequential(url, 1000)?;
    let slowest = timings.last().copied().unwrap_or_default();
    Ok((
        ms(percentile(&timings, 0.5)),
        ms(percentile(&timings, 0.99)),
        ms(slowest),
        body.len(),
    ))
}

/// 100 probes of /health while nothing listens: p50, p99, slowest (ms), and every distinct
/// answer as `status:reason`.
fn refused_probes(url: &str) -> Result<(f64, f64, f64, String)> {
    let agent = agent();
    let (mut timings, mut answers) = (Vec::new(), BTreeSet::new());
    for _ in 0..100 {
        let started = Instant::now();
        let mut reply = agent.get(url).call()?;
        let body: serde_json::Value = serde_json::from_str(&reply.body_mut().read_to_string()?)?;
        timings.push(started.elapsed());
        let reason = body["error"].as_str().unwrap_or("none").replace(' ', "_");
        answers.insert(format!("{}:{reason}", reply.status().as_u16()));
    }
    timings.sort();
    let slowest = timings.last().copied().unwrap_or_default();
    let answers = answers.into_iter().collect::<Vec<_>>().join(",");
    Ok((
        ms(percentile(&timings, 0.5)),
        ms(percentile(&timings, 0.99)),
        ms(slowest),
        answers,
    ))
}

/// `encrypted/all` client connections of counseling-api, as `pg_stat_ssl` sees them.
async fn encrypted_connections(cluster: &PgCluster) -> Result<String> {
    let mut admin = PgConnection::connect_with(&cluster.admin_options()).await?;
    let (encrypted, all): (i64, i64) = sea_orm::sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'counseling-api' AND a.backend_type = 'client backend'",
    )
    .fetch_one(&mut admin)
    .await?;
    admin.close().await?;
    Ok(format!("{encrypted}/{all}"))
}

/// wrk, installed with apt when run as root and missing.
fn ensure_wrk() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join("wrk").is_file()) {
        return Ok(());
    }
    if !is_root() {
        bail!("wrk is needed: sudo apt-get install wrk");
    }
    say("installing wrk");
    let install = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .stdout(Stdio::null())
            .status()
    };
    let installed = install(&["install", "-y", "-q", "wrk"]).is_ok_and(|status| status.success())
        || (install(&["update", "-q"]).is_ok()
            && install(&["install", "-y", "-q", "wrk"]).is_ok_and(|s| s.success()));
    if !installed {
        bail!("installing wrk with apt-get failed");
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// `2 cores (AMD EPYC), 24 GiB RAM, Linux 6.1.0`.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .unwrap_or_default();
    let model = model.trim_start_matches([' ', '\t', ':']);
    let meminfo = read("/proc/meminfo");
    let kb: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let kernel = format!(
        "{} {}",
        read("/proc/sys/kernel/ostype").trim(),
        read("/proc/sys/kernel/osrelease").trim()
    );
    format!(
        "{cores} cores ({model}), {:.0} GiB RAM, {kernel}",
        kb / 1_048_576.0
    )
}

fn postgres_version(bin_dir: &Path) -> String {
    let output = Command::new(bin_dir.join("postgres"))
        .arg("--version")
        .output();
    let text = output
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    text.split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_the_status_or_not_at_all() {
        let status = "Name:\tcounseling-api\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(10240));
        assert_eq!(status_kb(status, "VmHWM"), Some(20480));
        // A zombie's status: no figure, never 0.
        assert_eq!(
            status_kb("Name:\tcounseling-api\nState:\tZ (zombie)\n", "VmRSS"),
            None
        );
    }
}
