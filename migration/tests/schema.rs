//! The users schema, read back from PostgreSQL's catalog, and every constraint exercised.
//! (The username identity migration's own cases are in `username_identity.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should abort the test

mod common;

use common::{HASH, connect, insert, newest_first_from, rows, strings};
use counseling_testkit::TestDatabase;
use migration::sea_orm::sqlx::{self, PgConnection};

async fn assert_schema_present(conn: &mut PgConnection) {
    let columns = rows(
        conn,
        "SELECT column_name::text, data_type::text, character_maximum_length::text, \
                is_nullable::text, column_default::text \
         FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
    )
    .await;
    assert_eq!(
        columns,
        strings(&[
            &[
                Some("id"),
                Some("uuid"),
                None,
                Some("NO"),
                Some("gen_random_uuid()")
            ],
            &[
                Some("username"),
                Some("character varying"),
                Some("255"),
                Some("NO"),
                None
            ],
            &[
                Some("password_hash"),
                Some("character varying"),
                Some("255"),
                Some("NO"),
                None
            ],
            &[
                Some("is_blocked"),
                Some("boolean"),
                None,
                Some("NO"),
                Some("false")
            ],
            &[
                Some("created_at"),
                Some("timestamp with time zone"),
                None,
                Some("NO"),
                Some("now()")
            ],
            &[
                Some("updated_at"),
                Some("timestamp with time zone"),
                None,
                Some("NO"),
                Some("now()")
            ],
            // Filled by a trigger from username_identity() when a writer leaves it out, for the
            // previous release until a contract migration drops it.
            &[Some("username_key"), Some("text"), None, Some("YES"), None],
        ])
    );
    // Byte order under the identity index, whatever the database's collation.
    let key_collation = rows(
        conn,
        "SELECT collation_name::text FROM information_schema.columns \
         WHERE table_name = 'users' AND column_name = 'username_key'",
    )
    .await;
    assert_eq!(key_collation, strings(&[&[Some("C")]]));

    let constraints = rows(
        conn,
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = 'users'::regclass ORDER BY conname",
    )
    .await;
    assert_eq!(constraints.len(), 14, "{constraints:?}");
    let definition = |name: &str| -> String {
        constraints
            .iter()
            .find(|row| row[0].as_deref() == Some(name))
            .and_then(|row| row[1].clone())
            .unwrap_or_else(|| panic!("constraint {name} missing: {constraints:?}"))
    };
    assert_eq!(definition("users_pkey"), "PRIMARY KEY (id)");
    let username_check = definition("ck_users_username_format");
    assert!(
        username_check.contains(r"'^\\[^\\]+\\[^\\]+$'"),
        "{username_check}"
    );
    assert!(username_check.contains(r"!~"), "{username_check}");
    assert_eq!(
        definition("ck_users_username_nfc"),
        "CHECK ((username IS NFC NORMALIZED))"
    );
    let characters_check = definition("ck_users_username_characters");
    assert!(
        characters_check.contains(r"!~ '[\u0001-\u001f\u007f-\u009f\u00ad"),
        "{characters_check}"
    );
    assert_eq!(
        definition("ck_users_username_key_length"),
        "CHECK ((octet_length(username_key) <= 2048))"
    );
    assert_eq!(
        definition("ck_users_username_identity_format"),
        r"CHECK ((username_identity((username)::text) ~ '^\\[^\\]+\\[^\\]+$'::text))"
    );
    assert_eq!(
        definition("ck_users_username_identity_length"),
        "CHECK ((octet_length(username_identity((username)::text)) <= 2048))"
    );
    let trimmed = definition("ck_users_username_parts_trimmed");
    assert!(
        trimmed.contains(r"!~ '\\[\u0009-\u000d\u0020\u0085\u00a0"),
        "{trimmed}"
    );
    let ignorables = definition("ck_users_username_no_ignorables");
    assert!(
        ignorables.contains(r"!~ '[\u00ad\u034f\u061c\u115f-\u1160"),
        "{ignorables}"
    );
    let hash_check = definition("ck_users_password_hash_format");
    assert!(
        hash_check.contains(r"'^\$2[aby]\$1[2-5]\$[./A-Za-z0-9]{53}$'"),
        "{hash_check}"
    );
    let canonical = definition("ck_users_password_hash_unused_bits_zero");
    assert!(
        canonical.contains(
            "substr((password_hash)::text, 29, 1) = ANY (ARRAY['.'::text, 'O'::text, 'e'::text, \
             'u'::text])"
        ),
        "{canonical}"
    );

    let newer = definition("ck_users_username_unicode_14");
    assert!(newer.contains(r"!~ '[\u0897\u0cf3"), "{newer}");
    assert_eq!(
        definition("ck_users_username_hangul_o_yae"),
        r"CHECK (((username)::text !~ '[\u11a7]'::text))"
    );
    // Read in UTC (the driver's session time zone): each bound an instant, whatever the zone of
    // the session that made the check.
    let [from, to] = ["'1970-01-01 00:00:00+00'", "'10000-01-01 00:00:00+00'"]
        .map(|instant| format!("{instant}::timestamp with time zone"));
    assert_eq!(
        definition("ck_users_timestamps_in_range"),
        format!(
            "CHECK (((created_at >= {from}) AND (created_at < {to}) AND \
             (updated_at >= {from}) AND (updated_at < {to})))"
        )
    );

    let indexes = rows(
        conn,
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'users' ORDER BY indexname",
    )
    .await;
    assert_eq!(
        indexes,
        strings(&[
            &[
                Some("idx_users_is_blocked"),
                Some(
                    "CREATE INDEX idx_users_is_blocked ON public.users USING btree (is_blocked) WHERE is_blocked"
                ),
            ],
            &[
                Some("idx_users_username"),
                Some(
                    "CREATE UNIQUE INDEX idx_users_username ON public.users USING btree (username_key)"
                ),
            ],
            &[
                Some("idx_users_username_identity"),
                Some(
                    r#"CREATE UNIQUE INDEX idx_users_username_identity ON public.users USING btree (username_identity((username)::text) COLLATE "C")"#
                ),
            ],
            &[
                Some("users_pkey"),
                Some("CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)"),
            ],
        ])
    );

    let triggers = rows(
        conn,
        "SELECT tgname::text, pg_get_triggerdef(oid) FROM pg_trigger \
         WHERE tgrelid = 'users'::regclass AND NOT tgisinternal ORDER BY tgname",
    )
    .await;
    assert_eq!(
        triggers,
        strings(&[
            &[
                Some("trg_users_fill_username_key"),
                Some(
                    "CREATE TRIGGER trg_users_fill_username_key BEFORE INSERT OR UPDATE OF username, username_key ON public.users FOR EACH ROW EXECUTE FUNCTION users_fill_username_key()"
                ),
            ],
            &[
                Some("trg_users_keep_id_and_created_at"),
                Some(
                    "CREATE TRIGGER trg_users_keep_id_and_created_at BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION users_keep_id_and_created_at()"
                ),
            ],
            &[
                Some("trg_users_set_updated_at"),
                Some(
                    "CREATE TRIGGER trg_users_set_updated_at BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
                ),
            ],
        ])
    );
    // Every index usable, every check validated.
    assert_eq!(
        rows(
            conn,
            "SELECT count(*)::text FROM pg_index WHERE indrelid = 'users'::regclass AND NOT indisvalid",
        )
        .await,
        strings(&[&[Some("0")]])
    );
    assert_eq!(
        rows(
            conn,
            "SELECT count(*)::text FROM pg_constraint WHERE conrelid = 'users'::regclass AND NOT convalidated",
        )
        .await,
        strings(&[&[Some("0")]])
    );
}

async fn count(conn: &mut PgConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

#[tokio::test]
async fn up_down_up_creates_removes_and_recreates_everything() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let mut conn = connect(&db).await;

    let all = migration::migrations().len();
    assert_eq!(migration::apply_pending(&orm).await.unwrap(), all);
    assert_schema_present(&mut conn).await;
    // Applying again is a no-op.
    assert_eq!(migration::apply_pending(&orm).await.unwrap(), 0);
    let status = migration::status(&orm).await.unwrap();
    assert_eq!(status.len(), all);
    assert!(status.iter().all(|migration| migration.is_applied()));

    let rolled_back = migration::roll_back(&orm, all as u32).await.unwrap();
    assert_eq!(
        rolled_back,
        newest_first_from("m20251220_000001_create_users")
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM pg_class WHERE relname = 'users'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        )
        .await,
        0,
        "set_updated_at, username_identity, users_fill_username_key: gone"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'trg_users_set_updated_at'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'idx_users_%'"
        )
        .await,
        0
    );
    assert!(!migration::status(&orm).await.unwrap()[0].is_applied());
    // Nothing left to roll back is not an error.
    assert!(migration::roll_back(&orm, 1).await.unwrap().is_empty());

    assert_eq!(migration::apply_pending(&orm).await.unwrap(), all);
    assert_schema_present(&mut conn).await;
}

#[tokio::test]
async fn usernames_are_unique_ignoring_case() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect(&db).await;
    insert(&mut conn, r"\school\alice", HASH).await.unwrap();
    assert_eq!(
        insert(&mut conn, r"\school\alice", HASH).await,
        Err("23505".into())
    );
    assert_eq!(
        insert(&mut conn, r"\SCHOOL\Alice", HASH).await,
        Err("23505".into())
    );
    insert(&mut conn, r"\école\Zoë", HASH).await.unwrap();
    assert_eq!(
        insert(&mut conn, r"\ÉCOLE\ZOË", HASH).await,
        Err("23505".into())
    );
    // A different user in the same domain is fine.
    insert(&mut conn, r"\school\bob", HASH).await.unwrap();
}

#[tokio::test]
async fn malformed_usernames_are_rejected_by_the_check() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect(&db).await;
    for bad in [
        "",
        "alice",
        r"school\alice",
        r"\alice",
        r"\\alice",
        r"\school\",
        r"\school\alice\x",
        "\\school\\al\tice",
        "\\school\\alice\n",
        "\\sch\u{7f}ool\\a",
        "\\s\\a\u{85}",
    ] {
        assert_eq!(
            insert(&mut conn, bad, HASH).await,
            Err("23514".into()),
            "{bad:?}"
        );
    }
    let too_long = format!(r"\d\{}", "a".repeat(253));
    assert_eq!(
        insert(&mut conn, &too_long, HASH).await,
        Err("22001".into())
    );
    let longest = format!(r"\d\{}", "é".repeat(252));
    insert(&mut conn, &longest, HASH).await.unwrap();
    for good in [r"\my school\anne marie", r"\école\Zoë", r"\d\u"] {
        insert(&mut conn, good, HASH).await.unwrap();
    }
}

#[tokio::test]
async fn only_bcrypt_hashes_can_be_stored() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect(&db).await;
    let not_hashes = [
        "hunter2".to_owned(),
        String::new(),
        format!("$2x$12${}", &HASH[7..]),
        format!("{HASH}x"),
        HASH[..59].to_owned(),
        format!("$2b$12${}!", &HASH[7..59]),
        // Costs outside 12..=15, the domain's bounds (bcrypt itself allows 04 to 31).
        format!("$2b$00${}", &HASH[7..]),
        format!("$2b$04${}", &HASH[7..]),
        format!("$2b$11${}", &HASH[7..]),
        format!("$2b$16${}", &HASH[7..]),
        format!("$2b$31${}", &HASH[7..]),
    ];
    for (i, bad) in not_hashes.iter().enumerate() {
        let username = format!(r"\school\user{i}");
        assert_eq!(
            insert(&mut conn, &username, bad).await,
            Err("23514".into()),
            "{bad:?}"
        );
    }
    for (i, prefix) in ["$2a$12$", "$2b$13$", "$2y$12$", "$2b$14$", "$2b$15$"]
        .iter()
        .enumerate()
    {
        insert(
            &mut conn,
            &format!(r"\school\ok{i}"),
            &format!("{prefix}{}", &HASH[7..]),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn defaults_apply_and_update_bumps_updated_at_only() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect(&db).await;
    insert(&mut conn, r"\school\carol", HASH).await.unwrap();
    // Epoch seconds as float8: microsecond precision, and no chrono dependency here.
    let (blocked, created, updated): (bool, f64, f64) = sqlx::query_as(
        "SELECT is_blocked, extract(epoch from created_at)::float8, extract(epoch from updated_at)::float8 \
         FROM users WHERE username = $1",
    )
    .bind(r"\school\carol")
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!blocked);
    assert_eq!(created, updated);

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Even an UPDATE that tries to keep the old updated_at gets a new one.
    sqlx::query("UPDATE users SET is_blocked = true, updated_at = updated_at WHERE username = $1")
        .bind(r"\school\carol")
        .execute(&mut conn)
        .await
        .unwrap();
    let (created_after, updated_after): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch from created_at)::float8, extract(epoch from updated_at)::float8 \
         FROM users WHERE username = $1",
    )
    .bind(r"\school\carol")
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(created_after, created);
    assert!(
        updated_after > updated,
        "{updated_after} should be after {updated}"
    );
}
