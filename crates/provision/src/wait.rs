//! Waiting until something is so, with a deadline: the one polling loop of our tools and tests.

use std::time::{Duration, Instant};

use crate::{ProvisionError, Result};

/// What a check returns: `true`/`false`, or `Some(value)` once there is one.
pub trait Outcome {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// The polls of one wait: every 2 ms at first, doubling up to every 100 ms, so that a quick
/// thing is seen at once and a slow one is not hammered.
struct Polls {
    what: String,
    limit: Duration,
    deadline: Instant,
    pause: Duration,
}

impl Polls {
    fn new(what: &str, limit: Duration) -> Self {
        let (what, deadline) = (what.to_owned(), Instant::now() + limit);
        Self {
            what,
            limit,
            deadline,
            pause: Duration::from_millis(2),
        }
    }

    /// The value, or the pause before the next check, or the timeout.
    fn after<O: Outcome>(&mut self, outcome: O) -> Result<std::result::Result<O::Value, Duration>> {
        if let Some(value) = outcome.ready() {
            return Ok(Ok(value));
        }
        let Some(left) = self.deadline.checked_duration_since(Instant::now()) else {
            let (what, seconds) = (self.what.clone(), self.limit.as_secs_f64().ceil() as u64);
            return Err(ProvisionError::Timeout { what, seconds });
        };
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(Duration::from_millis(100));
        Ok(Err(pause))
    }
}

/// Checks `check` until it holds (or gives a value), for at most `limit`; blocks the thread.
pub fn wait_until<O: Outcome>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> O,
) -> Result<O::Value> {
    let mut polls = Polls::new(what, limit);
    loop {
        match polls.after(check())? {
            Ok(value) => return Ok(value),
            Err(pause) => std::thread::sleep(pause),
        }
    }
}

/// [`wait_until`] for an async check, sleeping on the runtime instead of blocking it.
pub async fn eventually<O: Outcome>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> O,
) -> Result<O::Value> {
    let mut polls = Polls::new(what, limit);
    loop {
        match polls.after(check().await)? {
            Ok(value) => return Ok(value),
            Err(pause) => tokio::time::sleep(pause).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pause_outlasts_the_deadline_and_pauses_grow_to_100_ms() {
        let mut polls = Polls::new("x", Duration::from_secs(60));
        let pauses: Vec<Duration> = (0..9)
            .filter_map(|_| polls.after(false).ok()?.err())
            .collect();
        let ms = |ms: &[u64]| {
            ms.iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(pauses, ms(&[2, 4, 8, 16, 32, 64, 100, 100, 100]));

        let mut polls = Polls::new("x", Duration::from_secs(10));
        polls.pause = Duration::from_secs(60);
        let Ok(Err(pause)) = polls.after(false) else {
            panic!("no pause before the deadline");
        };
        assert!(pause <= Duration::from_secs(10), "{pause:?}");
    }
}
