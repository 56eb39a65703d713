use counseling_domain::{
    NewUser, PasswordHash, RepositoryError, User, UserId, UserRepository, Username,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use crate::Database;
use crate::entity::users::{ActiveModel, Column, Entity as Users, Model};
use crate::error_mapping::from_db_err;

/// [`UserRepository`] on PostgreSQL through SeaORM.
#[derive(Debug, Clone)]
pub struct PgUserRepository {
    database: Database,
}

impl PgUserRepository {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    async fn find_one(&self, query: Select<Users>) -> Result<Option<User>, RepositoryError> {
        self.database
            .run(move |db| async move {
                query
                    .one(&db)
                    .await
                    .map_err(|error| from_db_err(&error))?
                    .map(to_domain)
                    .transpose()
            })
            .await
    }

    async fn update_returning(
        &self,
        id: UserId,
        column: Column,
        value: sea_orm::Value,
    ) -> Result<User, RepositoryError> {
        self.database
            .run(move |db| async move {
                let updated = Users::update_many()
                    .col_expr(column, Expr::value(value))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec_with_returning(&db)
                    .await
                    .map_err(|error| from_db_err(&error))?;
                updated
                    .into_iter()
                    .next()
                    .ok_or(RepositoryError::NotFound)
                    .and_then(to_domain)
            })
            .await
    }
}

/// A stored row as a domain user. The database's checks are looser than the domain's rules in
/// places (surrounding spaces), so a row written around this adapter may not parse.
fn to_domain(model: Model) -> Result<User, RepositoryError> {
    let corrupt =
        |what: &str| RepositoryError::Unexpected(format!("stored {what} breaks the domain rules"));
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

impl UserRepository for PgUserRepository {
    // Spans name the user, never the password hash.
    #[tracing::instrument(skip_all, fields(username = %new_user.username), err(Display))]
    async fn create(&self, new_user: NewUser) -> Result<User, RepositoryError> {
        let row = ActiveModel {
            username_key: ActiveValue::Set(new_user.username.identity_key().to_owned()),
            username: ActiveValue::Set(new_user.username.into_string()),
            password_hash: ActiveValue::Set(new_user.password_hash.expose().to_owned()),
            ..Default::default()
        };
        self.database
            .run(move |db| async move {
                let stored = Users::insert(row)
                    .exec_with_returning(&db)
                    .await
                    .map_err(|error| from_db_err(&error))?;
                to_domain(stored)
            })
            .await
    }

    #[tracing::instrument(skip(self), err(Display))]
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, RepositoryError> {
        self.find_one(Users::find_by_id(id.as_uuid())).await
    }

    #[tracing::instrument(skip(self), fields(username = %username), err(Display))]
    async fn find_by_username(&self, username: &Username) -> Result<Option<User>, RepositoryError> {
        // username_key = $1: the column of idx_users_username, so the lookup uses that index and
        // agrees exactly with what the index considers a duplicate, whatever the server's locale.
        let key = username.identity_key().to_owned();
        self.find_one(Users::find().filter(Column::UsernameKey.eq(key)))
            .await
    }

    #[tracing::instrument(skip(self), err(Display))]
    async fn set_blocked(&self, id: UserId, blocked: bool) -> Result<User, RepositoryError> {
        self.update_returning(id, Column::IsBlocked, blocked.into())
            .await
    }

    #[tracing::instrument(skip(self, password_hash), err(Display))]
    async fn update_password_hash(
        &self,
        id: UserId,
        password_hash: PasswordHash,
    ) -> Result<User, RepositoryError> {
        let value = password_hash.expose().to_owned().into();
        self.update_returning(id, Column::PasswordHash, value).await
    }

    #[tracing::instrument(skip(self), err(Display))]
    async fn list(&self, after: Option<UserId>, limit: u64) -> Result<Vec<User>, RepositoryError> {
        let mut query = Users::find().order_by_asc(Column::Id).limit(limit);
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after.as_uuid()));
        }
        self.database
            .run(move |db| async move {
                query
                    .all(&db)
                    .await
                    .map_err(|error| from_db_err(&error))?
                    .into_iter()
                    .map(to_domain)
                    .collect()
            })
            .await
    }

    #[tracing::instrument(skip(self), err(Display))]
    async fn delete(&self, id: UserId) -> Result<(), RepositoryError> {
        self.database
            .run(move |db| async move {
                let result = Users::delete_by_id(id.as_uuid())
                    .exec(&db)
                    .await
                    .map_err(|error| from_db_err(&error))?;
                if result.rows_affected == 0 {
                    return Err(RepositoryError::NotFound);
                }
                Ok(())
            })
            .await
    }
}
