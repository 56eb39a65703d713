//! `GET /metrics`: Prometheus' text format, rendered by `metrics-exporter-prometheus`.
//!
//! Each [`crate::Application`] has a recorder of its own (not a process-global one), so tests can
//! run many applications in one process, in parallel, each seeing only its own numbers. Every
//! handle is registered against that recorder: the persistence crate's (its operations, and its
//! pool's gauges, which a scrape refreshes) when the pool is built (inside
//! [`Registrar::register`]), ours at build time or on first use of a label set. Labels take
//! values from fixed sets only (route templates, never paths), so the series stay bounded.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use counseling_persistence::Database;
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// The content type of Prometheus' text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label of requests that matched no route: every unknown path shares it.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of every duration histogram, in seconds: sub-millisecond probes to the 30 s
/// statement timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often recorded durations are folded into their buckets between scrapes: the recorder keeps
/// raw samples until then, so this bounds its memory under load when nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

const HTTP_REQUESTS: &str = "http_server_requests_total";
const HTTP_DURATION: &str = "http_server_request_duration_seconds";
const HEALTH_CHECKS: &str = "counseling_health_checks_total";
const HEALTH_DURATION: &str = "counseling_health_check_duration_seconds";
const BUILD_INFO: &str = "counseling_build_info";

/// Registers handles with one application's recorder, or with none (metrics switched off: the
/// handles then do nothing).
#[derive(Debug, Clone, Default)]
pub struct Registrar(Option<Arc<PrometheusRecorder>>);

impl Registrar {
    /// Runs `register` with this recorder as the current one, so that the `metrics` macros in it
    /// (ours and other crates') register there.
    pub fn register<T>(&self, register: impl FnOnce() -> T) -> T {
        match &self.0 {
            Some(recorder) => metrics::with_local_recorder(recorder.as_ref(), register),
            // Metrics off: handles that do nothing, even if something in the process installed a
            // global recorder (the macros' fallback).
            None => metrics::with_local_recorder(&metrics::NoopRecorder, register),
        }
    }
}

/// The recorder of one application and what `/metrics` reads at scrape time.
#[derive(Debug)]
pub struct Metrics {
    registrar: Registrar,
    handle: PrometheusHandle,
    /// Its pool's gauges (defined with the pool) are set at each scrape.
    database: Database,
    process: metrics_process::Collector,
}

impl Metrics {
    /// A fresh recorder, and the registrar through which everything registers with it.
    pub fn recorder() -> Registrar {
        let builder = PrometheusBuilder::new();
        // The buckets are a non-empty constant: `set_buckets` only fails for an empty list.
        let builder = match builder.set_buckets(DURATION_BUCKETS) {
            Ok(with_buckets) => with_buckets,
            Err(_) => PrometheusBuilder::new(),
        };
        Registrar(Some(Arc::new(builder.build_recorder())))
    }

    /// What `/metrics` needs; `None` when `registrar` has no recorder (metrics off).
    pub fn new(registrar: &Registrar, database: Database) -> Option<Self> {
        let handle = registrar.0.as_ref()?.handle();
        let process = registrar.register(|| {
            describe_gauge!(
                BUILD_INFO,
                "Always 1; the version label names the running build."
            );
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            let process = metrics_process::Collector::default();
            process.describe();
            process
        });
        Some(Self {
            registrar: registrar.clone(),
            handle,
            database,
            process,
        })
    }

    /// The scrape: values read now (pool, process), then everything in the text format.
    pub fn render(&self) -> String {
        self.database.record_pool_status();
        self.registrar.register(|| self.process.collect());
        self.handle.render()
    }

    /// Folds recorded durations into their buckets; see [`UPKEEP_INTERVAL`].
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// `GET /metrics`.
pub async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(metrics.render())
}

/// Requests by method, route template and status class, and their durations.
#[derive(Debug)]
pub struct HttpMetrics {
    registrar: Registrar,
    /// Registered on first use; bounded by methods x routes of the app x 5 classes.
    series: RwLock<HashMap<RequestLabels, (Counter, Histogram)>>,
}

type RequestLabels = (&'static str, String, &'static str);

impl HttpMetrics {
    pub fn new(registrar: &Registrar) -> Self {
        registrar.register(|| {
            describe_counter!(
                HTTP_REQUESTS,
                "HTTP requests answered, by method, route template and status class."
            );
            describe_histogram!(
                HTTP_DURATION,
                Unit::Seconds,
                "Time from receiving an HTTP request to having its response."
            );
        });
        Self {
            registrar: registrar.clone(),
            series: RwLock::new(HashMap::new()),
        }
    }

    fn record(&self, method: &Method, route: Option<String>, status: StatusCode, took: Duration) {
        let labels = (
            method_label(method),
            route.unwrap_or_else(|| UNMATCHED_ROUTE.to_owned()),
            status_class(status),
        );
        let known = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
            .cloned();
        let (requests, duration) = match known {
            Some(handles) => handles,
            None => {
                let (method, route, class) = labels.clone();
                let handles = self.registrar.register(|| {
                    (
                        counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status_class" => class),
                        histogram!(HTTP_DURATION, "method" => method, "route" => route, "status_class" => class),
                    )
                });
                self.series
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(labels)
                    .or_insert(handles)
                    .clone()
            }
        };
        requests.increment(1);
        duration.record(took);
    }
}

/// Middleware: records every request in [`HttpMetrics`] (registered as app data).
pub async fn record_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = request.app_data::<web::Data<HttpMetrics>>().cloned();
    let method = request.method().clone();
    let outcome = next.call(request).await;
    if let Some(metrics) = metrics {
        let (route, status) = match &outcome {
            Ok(response) => (response.request().match_pattern(), response.status()),
            // The request went with the error; handler errors arrive as responses, so this is
            // a middleware's failure, before or after routing.
            Err(error) => (None, error.as_response_error().status_code()),
        };
        metrics.record(&method, route, status, started.elapsed());
    }
    outcome
}

/// The standard methods by name, anything else as `other`: a client cannot invent label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Health checks by outcome and reason, and their durations.
#[derive(Debug)]
pub struct HealthMetrics {
    registrar: Registrar,
    duration_healthy: Histogram,
    duration_unhealthy: Histogram,
    /// By reason (`none` when healthy), registered on first use; reasons are a fixed set.
    checks: RwLock<HashMap<&'static str, Counter>>,
}

/// The `reason` label of a healthy check.
pub const HEALTHY_REASON: &str = "none";

impl HealthMetrics {
    pub fn new(registrar: &Registrar) -> Self {
        let (duration_healthy, duration_unhealthy) = registrar.register(|| {
            describe_counter!(
                HEALTH_CHECKS,
                "Health checks (/health, /health/ready) by outcome and reason."
            );
            describe_histogram!(
                HEALTH_DURATION,
                Unit::Seconds,
                "Duration of health checks, database round trip included."
            );
            (
                histogram!(HEALTH_DURATION, "outcome" => "healthy"),
                histogram!(HEALTH_DURATION, "outcome" => "unhealthy"),
            )
        });
        Self {
            registrar: registrar.clone(),
            duration_healthy,
            duration_unhealthy,
            checks: RwLock::new(HashMap::new()),
        }
    }

    /// One check: `failure` is `None` when healthy, else the reason given to the client.
    pub fn record(&self, failure: Option<&'static str>, took: Duration) {
        let (duration, outcome, reason) = match failure {
            None => (&self.duration_healthy, "healthy", HEALTHY_REASON),
            Some(reason) => (&self.duration_unhealthy, "unhealthy", reason),
        };
        duration.record(took);
        let known = self
            .checks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(reason)
            .cloned();
        let checks = known.unwrap_or_else(|| {
            let registered = self
                .registrar
                .register(|| counter!(HEALTH_CHECKS, "outcome" => outcome, "reason" => reason));
            self.checks
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(reason)
                .or_insert(registered)
                .clone()
        });
        checks.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_and_odd_statuses_fall_into_fixed_label_values() {
        let custom = Method::from_bytes(b"BREW").unwrap_or(Method::GET);
        assert_eq!(method_label(&custom), "other");
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::from_u16(999).unwrap()), "5xx");
    }
}
