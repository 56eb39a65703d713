//! Traces of the repository, captured by a global subscriber. Its own test binary: tracing
//! caches per-callsite interest process-wide, so a thread-local subscriber in a binary whose
//! other tests run in parallel could miss events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Captured, HASH, OTHER_HASH, new_user, repository};
use counseling_domain::{CreateUserError, PasswordHash, UserRepository};

#[tokio::test]
async fn traces_name_the_user_but_never_the_password_hash() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (_db, _database, users) = repository().await;
    let frank = users.create(new_user(r"\school\frank")).await.unwrap();
    users
        .update_password_hash(frank.id, PasswordHash::parse(OTHER_HASH).unwrap())
        .await
        .unwrap();
    assert_eq!(
        users.create(new_user(r"\school\FRANK")).await,
        Err(CreateUserError::UsernameTaken)
    );
    users.find_by_id(frank.id).await.unwrap();
    // A name may hold quotes and spaces, as a field of its own would be written.
    users
        .create(new_user(r#"\school\a" forged="x"#))
        .await
        .unwrap();

    let text = captured.take();
    assert!(!text.contains(r#" forged="x"#), "a forged field:\n{text}");
    // As a quoted, escaped string: a name's quotes and spaces cannot forge another field.
    assert!(
        text.contains(r#""\\school\\frank""#),
        "spans should name the user:\n{text}"
    );
    assert!(
        text.contains("UsernameTaken") || text.contains("already taken"),
        "{text}"
    );
    // A taken name is an answer, not a fault: nothing here is logged as an error (unexpected
    // errors are, once, where they are mapped).
    let errors: Vec<&str> = text.lines().filter(|line| line.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    for secret in [HASH, OTHER_HASH, &HASH[7..29], &OTHER_HASH[7..29]] {
        assert!(
            !text.contains(secret),
            "a password hash leaked into traces:\n{text}"
        );
    }
}
