//! What a check found, the rules it applies, and the table a reviewer reads.

use std::fmt::Write as _;
use std::time::Duration;

use crate::CheckOptions;

/// Which run of the migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Up,
    /// Forced: tables holding rows are dropped (the database is scratch).
    Down,
    UpAgain,
}

impl std::fmt::Display for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pass::Up => "up",
            Pass::Down => "down (forced)",
            Pass::UpAgain => "up again",
        })
    }
}

/// The longest time one lock that blocks reads or writes was held on a table that existed
/// before the migration (as sampled: at least this long, less than two sampling intervals
/// longer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    pub table: String,
    pub mode: String,
    pub held: Duration,
    /// What the backend was running when the lock was first seen.
    pub statement: String,
}

/// One statement (as `pg_stat_statements` normalises it) a migration ran, nested ones included.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementFigure {
    pub text: String,
    pub calls: i64,
    pub total: Duration,
}

/// One migration in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationFigures {
    pub pass: Pass,
    pub name: String,
    pub duration: Duration,
    pub longest_lock: Option<HeldLock>,
    /// `lock_timeout` as the migration left it (the runner's, unless it changed it).
    pub lock_timeout_ms: Option<u64>,
    pub statements: Vec<StatementFigure>,
    /// False when the statistics queries at its start failed: its locks and statements were
    /// not watched, so nothing says it passes.
    pub watched: bool,
}

/// Everything a check measured, with the rules it was held to.
#[derive(Debug, Clone)]
pub struct Report {
    pub users: u64,
    pub threshold: Duration,
    pub lock_timeout_ms: u64,
    pub sample_every: Duration,
    pub known_exceptions: Vec<String>,
    pub migrations: Vec<MigrationFigures>,
}

/// One line of SQL, at most `width` characters.
pub(crate) fn one_line(sql: &str, width: usize) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= width {
        line
    } else {
        let cut: String = line.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

pub(crate) fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

/// A held lock's time: seen in one sample only, it lasted less than two sampling intervals.
pub(crate) fn held(lock: &HeldLock, every: Duration) -> String {
    if lock.held.is_zero() {
        format!("under {} (one sample)", ms(every * 2))
    } else {
        ms(lock.held)
    }
}

impl Report {
    pub(crate) fn new(options: &CheckOptions) -> Self {
        Self {
            users: options.users,
            threshold: options.threshold(),
            lock_timeout_ms: migration::RunOptions {
                lock_timeout: options.lock_timeout,
                force: false,
                ..migration::RunOptions::default()
            }
            .lock_timeout_ms(),
            sample_every: options.sample_every,
            known_exceptions: options.known_exceptions.clone(),
            migrations: Vec::new(),
        }
    }

    fn is_known_exception(&self, name: &str) -> bool {
        self.known_exceptions.iter().any(|known| known == name)
    }

    /// Why a migration fails the check (empty: it passes).
    fn failures_of(&self, figures: &MigrationFigures) -> Vec<String> {
        let mut failures = Vec::new();
        let name = &figures.name;
        // Going down too: a rollback runs while the service serves, as a deploy does.
        if !self.is_known_exception(name)
            && let Some(held) = &figures.longest_lock
            && held.held > self.threshold
        {
            failures.push(format!(
                "{name} ({}) held {} on {} for {} (more than {}) while running: {}",
                figures.pass,
                held.mode,
                held.table,
                ms(held.held),
                ms(self.threshold),
                one_line(&held.statement, 120)
            ));
        }
        if !figures.watched {
            failures.push(format!(
                "{name} ({}): its locks and statements could not be watched (a statistics \
                 query failed at its start)",
                figures.pass
            ));
        }
        match figures.lock_timeout_ms {
            Some(left) if left == self.lock_timeout_ms => {}
            Some(left) => failures.push(format!(
                "{name} ({}) changed the runner's lock_timeout: it set {} ms, the migration left {} ms{}",
                figures.pass,
                self.lock_timeout_ms,
                left,
                if left == 0 { " (no timeout)" } else { "" }
            )),
            None => failures.push(format!(
                "{name} ({}): its lock_timeout could not be read",
                figures.pass
            )),
        }
        if let Some(statement) = figures
            .statements
            .iter()
            .find(|statement| statement.text.to_lowercase().contains("lock_timeout"))
        {
            failures.push(format!(
                "{name} ({}) sets lock_timeout itself: {}",
                figures.pass,
                one_line(&statement.text, 120)
            ));
        }
        // pg_stat_statements keeps `set_config($1, $2, $3)` and `update pg_settings set
        // setting = $1 where name = $2` without the setting's name, so either could turn
        // lock_timeout off and back on unseen by the rule above.
        if let Some(statement) = figures.statements.iter().find(|statement| {
            let text = statement.text.to_lowercase();
            text.contains("set_config") || text.contains("pg_settings")
        }) {
            failures.push(format!(
                "{name} ({}) changes a setting through set_config or pg_settings, which the \
                 statistics do not name (it may be lock_timeout): use SET LOCAL, which the check \
                 can read: {}",
                figures.pass,
                one_line(&statement.text, 120)
            ));
        }
        failures
    }

    /// Every broken rule, one line each; empty when the check passes.
    pub fn failures(&self) -> Vec<String> {
        self.migrations
            .iter()
            .flat_map(|figures| self.failures_of(figures))
            .collect()
    }

    /// The table a reviewer reads, then each migration's statements (Markdown).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "migrate-check: {} users, runner lock_timeout {} ms, locks sampled every {}; a \
             migration, going up or down, may block reads or writes of an existing table for at most {} \
             (released migrations excepted)\n",
            self.users,
            self.lock_timeout_ms,
            ms(self.sample_every),
            ms(self.threshold)
        );
        out.push_str(
            "| pass | migration | duration | longest lock blocking reads or writes of an existing table | verdict |\n\
             |---|---|---|---|---|\n",
        );
        for figures in &self.migrations {
            let lock = figures.longest_lock.as_ref().map_or_else(
                || "none".to_owned(),
                |lock| {
                    format!(
                        "{} on {} for {} (`{}`)",
                        lock.mode,
                        lock.table,
                        held(lock, self.sample_every),
                        one_line(&lock.statement, 60).replace('|', "\\|")
                    )
                },
            );
            let failures = self.failures_of(figures);
            let verdict = if !failures.is_empty() {
                "**FAIL**"
            } else if self.is_known_exception(&figures.name) {
                "ok (released: figures only)"
            } else {
                "ok"
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {lock} | {verdict} |",
                figures.pass,
                figures.name,
                ms(figures.duration)
            );
        }
        out.push_str("\nStatements of each migration (pg_stat_statements, nested ones too, longest first):\n");
        for figures in &self.migrations {
            let _ = writeln!(out, "\n{} ({}):", figures.name, figures.pass);
            for statement in figures.statements.iter().take(10) {
                let _ = writeln!(
                    out,
                    "  {:>9}  {:>7} call(s)  {}",
                    ms(statement.total),
                    statement.calls,
                    one_line(&statement.text, 100)
                );
            }
            if figures.statements.len() > 10 {
                let _ = writeln!(out, "  ... and {} more", figures.statements.len() - 10);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(pass: Pass, name: &str, held_ms: u64, lock_timeout_ms: u64) -> MigrationFigures {
        MigrationFigures {
            pass,
            name: name.to_owned(),
            duration: Duration::from_millis(held_ms + 5),
            longest_lock: Some(HeldLock {
                table: "users".into(),
                mode: "ShareLock".into(),
                held: Duration::from_millis(held_ms),
                statement: "CREATE INDEX\n  bad ON users (username)".into(),
            }),
            lock_timeout_ms: Some(lock_timeout_ms),
            statements: vec![StatementFigure {
                text: "CREATE INDEX bad ON users (username)".into(),
                calls: 1,
                total: Duration::from_millis(held_ms),
            }],
            watched: true,
        }
    }

    /// The lock timeout the runner sets by default, which a migration must leave as it is.
    fn set_ms() -> u64 {
        u64::try_from(migration::DEFAULT_LOCK_TIMEOUT.as_millis()).unwrap()
    }

    #[test]
    fn a_migration_that_could_not_be_watched_fails() {
        let mut report = Report::new(&CheckOptions::default());
        let mut unwatched = figures(Pass::Up, "m_new", 1, set_ms());
        unwatched.watched = false;
        unwatched.longest_lock = None;
        report.migrations = vec![unwatched];
        let failures = report.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("could not be watched"), "{failures:?}");
    }

    #[test]
    fn the_rules_apply_both_ways_to_new_migrations_and_lock_timeout_to_all() {
        let mut report = Report::new(&CheckOptions {
            threshold: Some(Duration::from_secs(1)),
            ..CheckOptions::default()
        });
        report.migrations = vec![
            figures(Pass::Up, "m_new_slow", 1500, set_ms()),
            // A released migration: its locks are figures only, but the lock_timeout it leaves
            // is checked like every other's.
            figures(
                Pass::Up,
                "m20261130_000001_username_identity",
                9000,
                set_ms(),
            ),
            figures(Pass::Up, "m20261130_000002_bcrypt_cost_bounds", 9000, 0),
            figures(Pass::Down, "m_new_slow", 9000, 0),
            figures(Pass::UpAgain, "m_new_fast", 20, 0),
        ];
        let failures = report.failures();
        assert_eq!(failures.len(), 5, "{failures:#?}");
        assert!(
            failures[2]
                .starts_with("m_new_slow (down (forced)) held ShareLock on users for 9000 ms"),
            "{}",
            failures[2]
        );
        for (failure, migration) in [&failures[1], &failures[3], &failures[4]].into_iter().zip([
            "m20261130_000002_bcrypt_cost_bounds (up)",
            "m_new_slow (down (forced))",
            "m_new_fast (up again)",
        ]) {
            assert!(
                failure.starts_with(&format!("{migration} changed the runner's lock_timeout")),
                "{failure}"
            );
        }
        assert!(
            failures[0].starts_with("m_new_slow (up) held ShareLock on users for 1500 ms"),
            "{}",
            failures[0]
        );
        assert!(failures[0].ends_with("CREATE INDEX bad ON users (username)"));
        assert!(
            failures[4].contains(&format!(
                "changed the runner's lock_timeout: it set {} ms, the migration left 0 ms",
                set_ms()
            )),
            "{}",
            failures[4]
        );
        let table = report.render();
        assert!(table.contains("| up | m_new_slow | 1505 ms | ShareLock on users for 1500 ms"));
        assert!(table.contains("| **FAIL** |"), "{table}");
        assert!(table.contains("ok (released: figures only)"), "{table}");
    }

    #[test]
    fn the_default_threshold_grows_with_the_users() {
        let threshold = |users| {
            CheckOptions {
                users,
                ..CheckOptions::default()
            }
            .threshold()
        };
        assert_eq!(threshold(100_000), Duration::from_millis(20));
        assert_eq!(threshold(1_000_000), Duration::from_millis(200));
        assert_eq!(threshold(1_000), Duration::from_millis(10));
    }

    #[test]
    fn a_statement_mentioning_lock_timeout_fails_even_if_the_setting_is_restored() {
        let mut report = Report::new(&CheckOptions::default());
        let mut sneaky = figures(Pass::Up, "m_new", 1, set_ms());
        sneaky.statements.push(StatementFigure {
            text: "SET LOCAL lock_timeout = 0".into(),
            calls: 1,
            total: Duration::ZERO,
        });
        report.migrations = vec![sneaky];
        assert_eq!(report.failures().len(), 1);
    }

    /// As pg_stat_statements keeps `select set_config('lock_timeout', '0', true)` and
    /// `UPDATE pg_settings SET setting = '0' WHERE name = 'lock_timeout'`.
    #[test]
    fn a_setting_changed_where_its_name_is_not_shown_fails() {
        for text in [
            "select set_config($1,$2,$3)",
            "update pg_settings set setting = $1 where name = $2",
        ] {
            let mut report = Report::new(&CheckOptions::default());
            let mut sneaky = figures(Pass::Up, "m_new", 1, set_ms());
            sneaky.statements.push(StatementFigure {
                text: text.into(),
                calls: 1,
                total: Duration::ZERO,
            });
            report.migrations = vec![sneaky];
            let failures = report.failures();
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert!(
                failures[0].contains("through set_config or pg_settings"),
                "{failures:?}"
            );
        }
    }
}
