//! bcrypt cost bounded to 12..=15 in the database, as in the domain (issue #12).
//!
//! Before, `ck_users_password_hash_format` accepted any two-digit cost, 00 included, and a stored
//! hash of cost 31 would make each sign-in against it take days of CPU. The check is replaced
//! (same name, so error mapping is unchanged) by one that accepts costs 12 to 15 only; see
//! `counseling_domain::MAX_BCRYPT_COST` for why 15. Rows that break the new rule are counted and
//! listed first, so the migration fails with a message that says what to fix (reset those users'
//! passwords) and changes nothing. `DOWN` restores the previous check exactly.

use sea_orm_migration::prelude::*;

#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000002_bcrypt_cost_bounds"
    }
}

const UP: &str = r#"
DO $check$
DECLARE
    offending bigint;
    listed text;
BEGIN
    SELECT count(*), string_agg(id::text, ', ' ORDER BY id) FILTER (WHERE rank <= 50)
      INTO offending, listed
      FROM (SELECT id, password_hash, row_number() OVER (ORDER BY id) AS rank
              FROM users WHERE password_hash !~ '^\$2[aby]\$1[2-5]\$') AS outside;
    IF offending > 0 THEN
        RAISE EXCEPTION '% users have a password hash of a bcrypt cost outside 12 to 15 '
            '(reset their passwords, then migrate again): %', offending, listed
            USING ERRCODE = 'check_violation';
    END IF;
END
$check$;

ALTER TABLE users
    DROP CONSTRAINT ck_users_password_hash_format,
    ADD CONSTRAINT ck_users_password_hash_format CHECK (
        password_hash ~ '^\$2[aby]\$1[2-5]\$[./A-Za-z0-9]{53}$'
    );
"#;

/// Restores the schema exactly as it was before `UP`.
const DOWN: &str = r#"
ALTER TABLE users
    DROP CONSTRAINT ck_users_password_hash_format,
    ADD CONSTRAINT ck_users_password_hash_format CHECK (
        password_hash ~ '^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$'
    );
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
