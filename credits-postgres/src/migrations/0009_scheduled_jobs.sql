-- The scheduled jobs (on pg_cron when the extension is present) and the hourly statistics.
--
-- credits_stats_hourly: per tenant and hour of the last 7 days (by the server's clock):
-- requests answered (idempotency records), of which refused (a record whose result is an
-- error), journal entries, the credits they moved, and the credits granted and consumed.
-- Times are the ledger's (ms since the epoch, the application's clock), the hour is UTC.
-- Refreshed hourly by the refresh-stats job, without blocking readers (CONCURRENTLY, hence
-- the unique index).
CREATE MATERIALIZED VIEW credits_stats_hourly AS
WITH since AS (
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 7 * 86400000 AS from_ms
), requests AS (
    SELECT tenant, at / 3600000 AS hour,
           count(*) AS operations,
           count(*) FILTER (WHERE strpos(record, '"result":{"Err"') > 0) AS failures
      FROM idempotency_keys, since
     WHERE at >= from_ms
     GROUP BY 1, 2
), entries AS (
    SELECT tenant, at / 3600000 AS hour,
           count(*) AS entries,
           sum(amount)::numeric AS amount,
           coalesce(sum(amount) FILTER (WHERE kind = 1), 0)::numeric AS granted,
           coalesce(sum(amount) FILTER (WHERE kind IN (2, 4)), 0)::numeric AS consumed
      FROM journal_entries, since
     WHERE at >= from_ms
     GROUP BY 1, 2
)
SELECT tenant,
       to_timestamp(hour * 3600) AS hour,
       coalesce(r.operations, 0) AS operations,
       coalesce(r.failures, 0) AS failures,
       coalesce(e.entries, 0) AS entries,
       coalesce(e.amount, 0) AS amount,
       coalesce(e.granted, 0) AS granted,
       coalesce(e.consumed, 0) AS consumed
  FROM requests r FULL JOIN entries e USING (tenant, hour);

CREATE UNIQUE INDEX credits_stats_hourly_key ON credits_stats_hourly (tenant, hour);

-- The jobs this schema wants run: name, default schedule (cron syntax, UTC) and the SQL.
-- Later migrations replace this function to add jobs (partition maintenance).
CREATE FUNCTION credits_jobs() RETURNS TABLE (name text, schedule text, command text)
LANGUAGE sql STABLE AS $$
    VALUES
        ('recover-stalled', '*/5 * * * *', 'SELECT recover_stalled_transactions()'),
        ('cleanup-transactions', '0 2 * * *', 'SELECT cleanup_old_transactions(90)'),
        ('cleanup-idempotency', '30 2 * * *', 'SELECT cleanup_idempotency_keys(30)'),
        ('refresh-stats', '0 * * * *',
         'REFRESH MATERIALIZED VIEW CONCURRENTLY credits_stats_hourly')
$$;

-- Registers (or updates) every job of credits_jobs() with pg_cron, as
-- credits/<schema>/<name>, each run with this schema as its search_path; `every` replaces
-- every job's schedule (a test runs them all each minute). Returns what it registered:
-- nothing, with a notice, when pg_cron is not installed in this database. Run it once,
-- as the schema's owner (or a role allowed to use the cron schema), after migrating;
-- run it again after a later migration added jobs. Not called by the migrations: a
-- throwaway schema must not leave jobs behind.
CREATE FUNCTION credits_schedule_jobs(every text DEFAULT NULL)
RETURNS TABLE (job text, schedule text, command text)
LANGUAGE plpgsql AS $$
DECLARE
    j record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in database %: no job registered '
            '(CREATE EXTENSION pg_cron, with pg_cron in shared_preload_libraries and '
            'cron.database_name = %)', current_database(), current_database();
        RETURN;
    END IF;
    FOR j IN SELECT * FROM credits_jobs() LOOP
        job := 'credits/' || current_schema() || '/' || j.name;
        schedule := coalesce(every, j.schedule);
        command := format('SET search_path TO %I; %s', current_schema(), j.command);
        -- Dynamic: the cron schema exists only with the extension.
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' USING job, schedule, command;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Removes every job credits_schedule_jobs registered for this schema. Returns how many.
CREATE FUNCTION credits_unschedule_jobs() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN 0;
    END IF;
    EXECUTE 'SELECT count(cron.unschedule(jobid)) FROM cron.job WHERE starts_with(jobname, $1)'
        INTO n USING 'credits/' || current_schema() || '/';
    RETURN n;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credits_app') THEN
        GRANT SELECT ON credits_stats_hourly TO credits_app;
    ELSE
        RAISE WARNING 'role credits_app does not exist: grant it SELECT on '
            'credits_stats_hourly (migration 9)';
    END IF;
END
$$;
