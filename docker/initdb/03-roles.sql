-- The statements below carry passwords: keep them out of pg_stat_statements and the log (a
-- failed statement is logged with its text at ERROR, a slow one with log_min_duration_statement).
SET pg_stat_statements.track_utility = off;
SET log_statement = 'none';
SET log_min_error_statement = panic;
SET log_min_duration_statement = -1;

-- Runs once, when the db container initialises an empty data volume, after 01 and 02, as the
-- image's superuser (POSTGRES_USER) in POSTGRES_DB, through psql (15 or newer for \getenv).
--
-- Two roles, so that the service cannot change the schema it runs on:
--   counseling_owner  owns the database and its public schema; the migrations connect as it
--                     (compose's migrate service: DATABASE_OWNER_URL). Not a superuser; cannot
--                     create roles or databases.
--   counseling        the service (DATABASE_URL): may connect, and read and write rows of the
--                     tables the owner creates. No CREATE on the schema, so no DDL; not the
--                     owner of anything, so no ALTER, DROP or TRUNCATE either.
-- The passwords come from the container's environment (compose passes them from .env), read by
-- psql itself: they are in no file and on no command line.
\set ON_ERROR_STOP on

\getenv owner_password POSTGRES_OWNER_PASSWORD
\getenv service_password POSTGRES_SERVICE_PASSWORD
\if :{?owner_password}
\else
    \set owner_password ''
\endif
\if :{?service_password}
\else
    \set service_password ''
\endif
SELECT :'owner_password' = '' AS no_owner_password,
       :'service_password' = '' AS no_service_password \gset
\if :no_owner_password
    DO $$ BEGIN RAISE EXCEPTION 'POSTGRES_OWNER_PASSWORD is not set'; END $$;
\endif
\if :no_service_password
    DO $$ BEGIN RAISE EXCEPTION 'POSTGRES_SERVICE_PASSWORD is not set'; END $$;
\endif

-- All or nothing: a failure here stops the image's first start, and the next start skips the
-- scripts (the data folder exists), so half of the roles and grants would stay for good.
BEGIN;
CREATE ROLE counseling_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
CREATE ROLE counseling LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'service_password';
\unset owner_password
\unset service_password

-- The database and its schema belong to the owner. Nobody else may connect or create objects,
-- apart from the service's CONNECT and USAGE (looking up what the owner created).
SELECT current_database() AS database_name \gset
ALTER DATABASE :"database_name" OWNER TO counseling_owner;
REVOKE ALL ON DATABASE :"database_name" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database_name" TO counseling;
ALTER SCHEMA public OWNER TO counseling_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO counseling;

-- Tables and sequences the owner creates from now on (every migration) are readable and
-- writable by the service, with no grant to remember in each migration.
ALTER DEFAULT PRIVILEGES FOR ROLE counseling_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO counseling;
ALTER DEFAULT PRIVILEGES FOR ROLE counseling_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO counseling;
COMMIT;
