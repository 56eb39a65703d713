//! The lock watcher: a connection of its own that samples, every few milliseconds, the locks the
//! runner's backend (and its parallel workers) holds in modes that block reads or writes, and
//! keeps, per migration, the longest time one of them was held on a table that existed before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migration::sea_orm::sqlx::{self, PgConnection};

use crate::report::HeldLock;
use crate::{CheckError, Shared, lock};

/// `pg_locks` joined with `pg_stat_activity`: granted relation locks of the backend `$1` (or of
/// workers it leads) in the modes that conflict with ROW EXCLUSIVE or ACCESS SHARE; a lock on an
/// index counts as one on its table.
const BLOCKING_LOCKS: &str = "
SELECT coalesce(i.indrelid, l.relation)::int8 AS table_oid, l.mode, a.query
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pg_index i ON i.indexrelid = l.relation
WHERE l.locktype = 'relation' AND l.granted
  AND (l.pid = $1 OR a.leader_pid = $1)
  AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// A lock seen in consecutive samples.
#[derive(Debug, Clone)]
struct Interval {
    first: Instant,
    last: Instant,
    statement: String,
}

/// The migration being watched.
#[derive(Debug)]
pub(crate) struct Watching {
    pid: i32,
    /// Tables that existed when it started, by oid.
    tables: HashMap<u32, String>,
    /// Locks seen in the latest sample, by (table oid, mode).
    open: HashMap<(u32, String), Interval>,
    longest: Option<HeldLock>,
}

impl Watching {
    pub(crate) fn new(pid: i32, tables: HashMap<u32, String>) -> Self {
        Self {
            pid,
            tables,
            open: HashMap::new(),
            longest: None,
        }
    }

    /// One sample, taken at `at`: locks still held extend their interval, new ones start one,
    /// those gone end theirs.
    fn observe(&mut self, at: Instant, locks: Vec<(i64, String, String)>) {
        let mut open = HashMap::new();
        for (oid, mode, statement) in locks {
            let Some(oid) = u32::try_from(oid)
                .ok()
                .filter(|oid| self.tables.contains_key(oid))
            else {
                continue;
            };
            let key = (oid, mode);
            // Several rows of one sample can share a key (the table and one of its indexes
            // locked alike, a leader and its parallel workers): the first one extended the
            // interval already.
            if open.contains_key(&key) {
                continue;
            }
            let interval = match self.open.remove(&key) {
                Some(interval) => Interval {
                    last: at,
                    ..interval
                },
                None => Interval {
                    first: at,
                    last: at,
                    statement,
                },
            };
            open.insert(key, interval);
        }
        let ended: Vec<((u32, String), Interval)> = std::mem::replace(&mut self.open, open)
            .into_iter()
            .collect();
        for (key, interval) in ended {
            self.close(key, interval);
        }
    }

    fn close(&mut self, (oid, mode): (u32, String), interval: Interval) {
        let held = interval.last.duration_since(interval.first);
        if self
            .longest
            .as_ref()
            .is_none_or(|longest| held > longest.held)
        {
            self.longest = Some(HeldLock {
                table: self.tables.get(&oid).cloned().unwrap_or_default(),
                mode,
                held,
                statement: interval.statement,
            });
        }
    }

    /// The longest lock, once the migration has ended (locks still seen end now).
    pub(crate) fn finish(&mut self) -> Option<HeldLock> {
        let open: Vec<_> = self.open.drain().collect();
        for (key, interval) in open {
            self.close(key, interval);
        }
        self.longest.take()
    }
}

/// The sampling task.
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Watcher {
    pub(crate) fn spawn(
        mut connection: PgConnection,
        shared: Arc<Mutex<Shared>>,
        every: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            while !stopping.load(Ordering::Relaxed) {
                let watched = {
                    let shared = lock(&shared);
                    shared
                        .current
                        .as_ref()
                        .map(|watching| (shared.generation, watching.pid))
                };
                if let Some((generation, pid)) = watched {
                    let at = Instant::now();
                    let locks: Vec<(i64, String, String)> = sqlx::query_as(BLOCKING_LOCKS)
                        .bind(pid)
                        .fetch_all(&mut connection)
                        .await
                        .map_err(|error| error.to_string())?;
                    let mut shared = lock(&shared);
                    if shared.generation == generation
                        && let Some(watching) = shared.current.as_mut()
                    {
                        watching.observe(at, locks);
                    }
                }
                tokio::time::sleep(every).await;
            }
            Ok(())
        });
        Self { stop, task }
    }

    pub(crate) async fn stop(self) -> Result<(), CheckError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(CheckError::Watcher(error)),
            Err(error) => Err(CheckError::Watcher(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_from_the_first_sample_that_sees_it_to_the_last() {
        let tables = HashMap::from([(1, "users".to_owned()), (2, "other".to_owned())]);
        let mut watching = Watching::new(7, tables);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let access_exclusive = |oid: i64, statement: &str| {
            (oid, "AccessExclusiveLock".to_owned(), statement.to_owned())
        };
        watching.observe(at(0), vec![access_exclusive(1, "ALTER a")]);
        watching.observe(at(10), vec![access_exclusive(1, "ALTER b")]);
        watching.observe(at(20), vec![]);
        // A table created by the migration itself does not count.
        watching.observe(at(30), vec![access_exclusive(9, "CREATE")]);
        watching.observe(
            at(60),
            vec![access_exclusive(2, "LOCK"), access_exclusive(9, "x")],
        );
        watching.observe(at(65), vec![access_exclusive(2, "LOCK")]);
        let longest = watching.finish().unwrap();
        assert_eq!(
            (
                longest.table.as_str(),
                longest.held,
                longest.statement.as_str()
            ),
            ("users", Duration::from_millis(10), "ALTER a")
        );
    }

    /// A table and one of its indexes locked alike (a DROP INDEX, a rewrite), or a leader and
    /// its parallel workers, give several rows of one key in a sample: one lock, held on.
    #[test]
    fn rows_of_one_key_in_a_sample_are_one_lock() {
        let tables = HashMap::from([(1, "users".to_owned())]);
        let mut watching = Watching::new(7, tables);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let access_exclusive =
            |statement: &str| (1, "AccessExclusiveLock".to_owned(), statement.to_owned());
        watching.observe(at(0), vec![access_exclusive("DROP INDEX")]);
        for ms in (2..=200).step_by(2) {
            let twice = vec![access_exclusive("UPDATE"), access_exclusive("UPDATE")];
            watching.observe(at(ms), twice);
        }
        let longest = watching.finish().unwrap();
        assert_eq!(
            (longest.held, longest.statement.as_str()),
            (Duration::from_millis(200), "DROP INDEX")
        );
    }
}
