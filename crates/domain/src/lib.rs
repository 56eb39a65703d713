//! The domain of the counseling platform's user store: who a user is, which usernames and
//! password hashes are acceptable, and the port through which users are stored.
//!
//! Nothing here performs I/O or knows about a database or the web: adapters (the persistence
//! crate) implement [`UserRepository`], and the HTTP layer talks to that trait.

mod password_hash;
mod user;
mod user_repository;
mod username;
mod username_characters;

pub use password_hash::{
    BCRYPT_COST, MAX_BCRYPT_COST, MAX_PASSWORD_BYTES, MIN_BCRYPT_COST, PasswordHash,
    PasswordHashError,
};
pub use user::{NewUser, User, UserId};
pub use user_repository::{
    Conflict, CreateUserError, DeleteUserError, StoreError, TlsFailure, Unavailability,
    UpdateUserError, UserRepository,
};
pub use username::{MAX_USERNAME_CHARS, Username, UsernameError, UsernamePart};
pub use username_characters::{
    BACKSLASH_LOOK_ALIKES, DATABASE_UNICODE_VERSION, NEWER_THAN_DATABASE, UNCOMPARABLE_IN_DATABASE,
    USERNAME_UNICODE_VERSION, is_newer_than_database,
};
