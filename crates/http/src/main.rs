//! `counseling-api`: configuration from the environment (and `.env`), then serve.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the service fails at run time (for example the
//! port is taken), 2 when the configuration is missing or invalid.

use std::process::ExitCode;

use counseling_http::{Application, Settings, telemetry};

fn main() -> ExitCode {
    // A missing .env is normal; values already in the environment win over it.
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("counseling-api: .env could not be read (fix or remove it)");
        return ExitCode::from(2);
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("counseling-api: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = telemetry::init(&settings.log) {
        eprintln!("counseling-api: configuration error: {error}");
        return ExitCode::from(2);
    }
    match actix_web::rt::System::new().block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "counseling-api failed");
            eprintln!("counseling-api: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let application = Application::build(&settings)?;
    tracing::info!(
        host = %settings.app.host,
        port = application.port(),
        health_timeout_ms = settings.app.health_timeout.as_millis() as u64,
        max_connections = settings.database.max_connections,
        "counseling-api listening"
    );
    application.run_until_stopped().await
}
