//! The operating-system requests that stop the service gracefully, and the only platform code of
//! this crate.
//!
//! * unix: SIGTERM (service managers, `docker stop`, Kubernetes) and SIGINT (Ctrl-C).
//! * Windows: Ctrl-C, Ctrl-Break, closing the console window and system shutdown. For the last
//!   two Windows ends the process itself a few seconds after the event (about 5 s for a closed
//!   console), so draining may be cut short there. Logoff is left to Windows' default: a service
//!   sees the logoff of any user and must not stop for it.

/// The shutdown requests the process receives. Listening starts in [`ShutdownSignals::listen`],
/// so a request that arrives before [`ShutdownSignals::next`] is first polled is not lost, and a
/// failure to listen is reported before the service serves.
#[derive(Debug)]
pub struct ShutdownSignals(platform::Signals);

impl ShutdownSignals {
    pub fn listen() -> std::io::Result<Self> {
        platform::Signals::listen().map(Self)
    }

    /// Resolves with the next request received.
    pub async fn next(&mut self) -> ShutdownRequest {
        self.0.next().await
    }
}

/// A request to stop, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownRequest {
    /// The signal or event, for the log.
    pub name: &'static str,
    /// Typed at a terminal (Ctrl-C, Ctrl-Break): a person, who may ask again to stop at once.
    /// SIGTERM comes from service managers, which escalate by themselves (SIGKILL), and often
    /// twice (to the process group, and again through a wrapper such as `just` that passes it on).
    pub from_terminal: bool,
}

impl ShutdownRequest {
    fn new(name: &'static str, from_terminal: bool) -> Self {
        Self {
            name,
            from_terminal,
        }
    }
}

#[cfg(unix)]
mod platform {
    use tokio::signal::unix::{Signal, SignalKind, signal};

    use super::ShutdownRequest;

    #[derive(Debug)]
    pub(super) struct Signals {
        terminate: Signal,
        interrupt: Signal,
    }

    impl Signals {
        pub(super) fn listen() -> std::io::Result<Self> {
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }

        pub(super) async fn next(&mut self) -> ShutdownRequest {
            // Biased: when both are pending, SIGTERM comes first, so that the Ctrl-C after it
            // asks to stop at once (a Ctrl-C right after a Ctrl-C would be the same request).
            tokio::select! {
                biased;
                Some(()) = self.terminate.recv() => ShutdownRequest::new("SIGTERM", false),
                Some(()) = self.interrupt.recv() => ShutdownRequest::new("SIGINT", true),
                // Both streams ended: the runtime is shutting down and no signal can come.
                else => std::future::pending().await,
            }
        }
    }
}

#[cfg(windows)]
mod platform {
    use tokio::signal::windows::{
        CtrlBreak, CtrlC, CtrlClose, CtrlShutdown, ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown,
    };

    use super::ShutdownRequest;

    #[derive(Debug)]
    pub(super) struct Signals {
        ctrl_c: CtrlC,
        ctrl_break: CtrlBreak,
        close: CtrlClose,
        shutdown: CtrlShutdown,
    }

    impl Signals {
        pub(super) fn listen() -> std::io::Result<Self> {
            Ok(Self {
                ctrl_c: ctrl_c()?,
                ctrl_break: ctrl_break()?,
                close: ctrl_close()?,
                shutdown: ctrl_shutdown()?,
            })
        }

        pub(super) async fn next(&mut self) -> ShutdownRequest {
            tokio::select! {
                Some(()) = self.ctrl_c.recv() => ShutdownRequest::new("Ctrl-C", true),
                Some(()) = self.ctrl_break.recv() => ShutdownRequest::new("Ctrl-Break", true),
                Some(()) = self.close.recv() => ShutdownRequest::new("console close", false),
                Some(()) = self.shutdown.recv() => ShutdownRequest::new("system shutdown", false),
                // tokio documents that these streams never end; should one ever, wait on the
                // others rather than panic.
                else => std::future::pending().await,
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use nix::sys::signal::{Signal, raise};

    use super::ShutdownSignals;

    /// One test for both signals: they are process-wide, so parallel tests would see each
    /// other's. Raising them is harmless once the handlers are installed, which happens before
    /// `listen` returns.
    #[tokio::test]
    async fn sigterm_and_sigint_each_resolve_every_time_and_only_sigint_is_from_a_terminal() {
        let mut signals = ShutdownSignals::listen().unwrap();
        for (signal, name, from_terminal) in [
            (Signal::SIGTERM, "SIGTERM", false),
            (Signal::SIGINT, "SIGINT", true),
            (Signal::SIGTERM, "SIGTERM", false),
        ] {
            raise(signal).unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), signals.next())
                .await
                .unwrap();
            assert_eq!((got.name, got.from_terminal), (name, from_terminal));
        }
    }
}
