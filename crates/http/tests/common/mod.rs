//! What the in-process tests of the app share.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use counseling_http::{Application, Settings};

/// Starts the app on a free port; it stops when the test's runtime ends.
pub fn spawn_app(database_url: &str, extra: &[(&str, &str)]) -> u16 {
    spawn_application(database_url, extra).0
}

/// Like [`spawn_app`], also returning the port of `/metrics` when it has one of its own.
pub fn spawn_application(database_url: &str, extra: &[(&str, &str)]) -> (u16, Option<u16>) {
    let mut vars = vec![("DATABASE_URL", database_url), ("APP_PORT", "0")];
    vars.extend_from_slice(extra);
    let settings = Settings::from_vars(vars).unwrap();
    let application = Application::build(&settings, tokio::runtime::Handle::current()).unwrap();
    let ports = (application.port(), application.metrics_port());
    tokio::spawn(application.run());
    ports
}
