//! Building and running the service: bind first (so tests can use port 0 and read the port),
//! then serve until a shutdown signal (`shutdown_signal`), drain, close the pool.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{Condition, DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use counseling_persistence::Database;
use tracing_actix_web::TracingLogger;

use crate::coalesced_ping::CoalescedPing;
use crate::metrics::{
    HealthMetrics, HttpMetrics, Metrics, Registrar, UPKEEP_INTERVAL, record_request, scrape,
};
use crate::request_id::{RequestSpan, request_id};
use crate::routes::health::{HealthCheck, health, live, ready};
use crate::settings::Settings;
use crate::shutdown_signal::ShutdownSignals;

/// How long shutdown waits for database connections to close after the last request.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A bound, not yet running, service.
pub struct Application {
    port: u16,
    server: Server,
    database: Database,
    metrics: Option<web::Data<Metrics>>,
    /// `/metrics` alone, when `METRICS_PORT` is set.
    metrics_server: Option<(u16, Server)>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Creates the (lazy) pool and binds the listener. Does not need the database to be up.
    /// Database I/O runs on `io`, which must outlive the application.
    /// Metrics go to a recorder of this application's own (see [`crate::metrics`]).
    pub fn build(settings: &Settings, io: tokio::runtime::Handle) -> anyhow::Result<Self> {
        let registrar = if settings.metrics.enabled {
            Metrics::recorder()
        } else {
            Registrar::default()
        };
        let database = registrar
            .register(|| Database::connect_lazy(&settings.database, io.clone()))
            .context("DATABASE_URL or a pool setting is invalid")?;
        let (listener, port) = bind(settings.app.host, settings.app.port)?;

        let health_check = web::Data::new(HealthCheck::new(
            registrar.register(|| {
                CoalescedPing::new(database.clone(), io.clone(), settings.health.timeout)
            }),
            HealthMetrics::new(&registrar),
        ));
        let metrics = Metrics::new(&registrar, database.clone()).map(web::Data::new);
        let http_metrics = web::Data::new(HttpMetrics::new(&registrar));
        let recording = metrics.is_some();
        let metrics_server = match (&metrics, settings.metrics.port) {
            (Some(metrics), Some(metrics_port)) => Some(metrics_only_server(
                settings,
                metrics.clone(),
                metrics_port,
            )?),
            _ => None,
        };
        let metrics_on_main_port = metrics.clone().filter(|_| metrics_server.is_none());
        let server = HttpServer::new(move || {
            let metrics_on_main_port = metrics_on_main_port.clone();
            App::new()
                .wrap(security_headers())
                .wrap(TracingLogger::<RequestSpan>::new())
                .wrap(from_fn(request_id))
                // Outermost, so that the duration covers the other middleware too.
                .wrap(Condition::new(recording, from_fn(record_request)))
                .app_data(health_check.clone())
                .app_data(http_metrics.clone())
                .service(readable("/health", health))
                .service(readable("/health/ready", ready))
                .service(readable("/health/live", live))
                .configure(move |config| {
                    if let Some(metrics) = metrics_on_main_port {
                        config
                            .app_data(metrics)
                            .service(readable("/metrics", scrape));
                    }
                })
        })
        // Signals are handled in `run_until_stopped`: actix's own handler stops abruptly on
        // SIGINT, and both signals must drain in-flight requests.
        .disable_signals()
        .shutdown_timeout(settings.app.shutdown_timeout.as_secs())
        .listen(listener)
        .context("starting the HTTP server")?
        .run();

        Ok(Self {
            port,
            server,
            database,
            metrics,
            metrics_server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `/metrics` when `METRICS_PORT` gives it one of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped through its handle, then closes the pool.
    pub async fn run(self) -> std::io::Result<()> {
        match self.run_unless(std::future::pending()).await {
            Ok(outcome) => outcome,
            // `pending` never resolves.
            Err(StoppedWithoutDraining(_)) => Ok(()),
        }
    }

    /// [`Application::run`], unless `stop_now` resolves before the server has stopped: then it
    /// returns at once, dropping the server (its workers' threads end with the process). Once
    /// the server has stopped, the pool is closed whatever `stop_now` does.
    async fn run_unless(
        self,
        stop_now: impl Future<Output = &'static str>,
    ) -> Result<std::io::Result<()>, StoppedWithoutDraining> {
        let upkeep = self.metrics.map(|metrics| {
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    ticks.tick().await;
                    metrics.run_upkeep();
                }
            })
        });
        let metrics_server = self
            .metrics_server
            .map(|(_, server)| (server.handle(), tokio::spawn(server)));
        // Biased: a server that has stopped wins over a Ctrl-C arriving in the same moment.
        let outcome = tokio::select! {
            biased;
            outcome = self.server => outcome,
            name = stop_now => return Err(StoppedWithoutDraining(name)),
        };
        // Not drained: a scrape is retried by its scraper, and a drain would add actix's own
        // 30 s (a scraper that stopped reading) to APP_SHUTDOWN_TIMEOUT_SECS.
        if let Some((handle, serving)) = metrics_server {
            handle.stop(false).await;
            let _ = serving.await;
        }
        if let Some(upkeep) = upkeep {
            upkeep.abort();
        }
        tracing::info!("HTTP server stopped; closing database connections");
        if !self.database.close(POOL_CLOSE_TIMEOUT).await {
            tracing::warn!("database connections did not close in time; exiting anyway");
        }
        Ok(outcome)
    }

    /// Serves until a shutdown signal (SIGTERM or SIGINT; on Windows Ctrl-C, Ctrl-Break or a
    /// console close or shutdown event), then stops accepting, lets in-flight requests finish
    /// (up to the shutdown timeout), and closes the pool. A Ctrl-C (or Ctrl-Break) while requests
    /// drain stops at once, without waiting for them, and is an error: the exit says so. A
    /// repeated SIGTERM does not (wrappers pass on the one their process group received), nor
    /// does a Ctrl-C within [`SAME_REQUEST`] of a first Ctrl-C (one a wrapper passed on again).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.handle();
        let mut signals = ShutdownSignals::listen().context("listening for shutdown signals")?;
        let impatient = async move {
            let first = signals.next().await;
            let first_at = std::time::Instant::now();
            tracing::info!("{} received: draining (Ctrl-C stops at once)", first.name);
            // The command is sent by the call; the future it returns only reports completion,
            // which `run_unless` sees.
            drop(handle.stop(true));
            loop {
                let again = signals.next().await;
                let passed_on = first.from_terminal && first_at.elapsed() < SAME_REQUEST;
                if again.from_terminal && !passed_on {
                    return again.name;
                }
                tracing::info!("{} received: still draining", again.name);
            }
        };
        let outcome = self.run_unless(impatient).await?;
        outcome.context("the HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// A Ctrl-C this close to a first Ctrl-C is the same request, passed on again by a wrapper that
/// also got it through its process group; a person's second Ctrl-C comes later.
const SAME_REQUEST: Duration = Duration::from_millis(500);

/// A Ctrl-C while requests drain. Handlers of requests still in flight may still run on
/// actix's worker threads, so the process should end now, without waiting for other work.
#[derive(Debug, thiserror::Error)]
#[error("{0} received while draining: stopped at once, without waiting for requests in flight")]
pub struct StoppedWithoutDraining(pub &'static str);

fn bind(host: std::net::IpAddr, port: u16) -> anyhow::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind((host, port))
        .with_context(|| format!("could not listen on {host}:{port}"))?;
    let port = listener
        .local_addr()
        .context("reading the bound address")?
        .port();
    Ok((listener, port))
}

/// Headers on every response the application makes on every listener, 404s included (the
/// middleware wraps the default service too; the bare errors actix-web's parser sends, such as
/// 400, 408 and 431, come before it). `nosniff`: a browser must take `Content-Type` at its word
/// and never guess a script or a page from a body.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff"))
}

/// `path` answering GET and HEAD with `handler` (actix sends no body to a HEAD, keeping status
/// and headers), and any other method with 405 and `Allow: GET, HEAD`.
fn readable<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
}

/// `/metrics` on a port of its own (`METRICS_PORT`), for scrapers only.
fn metrics_only_server(
    settings: &Settings,
    metrics: web::Data<Metrics>,
    port: u16,
) -> anyhow::Result<(u16, Server)> {
    let (listener, port) = bind(settings.app.host, port).context("METRICS_PORT")?;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(security_headers())
            // As on the API's port: every response says its request id, on every log line.
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(from_fn(request_id))
            .app_data(metrics.clone())
            .service(readable("/metrics", scrape))
    })
    // One worker is plenty for a scrape every few seconds.
    .workers(1)
    .disable_signals()
    .listen(listener)
    .context("starting the metrics server")?
    .run();
    Ok((port, server))
}
