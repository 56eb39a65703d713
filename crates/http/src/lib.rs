//! The `counseling-api` service: settings, telemetry, the actix-web app and its lifecycle.

pub mod coalesced_ping;
pub mod metrics;
pub mod request_id;
pub mod routes;
pub mod settings;
pub mod shutdown_signal;
pub mod startup;
pub mod telemetry;

pub use settings::Settings;
pub use startup::{Application, StoppedWithoutDraining};
