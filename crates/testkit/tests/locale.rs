//! Databases with a chosen locale really have it, and are migrated.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

use counseling_testkit::{DatabaseLocale, TestDatabase};
use sea_orm::sqlx::{self, Connection, PgConnection};

#[tokio::test]
async fn each_sample_locale_lowers_text_its_own_way_and_is_migrated() {
    // lower() follows the database's locale: the very dependence the identity key avoids.
    let expected = [
        (DatabaseLocale::Libc("C".into()), "Éi"),
        (DatabaseLocale::Libc("C.UTF-8".into()), "éi"),
        (DatabaseLocale::Icu("tr-TR".into()), "éı"),
    ];
    assert_eq!(
        expected.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(),
        DatabaseLocale::samples()
    );
    for (locale, lowered) in expected {
        let db = TestDatabase::migrated_with_locale(&locale).await.unwrap();
        let mut conn = PgConnection::connect_with(&db.options()).await.unwrap();
        let actual: String = sqlx::query_scalar("SELECT lower('ÉI')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(actual, lowered, "{locale}");
        let users: Option<String> = sqlx::query_scalar("SELECT to_regclass('users')::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(users.as_deref(), Some("users"), "{locale}");
    }
}
