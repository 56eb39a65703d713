//! The operating-system requests that stop the service gracefully, and the only platform code of
//! this crate.
//!
//! * unix: SIGTERM (service managers, `docker stop`, Kubernetes) and SIGINT (Ctrl-C).
//! * Windows: Ctrl-C, Ctrl-Break, closing the console window and system shutdown. For the last
//!   two Windows ends the process itself a few seconds after the event (about 5 s for a closed
//!   console), so draining may be cut short there. Logoff is left to Windows' default: a service
//!   sees the logoff of any user and must not stop for it.

use std::future::Future;

/// Starts listening at once, so a request that arrives before the returned future is first
/// polled is not lost and a failure to listen is reported before the service serves. The future
/// resolves with the name of the first request received (for the log).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    platform::listen()
}

#[cfg(unix)]
mod platform {
    use std::future::Future;

    use tokio::signal::unix::{SignalKind, signal};

    pub(super) fn listen() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                Some(()) = terminate.recv() => "SIGTERM",
                Some(()) = interrupt.recv() => "SIGINT",
                // Both streams ended: the runtime is shutting down and no signal can come.
                else => std::future::pending().await,
            }
        })
    }
}

#[cfg(windows)]
mod platform {
    use std::future::Future;

    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};

    pub(super) fn listen() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
        let mut ctrl_c_events = ctrl_c()?;
        let mut ctrl_break_events = ctrl_break()?;
        let mut close_events = ctrl_close()?;
        let mut shutdown_events = ctrl_shutdown()?;
        Ok(async move {
            tokio::select! {
                Some(()) = ctrl_c_events.recv() => "Ctrl-C",
                Some(()) = ctrl_break_events.recv() => "Ctrl-Break",
                Some(()) = close_events.recv() => "console close",
                Some(()) = shutdown_events.recv() => "system shutdown",
                // tokio documents that these streams never end; should one ever, wait on the
                // others rather than panic.
                else => std::future::pending().await,
            }
        })
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use nix::sys::signal::{Signal, raise};

    use super::shutdown_signal;

    /// One test for both signals: they are process-wide, so parallel tests would see each
    /// other's. Raising them is harmless once the handlers are installed, which happens before
    /// `shutdown_signal` returns.
    #[tokio::test]
    async fn sigterm_and_sigint_each_resolve_with_their_name() {
        for (signal, name) in [(Signal::SIGTERM, "SIGTERM"), (Signal::SIGINT, "SIGINT")] {
            let received = shutdown_signal().unwrap();
            raise(signal).unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), received)
                .await
                .unwrap();
            assert_eq!(got, name);
        }
    }
}
