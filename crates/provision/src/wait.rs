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

/// Polls: every 2 ms at first, doubling up to every 100 ms, so a quick thing is seen at once
/// and a slow one is not hammered.
struct Poll {
    deadline: Instant,
    pause: Duration,
}

impl Poll {
    fn new(limit: Duration) -> Self {
        let pause = Duration::from_millis(2);
        Self {
            deadline: Instant::now() + limit,
            pause,
        }
    }

    /// The pause before the next check; `None` once the deadline has passed.
    fn next(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(Duration::from_millis(100));
        Some(pause)
    }
}

fn timed_out(what: &str, limit: Duration) -> ProvisionError {
    let seconds = limit.as_secs_f64().ceil() as u64;
    ProvisionError::Timeout {
        what: what.to_owned(),
        seconds,
    }
}

/// Checks `check` until it holds (or gives a value), for at most `limit`; blocks the thread.
pub fn wait_until<O: Outcome>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> O,
) -> Result<O::Value> {
    let mut poll = Poll::new(limit);
    loop {
        if let Some(value) = check().ready() {
            return Ok(value);
        }
        std::thread::sleep(poll.next().ok_or_else(|| timed_out(what, limit))?);
    }
}

/// [`wait_until`] for an async check, sleeping on the runtime instead of blocking it.
pub async fn eventually<O: Outcome>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> O,
) -> Result<O::Value> {
    let mut poll = Poll::new(limit);
    loop {
        if let Some(value) = check().await.ready() {
            return Ok(value);
        }
        tokio::time::sleep(poll.next().ok_or_else(|| timed_out(what, limit))?).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn waits_until_it_holds_and_times_out_naming_what_did_not_happen() {
        let mut calls = 0;
        let value = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(value.unwrap(), 3);
        let started = Instant::now();
        let error = wait_until("never", Duration::from_millis(50), || false).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(error.to_string(), "never did not happen within 1 s");
    }

    #[tokio::test]
    async fn eventually_polls_an_async_check() {
        let mut calls = 0;
        eventually("the second call", Duration::from_secs(5), || {
            calls += 1;
            std::future::ready(calls == 2)
        })
        .await
        .unwrap();
        assert!(
            eventually("never", Duration::from_millis(20), || async { false })
                .await
                .is_err()
        );
    }
}
