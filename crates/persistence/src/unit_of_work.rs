use std::sync::Arc;

use crate::session::Session;
use crate::{Database, PgUserRepository};

/// One open transaction, handed to the closure of [`crate::Database::transaction`]. The
/// repositories it gives out read and write inside that transaction, through the same port as
/// outside one.
///
/// Cloning is cheap. A repository kept beyond the closure runs nothing: its calls fail as
/// unexpected (the unit's connection went back to the pool when the unit ended).
#[derive(Debug, Clone)]
pub struct UnitOfWork {
    session: Arc<Session>,
    /// The pool the unit's connection came from (whose metrics its calls record into).
    database: Database,
}

impl UnitOfWork {
    pub(crate) fn new(session: Arc<Session>, database: Database) -> Self {
        Self { session, database }
    }

    /// The users, inside this transaction.
    pub fn users(&self) -> PgUserRepository {
        PgUserRepository::in_transaction(Arc::clone(&self.session), self.database.clone())
    }
}
