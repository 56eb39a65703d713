//! What `wrk` and `pgbench` print, read into numbers.

/// One `wrk --latency` run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkRun {
    pub requests_per_second: f64,
    pub requests: u64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers other than 2xx or 3xx.
    pub non_2xx: u64,
    /// wrk's `Socket errors: ...` line, or `none`.
    pub socket_errors: String,
}

impl WrkRun {
    pub fn parse(output: &str) -> Self {
        // A figure wrk did not print is NaN, which meets no target, never 0, which meets every
        // "at most" one.
        let mut run = Self {
            requests_per_second: f64::NAN,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            max_ms: f64::NAN,
            socket_errors: "none".into(),
            ..Self::default()
        };
        for line in output.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["Requests/sec:", rate, ..] => {
                    run.requests_per_second = rate.parse().unwrap_or(f64::NAN)
                }
                [count, "requests", "in", ..] => run.requests = count.parse().unwrap_or(0),
                ["50%", latency] => run.p50_ms = milliseconds(latency),
                ["99%", latency] => run.p99_ms = milliseconds(latency),
                ["Latency", _average, _deviation, max, ..] => run.max_ms = milliseconds(max),
                ["Non-2xx", "or", "3xx", "responses:", count] => {
                    run.non_2xx = count.parse().unwrap_or(0)
                }
                ["Socket", "errors:", ..] => run.socket_errors = line.trim().to_owned(),
                _ => {}
            }
        }
        run
    }
}

/// wrk's `412.00us`, `2.10ms`, `1.02s` or `1.5m` in milliseconds.
fn milliseconds(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let value: f64 = text[..split].parse().unwrap_or(f64::NAN);
    match &text[split..] {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => f64::NAN,
    }
}

/// One `pgbench` run: transactions per second and the average latency as printed (`0.193 ms`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgbenchRun {
    pub tps: f64,
    pub latency: String,
}

impl PgbenchRun {
    pub fn parse(output: &str) -> Self {
        let mut run = Self::default();
        for line in output.lines() {
            if let Some(rest) = line.strip_prefix("tps = ") {
                let tps = rest.split_whitespace().next().unwrap_or_default();
                run.tps = tps.parse().unwrap_or(0.0);
            } else if let Some(rest) = line.strip_prefix("latency average = ") {
                run.latency = rest.trim().to_owned();
            }
        }
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8000/health
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   493.00us  300.12us  29.36ms   90.00%
    Req/Sec    29.17k     1.23k   32.00k    70.00%
  Latency Distribution
     50%  493.00us
     75%  600.00us
     90%  800.00us
     99%    1.26ms
  580379 requests in 10.00s, 100.00MB read
  Socket errors: connect 0, read 0, write 0, timeout 3
  Non-2xx or 3xx responses: 12
Requests/sec:  58037.85
Transfer/sec:     10.00MB
";

    #[test]
    fn a_wrk_run_is_read_with_its_units() {
        let run = WrkRun::parse(WRK);
        assert_eq!(run.requests_per_second, 58037.85);
        assert_eq!(run.requests, 580379);
        assert_eq!((run.p50_ms, run.p99_ms, run.max_ms), (0.493, 1.26, 29.36));
        assert_eq!(run.non_2xx, 12);
        assert_eq!(
            run.socket_errors,
            "Socket errors: connect 0, read 0, write 0, timeout 3"
        );
        let clean = WrkRun::parse("Requests/sec: 10\n");
        assert_eq!((clean.non_2xx, clean.socket_errors.as_str()), (0, "none"));
        // Figures wrk did not print meet no target.
        assert!(clean.p50_ms.is_nan() && clean.p99_ms.is_nan() && clean.max_ms.is_nan());
        let without_99 = WrkRun::parse(&WRK.replace("99%", "99.000%"));
        assert!(without_99.p99_ms.is_nan());
        assert!(WrkRun::parse("").requests_per_second.is_nan());
        assert_eq!(milliseconds("1.02s"), 1020.0);
    }

    #[test]
    fn a_pgbench_run_is_read() {
        let output = "number of transactions actually processed: 778540\n\
                      latency average = 0.193 ms\n\
                      initial connection time = 12.3 ms\n\
                      tps = 77854.123456 (without initial connection time)\n";
        let run = PgbenchRun::parse(output);
        assert_eq!((run.tps, run.latency.as_str()), (77854.123456, "0.193 ms"));
    }
}
