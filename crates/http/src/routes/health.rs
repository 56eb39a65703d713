//! Health probes.
//!
//! Each answers HEAD too (the same status and headers, no body), since monitors and load
//! balancers often probe with HEAD; other methods get 405 with `Allow`.
//!
//! * `GET /health` and `GET /health/ready`: a real database round trip on every call, bounded by
//!   `HEALTH_TIMEOUT_MS` (a probe may first wait for one already under way: see
//!   `coalesced_ping`); 200 when it succeeds, 503 with a short reason when not.
//! * `GET /health/live`: the process answers; never touches the database, so an orchestrator
//!   does not restart a healthy process because its database is down.

use std::sync::{Arc, Mutex};

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};
use chrono::{SecondsFormat, Utc};
use counseling_domain::StoreError;
use serde::Serialize;

use crate::coalesced_ping::CoalescedPing;
use crate::metrics::HealthMetrics;

/// What the health handlers share: the database check, with concurrent probes sharing round
/// trips (see [`CoalescedPing`]) so that a probe storm cannot exhaust the pool.
#[derive(Debug)]
pub struct HealthCheck {
    ping: CoalescedPing,
    metrics: HealthMetrics,
    /// The last outcome logged (`None`: healthy), so that probes every few seconds against a
    /// database that stays down log its reason once per change, not once per probe.
    last_logged: Arc<Mutex<Option<StoreError>>>,
}

impl HealthCheck {
    pub fn new(ping: CoalescedPing, metrics: HealthMetrics) -> Self {
        Self {
            ping,
            metrics,
            last_logged: Arc::new(Mutex::new(None)),
        }
    }

    /// Logs `outcome` if it differs from the last one logged.
    fn log_change(&self, outcome: &Result<(), StoreError>) {
        let now = outcome.as_ref().err().cloned();
        // Nothing panics while holding the lock; recover the state if something ever did.
        let mut last = self
            .last_logged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *last == now {
            return;
        }
        match &now {
            // The error's text is fixed (with a TLS failure's cause): no host, user or secret.
            Some(error) => tracing::warn!(%error, "database unhealthy"),
            None => tracing::info!("database healthy again"),
        }
        *last = now;
    }
}

#[derive(Debug, Serialize)]
struct HealthBody {
    status: &'static str,
    database: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    timestamp: String,
}

/// A fixed, client-safe reason: never a host, user, password or SQL.
fn reason(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(why) => why.as_str(),
        _ => "database error",
    }
}

fn no_store() -> CacheControl {
    CacheControl(vec![CacheDirective::NoStore])
}

async fn check(state: &HealthCheck) -> HttpResponse {
    let started = std::time::Instant::now();
    let outcome = state.ping.check().await;
    state.log_change(&outcome);
    state
        .metrics
        .record(outcome.as_ref().err().map(reason), started.elapsed());
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    match outcome {
        Ok(()) => HttpResponse::Ok()
            .insert_header(no_store())
            .json(HealthBody {
                status: "healthy",
                database: "connected",
                error: None,
                timestamp,
            }),
        Err(error) => HttpResponse::ServiceUnavailable()
            .insert_header(no_store())
            .json(HealthBody {
                status: "unhealthy",
                database: "disconnected",
                error: Some(reason(&error)),
                timestamp,
            }),
    }
}

pub async fn health(state: web::Data<HealthCheck>) -> HttpResponse {
    check(&state).await
}

pub async fn ready(state: web::Data<HealthCheck>) -> HttpResponse {
    check(&state).await
}

pub async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(no_store())
        .json(serde_json::json!({ "status": "alive" }))
}
