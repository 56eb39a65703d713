-- Runs once, when the db container initialises an empty data volume (before any migration).
-- Timestamps are stored as timestamptz; make sessions default to UTC so that anything reading
-- them without a time zone (psql, reports) sees the same values the service logs.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'UTC');
END
$$;
