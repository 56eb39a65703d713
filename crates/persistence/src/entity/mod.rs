//! SeaORM entities: one per table, matching the migrations exactly.

pub mod users;
