//! The `users` table: accounts that sign in with `\domain\user` names and bcrypt hashes.
//!
//! Written as SQL rather than with the schema builder: the regex checks, the functional unique
//! index and the trigger are PostgreSQL features the builder cannot express, and one readable
//! script is easier to review against the specification than two halves in two styles.

use sea_orm_migration::prelude::*;

#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20251220_000001_create_users"
    }
}

/// In PostgreSQL's regex dialect a backslash is an escape inside brackets too, so `[^\\]` is
/// "not a backslash". The control-character range is Unicode's Cc category (U+0001-U+001F,
/// U+007F-U+009F; NUL cannot be stored in text at all), matching the domain's `char::is_control`.
const UP: &str = r#"
CREATE TABLE users (
    id            uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    username      varchar(255) NOT NULL,
    password_hash varchar(255) NOT NULL,
    is_blocked    boolean      NOT NULL DEFAULT false,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT ck_users_username_format CHECK (
        username ~ '^\\[^\\]+\\[^\\]+$'
        AND username !~ '[\u0001-\u001f\u007f-\u009f]'
    ),
    CONSTRAINT ck_users_password_hash_format CHECK (
        password_hash ~ '^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$'
    )
);

-- The only index on username: it enforces case-insensitive uniqueness and serves login lookups
-- (WHERE lower(username) = lower($1)). A plain UNIQUE(username) would be a second, weaker copy.
CREATE UNIQUE INDEX idx_users_username ON users (lower(username));

CREATE INDEX idx_users_is_blocked ON users (is_blocked) WHERE is_blocked;

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER trg_users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
"#;

const DOWN: &str = r#"
DROP TABLE users;
DROP FUNCTION set_updated_at();
"#;

/// Each down that drops a table holding rows asks first (see `refuse_to_drop_rows`).
const DROPPED_TABLE: &str = "users";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        connection
            .execute_unprepared(&crate::refuse_to_drop_rows(DROPPED_TABLE))
            .await?;
        connection.execute_unprepared(DOWN).await?;
        Ok(())
    }
}
