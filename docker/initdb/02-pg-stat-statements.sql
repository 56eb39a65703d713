-- Query statistics (pg_stat_statements) in the application database. The server loads the
-- library at start (shared_preload_libraries in docker-compose.yml); the migrations never need it.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
