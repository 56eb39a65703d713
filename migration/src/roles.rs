//! The two roles every database of this application has, and what each may do: the owner runs
//! these migrations (owns the schema and its tables), the service's role reads and writes rows
//! of those tables and nothing else (no DDL, no `CREATE` on the schema, not a superuser).
//!
//! One definition, used wherever a database is created by code (the test kit's databases, the
//! local cluster of `just dev`, the HA stack); compose's `docker/initdb/03-roles.sql` states the
//! same in SQL.

/// The statements that give `owner` the schema and `service` the rows of whatever `owner`
/// creates in `database`, run as a superuser (or the database's owner) connected to `database`.
pub fn grant_statements(database: &str, owner: &str, service: &str) -> Vec<String> {
    let mut statements = database_statements(database, owner, service);
    statements.extend(schema_statements(owner, service));
    statements
}

/// The part of [`grant_statements`] that belongs to the database itself (who may connect), which
/// `CREATE DATABASE ... TEMPLATE` does not copy; can run from any database of the server.
pub fn database_statements(database: &str, owner: &str, service: &str) -> Vec<String> {
    let (database, owner, service) = (quoted(database), quoted(owner), quoted(service));
    vec![
        format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {database} TO {owner}, {service}"),
    ]
}

/// The part of [`grant_statements`] inside the database (schema and default privileges), which a
/// clone of the database inherits; must run connected to it.
pub fn schema_statements(owner: &str, service: &str) -> Vec<String> {
    let (owner, service) = (quoted(owner), quoted(service));
    vec![
        "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("ALTER SCHEMA public OWNER TO {owner}"),
        format!("GRANT USAGE ON SCHEMA public TO {service}"),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public \
             GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {service}"
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public \
             GRANT USAGE, SELECT ON SEQUENCES TO {service}"
        ),
    ]
}

/// `name` as a quoted SQL identifier.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_so_nothing_breaks_out_of_an_identifier() {
        let statements = grant_statements("db", "own\"er", "svc");
        assert!(statements[1].contains(r#""own""er""#), "{}", statements[1]);
    }
}
