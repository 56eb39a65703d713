use std::sync::Arc;

use crate::PgUserRepository;
use crate::database_metrics::DatabaseMetrics;
use crate::session::Session;

/// One open transaction, handed to the closure of [`crate::Database::transaction`]. The
/// repositories it gives out read and write inside that transaction, through the same port as
/// outside one.
///
/// Cloning is cheap. A repository kept beyond the closure runs nothing: its calls fail as
/// unexpected (the unit's connection went back to the pool when the unit ended).
#[derive(Debug, Clone)]
pub struct UnitOfWork {
    session: Arc<Session>,
    metrics: Arc<DatabaseMetrics>,
}

impl UnitOfWork {
    pub(crate) fn new(session: Arc<Session>, metrics: &Arc<DatabaseMetrics>) -> Self {
        Self {
            session,
            metrics: Arc::clone(metrics),
        }
    }

    /// The users, inside this transaction.
    pub fn users(&self) -> PgUserRepository {
        PgUserRepository::in_transaction(Arc::clone(&self.session), Arc::clone(&self.metrics))
    }
}
