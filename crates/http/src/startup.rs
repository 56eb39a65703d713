//! Building and running the service: bind first (so tests can use port 0 and read the port),
//! then serve until a shutdown signal (`shutdown_signal`), drain, close the pool.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use counseling_persistence::{CoalescedPing, Database};
use tracing_actix_web::TracingLogger;

use crate::request_id::{RequestSpan, request_id};
use crate::routes::health::{HealthCheck, health, live, ready};
use crate::settings::Settings;
use crate::shutdown_signal::shutdown_signal;

/// How long shutdown waits for database connections to close after the last request.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A bound, not yet running, service.
pub struct Application {
    port: u16,
    server: Server,
    database: Database,
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
    pub fn build(settings: &Settings, io: tokio::runtime::Handle) -> anyhow::Result<Self> {
        let database = Database::connect_lazy(&settings.database, io)
            .context("DATABASE_URL or a pool setting is invalid")?;
        let address = (settings.app.host, settings.app.port);
        let listener = TcpListener::bind(address)
            .with_context(|| format!("could not listen on {}:{}", address.0, address.1))?;
        let port = listener
            .local_addr()
            .context("reading the bound address")?
            .port();

        let health_check = web::Data::new(HealthCheck::new(CoalescedPing::new(
            database.clone(),
            settings.health.timeout,
        )));
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::<RequestSpan>::new())
                .wrap(from_fn(request_id))
                .app_data(health_check.clone())
                .service(health)
                .service(ready)
                .service(live)
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
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped through its handle, then closes the pool.
    pub async fn run(self) -> std::io::Result<()> {
        let outcome = self.server.await;
        tracing::info!("HTTP server stopped; closing database connections");
        if !self.database.close(POOL_CLOSE_TIMEOUT).await {
            tracing::warn!("database connections did not close in time; exiting anyway");
        }
        outcome
    }

    /// Serves until a shutdown signal (SIGTERM or SIGINT; on Windows Ctrl-C, Ctrl-Break or a
    /// console close or shutdown event), then stops accepting, lets in-flight requests finish
    /// (up to the shutdown timeout), and closes the pool.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.handle();
        let signal = shutdown_signal().context("listening for shutdown signals")?;
        let stopper = tokio::spawn(async move {
            let name = signal.await;
            tracing::info!("{name} received: draining");
            handle.stop(true).await;
        });
        let outcome = self.run().await;
        stopper.abort();
        outcome.context("the HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}
