//! Logging: `tracing` everywhere, `log` records (sqlx) bridged in, one line per event.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::{LogFormat, LogSettings};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("RUST_LOG is not a valid filter")]
    InvalidFilter,
    #[error("a logger is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber. Fails when `RUST_LOG` is not a valid filter, or when a
/// subscriber is already installed.
pub fn init(settings: &LogSettings) -> Result<(), TelemetryError> {
    // Checked with the other settings already; this only guards programmatic callers.
    let filter = EnvFilter::try_new(&settings.filter).map_err(|_| TelemetryError::InvalidFilter)?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(true)
                    // Colours only for a terminal: escape codes make log files unreadable.
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}
