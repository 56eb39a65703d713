use std::sync::{Arc, LazyLock};

use counseling_domain::{
    CreateUserError, DeleteUserError, NewUser, PasswordHash, StoreError, UpdateUserError, User,
    UserId, UserRepository, Username,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue, ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Select, Statement,
};

use crate::Database;
use crate::database::SessionWork;
use crate::database_metrics::{Operation, Outcome, Recording};
use crate::entity::users::{ActiveModel, Column, Entity as Users, Model};
use crate::error_mapping::{Failure, aborts_transaction, from_db_err};
use crate::session::{Session, is_refusal};

/// The lookup by account identity, as `idx_users_username_identity` indexes it: the database
/// computes the identity of the stored name and of the parameter with its one function, so
/// nothing here repeats the rule. `COLLATE "C"` matches the index's collation (without it the
/// planner may not use the index: the comparison would be in the database's default collation).
const IDENTITY_MATCHES: &str =
    r#"username_identity("users"."username") COLLATE "C" = username_identity($1)"#;

/// `SELECT <every column> FROM users WHERE <IDENTITY_MATCHES> LIMIT $2` with `$2` = 1, built once
/// by SeaORM; each lookup puts the name in `$1`. A lookup by name is sign-in's hot path, and
/// building the statement anew showed in its profile (sea-query's builder, copies of the
/// statement).
static FIND_BY_USERNAME: LazyLock<Statement> = LazyLock::new(|| {
    Users::find()
        .filter(Expr::cust_with_values(IDENTITY_MATCHES, [String::new()]))
        .limit(1)
        .build(DbBackend::Postgres)
});

/// [`UserRepository`] on PostgreSQL through SeaORM: on the pool (each call on a connection of its
/// own, within its own deadline) or inside a unit of work (see [`crate::UnitOfWork`]).
#[derive(Debug, Clone)]
pub struct PgUserRepository {
    /// The pool: where each call runs, or where the unit's connection came from; its metrics
    /// record every call.
    database: Database,
    executor: Executor,
}

#[derive(Debug, Clone)]
enum Executor {
    Pool,
    Transaction(Arc<Session>),
}

impl PgUserRepository {
    pub fn new(database: Database) -> Self {
        Self {
            database,
            executor: Executor::Pool,
        }
    }

    /// The SQL [`find_by_username`](UserRepository::find_by_username) sends (`$1` the name as
    /// given, `$2` = 1), for benchmarks and plan checks.
    pub fn find_by_username_sql() -> &'static str {
        &FIND_BY_USERNAME.sql
    }

    pub(crate) fn in_transaction(session: Arc<Session>, database: Database) -> Self {
        Self {
            database,
            executor: Executor::Transaction(session),
        }
    }

    /// Runs one call's statements: on a pooled connection of its own, or in the transaction.
    /// Every repository operation passes here, so here its duration and outcome are recorded.
    async fn run<T, W>(&self, operation: Operation, work: W) -> Result<T, Failure>
    where
        T: Send + 'static,
        W: for<'s> FnOnce(&'s Session) -> SessionWork<'s, T> + Send + 'static,
    {
        match &self.executor {
            // Recorded on the I/O runtime, where the call runs.
            Executor::Pool => self.database.call(work, Some(operation)).await,
            Executor::Transaction(session) => {
                let recording = Recording::start(self.database.clone(), Some(operation));
                // Dropped half-way, it is `abandoned`: the unit then never commits it.
                let outcome = Self::in_unit(session, operation, work).await;
                recording.finish(Outcome::of_result(&outcome));
                outcome
            }
        }
    }

    /// One call inside a unit of work, whose deadline bounds it.
    async fn in_unit<T, W>(
        session: &Arc<Session>,
        operation: Operation,
        work: W,
    ) -> Result<T, Failure>
    where
        W: for<'s> FnOnce(&'s Session) -> SessionWork<'s, T>,
    {
        let refused = || {
            tracing::error!("{USED_AFTER_ITS_UNIT}");
            Err(Failure::Store(StoreError::Unexpected(
                USED_AFTER_ITS_UNIT.into(),
            )))
        };
        // Kept past its unit: nothing may run outside the transaction it was made for.
        if session.has_ended() {
            return refused();
        }
        if operation.writes() {
            session.mark_written();
        }
        match work(session).await {
            Ok(value) => Ok(value),
            // The unit ended while this call waited for the connection: it ran nothing.
            Err(error) if is_refusal(&error) => refused(),
            Err(error) => {
                let failure = from_db_err(&error);
                session.discard_after(&failure);
                session.record_failed_call(Outcome::of_failure(&failure));
                if aborts_transaction(&error) {
                    session.mark_aborted();
                }
                Err(failure)
            }
        }
    }

    async fn find_one(
        &self,
        operation: Operation,
        query: Select<Users>,
    ) -> Result<Option<User>, StoreError> {
        let row = self
            .run(operation, move |session| {
                Box::pin(async move { query.one(session).await })
            })
            .await?;
        row.map(to_domain).transpose()
    }

    async fn update_returning(
        &self,
        operation: Operation,
        id: UserId,
        column: Column,
        value: sea_orm::Value,
    ) -> Result<User, UpdateUserError> {
        let row = self
            .run(operation, move |session| {
                Box::pin(async move {
                    let rows = Users::update_many()
                        .col_expr(column, Expr::value(value))
                        .filter(Column::Id.eq(id.as_uuid()))
                        .exec_with_returning(session)
                        .await?;
                    // No such user: SeaORM's own "nothing updated", which maps to `NotFound`
                    // (and is recorded as such).
                    rows.into_iter()
                        .next()
                        .ok_or(sea_orm::DbErr::RecordNotUpdated)
                })
            })
            .await?;
        Ok(to_domain(row)?)
    }
}

/// A stored row as a domain user. The database's checks are looser than the domain's rules in
/// places (surrounding spaces), so a row written around this adapter may not parse.
fn to_domain(model: Model) -> Result<User, StoreError> {
    let corrupt = |what: &str| {
        tracing::error!(what, "a stored row breaks the domain rules");
        StoreError::Unexpected(format!("stored {what} breaks the domain rules"))
    };
    Ok(User {
        id: UserId::from_uuid(model.id),
        username: Username::parse(model.username).map_err(|_| corrupt("username"))?,
        password_hash: PasswordHash::parse(model.password_hash)
            .map_err(|_| corrupt("password hash"))?,
        is_blocked: model.is_blocked,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

/// A repository of a unit of work called after the unit ended: a bug of the caller's.
const USED_AFTER_ITS_UNIT: &str =
    "a repository of a unit of work was used after the unit ended; the call ran nothing";

impl UserRepository for PgUserRepository {
    // Spans name the user, never the password hash.
    #[tracing::instrument(skip_all, fields(username = new_user.username.as_str()), err(level = "debug", Display))]
    async fn create(&self, new_user: NewUser) -> Result<User, CreateUserError> {
        let row = ActiveModel {
            username: ActiveValue::Set(new_user.username.into_string()),
            password_hash: ActiveValue::Set(new_user.password_hash.expose().to_owned()),
            ..Default::default()
        };
        let stored = self
            .run(Operation::Create, move |session| {
                Box::pin(async move { Users::insert(row).exec_with_returning(session).await })
            })
            .await?;
        Ok(to_domain(stored)?)
    }

    #[tracing::instrument(skip(self), err(level = "debug", Display))]
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.find_one(Operation::FindById, Users::find_by_id(id.as_uuid()))
            .await
    }

    #[tracing::instrument(skip(self), fields(username = username.as_str()), err(level = "debug", Display))]
    async fn find_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        let mut statement = FIND_BY_USERNAME.clone();
        match statement
            .values
            .as_mut()
            .map(|values| values.0.as_mut_slice())
        {
            Some([name, _limit]) => *name = username.as_str().into(),
            // A SeaORM that lays the statement out otherwise must not look up the wrong value.
            _ => {
                return Err(StoreError::Unexpected(
                    "the lookup by name has an unexpected shape".into(),
                ));
            }
        }
        let row = self
            .run(Operation::FindByUsername, move |session| {
                Box::pin(async move { Model::find_by_statement(statement).one(session).await })
            })
            .await?;
        row.map(to_domain).transpose()
    }

    #[tracing::instrument(skip(self), err(level = "debug", Display))]
    async fn set_blocked(&self, id: UserId, blocked: bool) -> Result<User, UpdateUserError> {
        self.update_returning(Operation::SetBlocked, id, Column::IsBlocked, blocked.into())
            .await
    }

    #[tracing::instrument(skip(self, password_hash), err(level = "debug", Display))]
    async fn update_password_hash(
        &self,
        id: UserId,
        password_hash: PasswordHash,
    ) -> Result<User, UpdateUserError> {
        let value = password_hash.expose().to_owned().into();
        self.update_returning(
            Operation::UpdatePasswordHash,
            id,
            Column::PasswordHash,
            value,
        )
        .await
    }

    #[tracing::instrument(skip(self), err(level = "debug", Display))]
    async fn list(&self, after: Option<UserId>, limit: u64) -> Result<Vec<User>, StoreError> {
        // PostgreSQL's LIMIT is a bigint: a larger limit means "all", and the driver could not
        // bind it (it would fail the call as a lost connection).
        let limit = limit.min(i64::MAX.unsigned_abs());
        let mut query = Users::find().order_by_asc(Column::Id).limit(limit);
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after.as_uuid()));
        }
        let rows = self
            .run(Operation::List, move |session| {
                Box::pin(async move { query.all(session).await })
            })
            .await?;
        rows.into_iter().map(to_domain).collect()
    }

    #[tracing::instrument(skip(self), err(level = "debug", Display))]
    async fn delete(&self, id: UserId) -> Result<(), DeleteUserError> {
        self.run(Operation::Delete, move |session| {
            Box::pin(async move {
                let result = Users::delete_by_id(id.as_uuid()).exec(session).await?;
                if result.rows_affected == 0 {
                    // No such user: maps to `NotFound` (and is recorded as such).
                    return Err(sea_orm::DbErr::RecordNotFound("user".into()));
                }
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_by_name_puts_the_name_first() {
        let statement = &*FIND_BY_USERNAME;
        assert!(
            statement.sql.ends_with(
                r#"WHERE username_identity("users"."username") COLLATE "C" = username_identity($1) LIMIT $2"#
            ),
            "{}",
            statement.sql
        );
        let values = statement.values.as_ref().map(|values| values.0.clone());
        assert_eq!(values, Some(vec![String::new().into(), 1u64.into()]));
    }
}
