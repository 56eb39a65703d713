use std::sync::Arc;

use crate::PgUserRepository;
use crate::session::Session;

/// One open transaction, handed to the closure of [`crate::Database::transaction`]. The
/// repositories it gives out read and write inside that transaction, through the same port as
/// outside one.
///
/// Cloning is cheap. Do not keep a clone beyond the closure: the connection stays checked out
/// until the last clone is gone.
#[derive(Debug, Clone)]
pub struct UnitOfWork {
    session: Arc<Session>,
}

impl UnitOfWork {
    pub(crate) fn new(session: Arc<Session>) -> Self {
        Self { session }
    }

    /// The users, inside this transaction.
    pub fn users(&self) -> PgUserRepository {
        PgUserRepository::in_transaction(Arc::clone(&self.session))
    }
}
