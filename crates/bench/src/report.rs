//! BENCHMARKS.md: the figures of one run as Markdown, each next to the reference measured in the
//! same run, merged with what other tools wrote into the file.

use std::fmt::Write;

use crate::stats::{Pairs, list, mean};
use crate::tools::{PgbenchRun, WrkRun};

/// Blocks written by another tool, kept exactly as they are: the migrations' benchmark
/// (`just migrate-bench`).
pub const KEPT_BLOCKS: [(&str, &str); 1] =
    [("<!-- migrations:begin -->", "<!-- migrations:end -->")];
/// Sections written by `just ha-bench`, from this heading to the end: kept as they are.
const HA_SECTIONS: &str = "## High availability";

/// Everything one `just bench` run measured.
#[derive(Debug, Default)]
pub struct Figures {
    pub date: String,
    pub machine: String,
    pub postgres_version: String,
    pub pool: u32,
    pub select1: PgbenchRun,
    pub health: WrkRun,
    pub single: WrkRun,
    /// Paired rounds: metrics off (first), on (second).
    pub metrics: Pairs,
    /// `/metrics` scrapes: p50, p99, slowest (ms) and size (bytes).
    pub scrape: (f64, f64, f64, usize),
    pub overload: WrkRun,
    /// RSS and peak RSS in kB: idle, after the 32-connection load, peak after the overload.
    pub idle_kb: (u64, u64),
    pub load_kb: (u64, u64),
    pub final_peak_kb: u64,
    pub cold_start_ms: u128,
    /// The load phase's table rows, as `find_by_username` prints them.
    pub lookup_table: String,
    /// Paired rounds: pgbench's tps (first), the repository's lookups per second (second).
    pub lookups: Pairs,
    /// The repository's lookups per second from another runtime, one per round.
    pub lookups_hop: Vec<f64>,
    pub tls: WrkRun,
    /// Paired rounds: plaintext (first), verify-full TLS (second).
    pub tls_pairs: Pairs,
    /// The service's connections `pg_stat_ssl` shows encrypted, as `encrypted/all`.
    pub tls_connections: String,
    /// Probes of a stopped database: p50, p99, slowest (ms), and the answers (`status:reason`).
    pub refused: (f64, f64, f64, String),
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

impl Figures {
    /// The report, from its title to the last section this run measures.
    pub fn markdown(&self) -> Result<String, std::fmt::Error> {
        let f = self;
        let mut out = String::new();
        let health_ratio = f.health.requests_per_second / f.select1.tps;
        let (off, on) = (mean(&f.metrics.firsts), mean(&f.metrics.seconds));
        let metrics_ratio = f.metrics.median_ratio();
        let (scrape_p50, scrape_p99, scrape_max, scrape_bytes) = f.scrape;
        let lookup_ratio = f.lookups.median_ratio();
        let hop = Pairs {
            firsts: f.lookups.firsts.clone(),
            seconds: f.lookups_hop.clone(),
        };
        let tls_ratio = f.tls_pairs.median_ratio();
        let (refused_p50, refused_p99, refused_max, reasons) = &f.refused;
        let pool = f.pool;
        writeln!(
            out,
            "# Benchmarks

Written by `just bench` on {}. Everything ran on one machine at
once (load generator, service and PostgreSQL share the cores), so each figure stands next to a
reference measured in the same run.

- Machine: {}
- PostgreSQL: {}, the test kit's private cluster on tmpfs, default durability settings
- Service: `counseling-api` release build, pool of {pool} connections, `RUST_LOG=warn`, JSON logs,
  as the service's role (rows only; `pgbench` too), as deployed
- Command: `just bench` (crates/bench)

## GET /health against the database's ceiling

| measure | value | target |
|---|---|---|
| `pgbench` SELECT 1, {pool} clients, 10 s | {:.0} tps (latency avg {}) | reference |
| `wrk` GET /health, 32 connections, 10 s | {:.2} req/s | |
| ratio health / pgbench | **{health_ratio:.2}×** | ≥ 0.5×: {} |
| p50 latency | {:.3} ms | |
| p99 latency | {:.3} ms | ≤ 5 ms: {} |
| non-2xx responses | {} | 0 |
| socket errors | {} | none |
| `wrk` GET /health, 1 connection, 5 s | {:.2} req/s, p50 {:.3} ms, p99 {:.3} ms | |

Every healthy answer comes from a database round trip that started after the request arrived,
but concurrent probes share those round trips (`CoalescedPing`: one check in flight at a time,
each answering every request that arrived before it started). That is why 32 connections can
approach pgbench's rate while using one pooled connection, and why a probe storm cannot exhaust
the pool. A single probe costs one round trip, the role check (`pg_is_in_recovery()` and
`transaction_read_only` in one statement): its connection goes back to the pool as it is (see
docs/store.md, \"One round trip per call\"), and a read-only node is 503.",
            f.date,
            f.machine,
            f.postgres_version,
            f.select1.tps,
            f.select1.latency,
            f.health.requests_per_second,
            verdict(health_ratio >= 0.5),
            f.health.p50_ms,
            f.health.p99_ms,
            verdict(f.health.p99_ms <= 5.0),
            f.health.non_2xx,
            f.health.socket_errors,
            f.single.requests_per_second,
            f.single.p50_ms,
            f.single.p99_ms,
        )?;
        writeln!(
            out,
            "
## The cost of metrics

Two instances of the service against the same database, one with `METRICS_ENABLED=false`;
`wrk` GET /health with 32 connections for 5 s on each, {} rounds, each round's
pair in alternating order. Throughput here drifts by 10-20 % between runs, more than the cost
measured, so the figure is the median of the rounds' on/off ratios.

| measure | value | target |
|---|---|---|
| metrics off (mean of rounds) | {off:.0} req/s | reference |
| metrics on (mean of rounds) | {on:.0} req/s | |
| on / off ratio of each round | {} | |
| ratio on / off (median of rounds) | **{metrics_ratio:.3}×** | ≥ 0.95×: {} |
| `GET /metrics` p50, 1000 sequential scrapes after the load | {scrape_p50:.3} ms | |
| `GET /metrics` p99 | {scrape_p99:.3} ms | ≤ 5 ms: {} |
| `GET /metrics` slowest | {scrape_max:.3} ms | |
| scrape size | {scrape_bytes} bytes | |

## Overload: 500 concurrent connections, pool of {pool}

| measure | value |
|---|---|
| requests answered in 5 s | {} |
| non-2xx responses | {} |
| socket errors | {} |
| p99 latency | {:.3} ms |
| slowest request | {:.3} ms |

## Memory (peak RSS of counseling-api)

| when | RSS | peak RSS (VmHWM) | target |
|---|---|---|---|
| idle, after the first /health | {} | {} | idle ≤ 20 MB: {} |
| after the 32-connection load | {} | {} | |
| after the 500-connection load | | {} | |

## Cold start

| measure | value |
|---|---|
| process start to the first 200 on /health | {} ms |",
            f.metrics.firsts.len(),
            list(&f.metrics.ratios()),
            verdict(metrics_ratio >= 0.95),
            verdict(scrape_p99 <= 5.0),
            f.overload.requests,
            f.overload.non_2xx,
            f.overload.socket_errors,
            f.overload.p99_ms,
            f.overload.max_ms,
            mb(f.idle_kb.0),
            mb(f.idle_kb.1),
            verdict(f.idle_kb.0 <= 20 * 1024),
            mb(f.load_kb.0),
            mb(f.load_kb.1),
            mb(f.final_peak_kb),
            f.cold_start_ms,
        )?;
        writeln!(
            out,
            "
## find_by_username (case-insensitive, through PgUserRepository)

| measure | value |
|---|---|
{}

### Concurrent lookups against pgbench (same run, same database, same query)

{} paired rounds in alternating order (5 s each side); rates are means of the rounds,
ratios the median of the rounds' ratios.

| measure | value | target |
|---|---|---|
| `pgbench -M prepared`, the repository's SELECT, {pool} clients | {:.0} tps | reference |
| `find_by_username` through `PgUserRepository`, 15 tasks on the pool's runtime | {:.0} per second | |
| ratio of each round | {} | |
| ratio repository / pgbench (median) | **{lookup_ratio:.3}×** | ≥ 0.8×: {} |
| the same, 15 tasks on another runtime (each call hops to the pool's runtime, as from an HTTP handler) | {:.0} per second | |
| ratio with the hop, each round | {} | |
| ratio with the hop / pgbench (median) | {:.3}× | |",
            f.lookup_table.trim_end(),
            f.lookups.firsts.len(),
            mean(&f.lookups.firsts),
            mean(&f.lookups.seconds),
            list(&f.lookups.ratios()),
            verdict(lookup_ratio >= 0.8),
            mean(&f.lookups_hop),
            list(&hop.ratios()),
            hop.median_ratio(),
        )?;
        writeln!(
            out,
            "
## GET /health over verify-full TLS next to plaintext

The same service and server; the pool's connections use `sslmode=verify-full` with a CA made
in this run (rustls on ring). TLS costs the handshake when a connection opens, not the steady
state.

| measured | plaintext | verify-full TLS | target |
|---|---|---|---|
| `wrk` GET /health, 32 connections, 10 s | {:.2} req/s | {:.2} req/s | |
| TLS / plaintext ratio of each paired round (5 s each, alternating order) | | {} | |
| ratio TLS / plaintext (median of rounds) | | **{tls_ratio:.3}×** | ≥ 0.9×: {} |
| p50 / p99 latency | {:.3} / {:.3} ms | {:.3} / {:.3} ms | |
| non-2xx responses | {} | {} | 0 |
| service connections encrypted (`pg_stat_ssl`, encrypted/all) | | {} | all |

## GET /health with PostgreSQL stopped (connection refused)

100 sequential probes on one keep-alive connection, timed by the client.

| measure | value | target |
|---|---|---|
| p50 | {refused_p50:.2} ms | |
| p99 | {refused_p99:.2} ms | ≤ 50 ms: {} |
| slowest | {refused_max:.2} ms | |
| answers (status:reason) | {reasons} | 503:connection_refused |",
            f.health.requests_per_second,
            f.tls.requests_per_second,
            list(&f.tls_pairs.ratios()),
            verdict(tls_ratio >= 0.9),
            f.health.p50_ms,
            f.health.p99_ms,
            f.tls.p50_ms,
            f.tls.p99_ms,
            f.health.non_2xx,
            f.tls.non_2xx,
            f.tls_connections,
            verdict(*refused_p99 <= 50.0),
        )?;
        Ok(out)
    }
}

/// The new report `generated`, with what other tools wrote into `old` kept exactly as it was:
/// each of the [`KEPT_BLOCKS`] (after the generated sections, unless it stands in the kept
/// sections) and the sections from `## High availability` on.
pub fn merge(generated: &str, old: &str) -> String {
    let line_start = |marker: &str| {
        old.match_indices(marker)
            .map(|(at, _)| at)
            .find(|&at| at == 0 || old[..at].ends_with('\n'))
    };
    let tail_at = line_start(HA_SECTIONS);
    let blocks = KEPT_BLOCKS.iter().filter_map(|(begin_marker, end_marker)| {
        let begin = line_start(begin_marker)?;
        let end = begin + old[begin..].find(end_marker)? + end_marker.len();
        let outside_tail = tail_at.is_none_or(|tail| begin < tail);
        outside_tail.then(|| &old[begin..end])
    });
    let mut merged = generated.trim_end().to_owned();
    for kept in blocks.chain(tail_at.map(|at| &old[at..])) {
        merged.push_str("\n\n");
        merged.push_str(kept.trim_end());
    }
    merged.push('\n');
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_block_and_the_ha_sections_are_kept_as_they_were() {
        let old = "# Benchmarks\n\nold figures\n\n<!-- migrations:begin -->\n## Migrations\n\
                   | a | b |\n<!-- migrations:end -->\n\nmore old figures\n\n\
                   ## High availability: x\n\nHA figures\n";
        let merged = merge("# Benchmarks\n\nnew figures\n", old);
        assert_eq!(
            merged,
            "# Benchmarks\n\nnew figures\n\n<!-- migrations:begin -->\n## Migrations\n| a | b |\n\
             <!-- migrations:end -->\n\n## High availability: x\n\nHA figures\n"
        );
    }

    #[test]
    fn a_block_inside_the_ha_sections_stays_there_once_and_nothing_is_invented() {
        let old = "# B\n\n## High availability\n\nHA\n\n<!-- migrations:begin -->\nM\n\
                   <!-- migrations:end -->\n";
        let merged = merge("# B\n\nnew\n", old);
        assert_eq!(merged.matches(KEPT_BLOCKS[0].0).count(), 1);
        assert!(merged.ends_with("HA\n\n<!-- migrations:begin -->\nM\n<!-- migrations:end -->\n"));
        assert_eq!(merge("# B\n\nnew\n", ""), "# B\n\nnew\n");
        // An unfinished block is not kept half.
        assert_eq!(merge("# B\n", "<!-- migrations:begin -->\nM\n"), "# B\n");
    }

    #[test]
    fn every_section_is_rendered_with_its_verdicts() {
        let mut figures = Figures {
            pool: 15,
            ..Figures::default()
        };
        figures.select1.tps = 1000.0;
        figures.health.requests_per_second = 400.0;
        figures.metrics = Pairs {
            firsts: vec![100.0, 100.0],
            seconds: vec![99.0, 90.0],
        };
        let text = figures.markdown().unwrap_or_default();
        for heading in [
            "## GET /health against",
            "## The cost of metrics",
            "## Overload",
            "## Memory",
            "## Cold start",
            "## find_by_username",
            "## GET /health over verify-full TLS",
            "## GET /health with PostgreSQL stopped",
        ] {
            assert!(text.contains(heading), "{heading}");
        }
        assert!(text.contains("**0.40×** | ≥ 0.5×: missed"), "{text}");
        assert!(text.contains("| 0.990, 0.900 |"), "{text}");
        assert!(text.contains("**0.900×** | ≥ 0.95×: missed"), "{text}");
    }

    #[test]
    fn a_figure_at_its_target_meets_it_and_each_column_shows_its_own_run() {
        let pair = |first: f64, second: f64| Pairs {
            firsts: vec![first],
            seconds: vec![second],
        };
        let wrk = |rate: f64, p50_ms: f64, p99_ms: f64, non_2xx: u64| WrkRun {
            requests_per_second: rate,
            p50_ms,
            p99_ms,
            non_2xx,
            ..WrkRun::default()
        };
        let figures = Figures {
            pool: 15,
            select1: PgbenchRun {
                tps: 1000.0,
                latency: "0.1 ms".into(),
            },
            health: wrk(500.0, 0.25, 5.0, 1),
            metrics: pair(100.0, 95.0),
            scrape: (1.0, 5.0, 6.0, 100),
            idle_kb: (20 * 1024, 20 * 1024),
            lookups: pair(100.0, 80.0),
            tls: wrk(450.0, 0.75, 4.5, 2),
            tls_pairs: pair(100.0, 90.0),
            refused: (1.0, 50.0, 60.0, "503:connection_refused".into()),
            ..Figures::default()
        };
        let text = figures.markdown().unwrap_or_default();
        assert_eq!(text.matches(": met |").count(), 8, "{text}");
        assert!(!text.contains("missed"), "{text}");
        assert!(
            text.contains("| 500.00 req/s | 450.00 req/s |")
                && text.contains("| 0.250 / 5.000 ms | 0.750 / 4.500 ms |")
                && text.contains("| non-2xx responses | 1 | 2 | 0 |"),
            "{text}"
        );
    }
}
