//! Health checks that share database round trips.
//!
//! A probe storm (load balancers, orchestrators, a retry loop) must neither exhaust the pool nor
//! pile up work while the database hangs. So checks run in rounds, one at a time: a caller joins
//! the next round that has not started yet and gets its result, so a "healthy" answer always
//! comes from a round trip that began after the caller asked, yet at most one check is in flight
//! however many callers there are (and at most one wait for a connection that outlived its
//! check: see [`Database::ping`]). A failure of the round already in flight is passed on at once
//! (it was observed after the caller asked); a success of that round is not, so the caller then
//! waits for the next round too: an answer takes at most twice the timeout (plus 0.1 s).
//!
//! Probe policy, so it lives here in the HTTP layer; the pool only offers a bounded
//! [`Database::ping`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use counseling_domain::{StoreError, Unavailability};
use counseling_persistence::Database;
use metrics::{Counter, counter, describe_counter};
use tokio::runtime::Handle;
use tokio::sync::watch;

type Outcome = Option<Result<(), StoreError>>;

const ROUND_TRIPS: &str = "counseling_health_check_round_trips_total";

#[derive(Debug)]
struct Rounds {
    /// The round callers join: not started yet.
    next: Option<watch::Sender<Outcome>>,
    /// The round running now, if any.
    in_flight: Option<watch::Receiver<Outcome>>,
    /// Whether a driver task is running rounds.
    driving: bool,
}

/// Coalesces concurrent [`Database::ping`] calls into rounds; see the module docs.
#[derive(Debug, Clone)]
pub struct CoalescedPing {
    database: Database,
    /// The runtime of the database's I/O, where rounds run: they outlive any one HTTP worker, and
    /// a ping started there needs no hop to reach its connection.
    io: Handle,
    timeout: Duration,
    rounds: Arc<Mutex<Rounds>>,
    /// Rounds run: fewer than checks when concurrent checks share them.
    round_trips: Counter,
}

impl CoalescedPing {
    /// Checks run with `timeout` each, on `io` (the runtime given to [`Database::connect_lazy`]).
    /// The round-trip counter goes to the `metrics` recorder current when this is called (as
    /// [`Database::connect_lazy`]'s metrics do).
    pub fn new(database: Database, io: Handle, timeout: Duration) -> Self {
        describe_counter!(
            ROUND_TRIPS,
            "Database round trips started by health checks; concurrent checks share them."
        );
        Self {
            database,
            io,
            timeout,
            rounds: Arc::new(Mutex::new(Rounds {
                next: None,
                in_flight: None,
                driving: false,
            })),
            round_trips: counter!(ROUND_TRIPS),
        }
    }

    fn rounds(&self) -> MutexGuard<'_, Rounds> {
        // Nothing panics while holding the lock; recover the state if something ever did.
        self.rounds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The outcome of a database round trip that starts after this call, within about the
    /// timeout (a caller may wait for the round in flight to end first, itself bounded).
    pub async fn check(&self) -> Result<(), StoreError> {
        let (in_flight, mut receiver, start_driver) = {
            let mut rounds = self.rounds();
            let in_flight = rounds.in_flight.clone();
            let receiver = rounds
                .next
                .get_or_insert_with(|| watch::channel(None).0)
                .subscribe();
            let start_driver = !rounds.driving;
            rounds.driving = true;
            (in_flight, receiver, start_driver)
        };
        if start_driver {
            let this = self.clone();
            // Made before the task, so that it is dropped with it even if it never runs.
            let driving = Driving {
                ping: self.clone(),
                stopped: false,
            };
            // Rounds run on the database's own runtime, so they outlive any one HTTP worker.
            drop(self.io.spawn(async move { this.drive(driving).await }));
        }
        let margin = Duration::from_millis(100);
        // The round in flight (a success) plus ours, each bounded by the timeout: one deadline
        // for both waits, so that the probe stays bounded even if a round overran or a driver
        // died.
        let started = tokio::time::Instant::now();
        let deadline = started + self.timeout * 2 + margin;
        if let Some(mut in_flight) = in_flight
            && let Ok(Ok(outcome)) = tokio::time::timeout_at(
                deadline.min(started + self.timeout + margin),
                in_flight.wait_for(Option::is_some),
            )
            .await
            && let Some(Err(error)) = outcome.clone()
        {
            return Err(error);
        }
        match tokio::time::timeout_at(deadline, receiver.wait_for(Option::is_some)).await {
            Ok(Ok(outcome)) => outcome.clone().unwrap_or(Ok(())),
            // The driver vanished (runtime shutting down) or the limit passed.
            Ok(Err(_)) | Err(_) => Err(StoreError::Unavailable(Unavailability::Timeout)),
        }
    }

    /// Runs rounds back to back while callers are waiting for one.
    async fn drive(&self, mut driving: Driving) {
        loop {
            let round = {
                let mut rounds = self.rounds();
                match rounds.next.take() {
                    Some(round) => {
                        rounds.in_flight = Some(round.subscribe());
                        round
                    }
                    None => {
                        rounds.driving = false;
                        // Stopped as it should: the next caller may start a driver already.
                        driving.stopped = true;
                        return;
                    }
                }
            };
            // `drive` runs on the database runtime (see `check`), so the ping makes no second hop.
            self.round_trips.increment(1);
            let outcome = self.database.ping(self.timeout).await;
            // Retire the round before publishing, so no later caller takes its result as fresh.
            self.rounds().in_flight = None;
            round.send_replace(Some(outcome));
        }
    }
}

/// The one driver's mark: if its task ends any other way than by finding no caller (a panic, a
/// task dropped by a runtime shutting down, or one that never ran), no driver runs any more, and
/// the next caller must start one rather than wait for rounds nobody takes.
struct Driving {
    ping: CoalescedPing,
    /// Set when the driver stopped for want of callers.
    stopped: bool,
}

impl Drop for Driving {
    fn drop(&mut self) {
        if !self.stopped {
            let mut rounds = self.ping.rounds();
            rounds.driving = false;
            rounds.in_flight = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A driver task that never ran (its runtime was gone) leaves no driver marked as running;
    /// before, every later probe waited for rounds nobody took until the process restarted.
    #[tokio::test]
    async fn a_driver_that_never_ran_is_not_counted_as_running() {
        let settings =
            counseling_testkit::fixtures::pool_settings("postgres://u@127.0.0.1:1/db").unwrap();
        let database = Database::connect_lazy(&settings, Handle::current()).unwrap();
        let gone = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dead_io = gone.handle().clone();
        gone.shutdown_background();
        let checks = CoalescedPing::new(database, dead_io, Duration::from_millis(20));
        assert!(checks.check().await.is_err());
        assert!(!checks.rounds().driving);
    }

    /// A round that overran (its driver starved: the database runtime busy) and the probe's own
    /// round share one deadline, twice the timeout plus the margin; each wait with its own
    /// limit made three times.
    #[tokio::test]
    async fn a_probe_behind_an_overrunning_round_waits_one_deadline_in_all() {
        let settings =
            counseling_testkit::fixtures::pool_settings("postgres://u@127.0.0.1:1/db").unwrap();
        let database = Database::connect_lazy(&settings, Handle::current()).unwrap();
        let timeout = Duration::from_secs(1);
        let checks = CoalescedPing::new(database, Handle::current(), timeout);
        // A round in flight whose driver never gets to publish it.
        let (_overrunning, in_flight) = watch::channel(None);
        {
            let mut rounds = checks.rounds();
            rounds.in_flight = Some(in_flight);
            rounds.driving = true;
        }
        let started = std::time::Instant::now();
        assert_eq!(
            checks.check().await,
            Err(StoreError::Unavailable(Unavailability::Timeout))
        );
        let took = started.elapsed();
        // 2.1 s; with a limit per wait, 3.2 s.
        assert!(took >= timeout * 2, "{took:?}");
        assert!(took < timeout * 2 + Duration::from_millis(700), "{took:?}");
    }
}
