//! A migration that changes the type of a column the service reads breaks the statements every
//! pooled connection prepared before it: the server refuses each with SQLSTATE 0A000 ("cached
//! plan must not change result type"), and the driver keeps them. The first call to meet one
//! fails; the pool then drops the connections that hold them, instead of failing one call after
//! another until each connection reaches its lifetime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{new_user, repository};
use counseling_domain::{StoreError, UserRepository};
use sea_orm::sqlx::{self, Connection, PgConnection};

#[tokio::test]
async fn after_a_column_changes_type_at_most_one_call_fails() {
    let (test_db, database, users) = repository().await;
    let alice = users.create(new_user(r"\school\alice")).await.unwrap();
    // Three connections, each with the lookup prepared (each unit holds its own until all have).
    let all_read = Arc::new(tokio::sync::Barrier::new(3));
    let units: Vec<_> = (0..3)
        .map(|_| {
            let (database, all_read, id) = (database.clone(), all_read.clone(), alice.id);
            tokio::spawn(async move {
                database
                    .transaction(move |unit| async move {
                        unit.users().find_by_id(id).await?;
                        all_read.wait().await;
                        Ok::<_, StoreError>(())
                    })
                    .await
            })
        })
        .collect();
    for unit in units {
        unit.await.unwrap().unwrap();
    }

    let mut owner = PgConnection::connect(&test_db.owner_url()).await.unwrap();
    sqlx::raw_sql("ALTER TABLE users ALTER COLUMN password_hash TYPE text")
        .execute(&mut owner)
        .await
        .unwrap();

    let mut failed = 0;
    for _ in 0..6 {
        match users.find_by_id(alice.id).await {
            Ok(found) => assert_eq!(found.unwrap().id, alice.id),
            Err(_) => failed += 1,
        }
    }
    assert!(failed <= 1, "{failed} of 6 lookups failed");
}
