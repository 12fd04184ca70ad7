-- Time partitions: the journal, the audit log's entries and the idempotency records are
-- partitioned by month of `at` (ms since the epoch, UTC months), so a query bounded in time
-- reads only its months and an old month can be detached and archived whole.
--
-- * Partitions are <table>_pYYYY_MM, [first ms of the month, first ms of the next); rows
--   outside every partition go to <table>_default (kept empty by creating months ahead:
--   credits_maintain_partitions(), the maintain-partitions job).
-- * A partitioned table's keys must contain the partition column, so the keys gain `at`:
--   journal_entries (tenant, seq, at), idempotency_keys (tenant, key, at), audit_log
--   (stream, stream_seq, at). Uniqueness without `at` is the writers': a journal sequence
--   number and a stream sequence number come from the tenant's row (or the stream's lock)
--   under its lock, and an idempotency key is looked up under the tenant's lock before it
--   is inserted (no statement relies on ON CONFLICT for these tables).
-- * refunded_entries loses its foreign key to the journal (a foreign key must reference a
--   unique key, and (tenant, seq) alone no longer is one): a refund is written under the
--   tenant's lock by the change that read the refunded entry, like every per-tenant row
--   since migration 1.
-- * audit_log stays append-only: the row trigger on the partitioned table is cloned to
--   every partition, and each partition gets its own TRUNCATE trigger (statement triggers
--   are not inherited). Only an owner can detach a partition (credits_archive_month).
--
-- Existing rows are moved inside this migration: each table is renamed, a partitioned
-- table takes its name, partitions are created for every month that holds rows (within
-- ten years back and one ahead; other rows go to the default partition), the rows are
-- copied and the old table dropped.

-- [lo, hi): the ms since the epoch of the UTC month that contains `month`.
CREATE FUNCTION credits_month_range(month date, OUT lo bigint, OUT hi bigint)
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (extract(epoch FROM date_trunc('month', month::timestamp) AT TIME ZONE 'UTC')
              * 1000)::bigint,
           (extract(epoch FROM (date_trunc('month', month::timestamp) + interval '1 month')
                                 AT TIME ZONE 'UTC') * 1000)::bigint
$$;

-- The tables partitioned by month.
CREATE FUNCTION credits_partitioned_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['journal_entries', 'idempotency_keys', 'audit_log']
$$;

-- Creates the monthly partitions of every partitioned table from from_month to to_month
-- (inclusive; at most 240 months per call) that do not exist yet. A month whose rows
-- already sit in the default partition is skipped with a warning (move them by hand: the
-- default partition of audit_log is append-only). Returns how many partitions it created.
CREATE FUNCTION credits_create_partitions(from_month date, to_month date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    m date;
    r record;
    part text;
    busy boolean;
    created integer := 0;
BEGIN
    IF from_month IS NULL OR to_month IS NULL OR to_month < from_month THEN
        RAISE EXCEPTION 'months % to %: need from_month <= to_month', from_month, to_month
            USING ERRCODE = '22023';
    END IF;
    IF to_month > from_month + 240 * 31 THEN
        RAISE EXCEPTION 'months % to %: at most 240 months per call', from_month, to_month
            USING ERRCODE = '22023';
    END IF;
    FOREACH t IN ARRAY credits_partitioned_tables() LOOP
        m := date_trunc('month', from_month::timestamp)::date;
        WHILE m <= to_month LOOP
            part := t || '_p' || to_char(m, 'YYYY_MM');
            IF to_regclass(format('%I.%I', current_schema(), part)) IS NULL THEN
                SELECT * INTO r FROM credits_month_range(m);
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE at >= $1 AND at < $2)',
                               t || '_default')
                    INTO busy USING r.lo, r.hi;
                IF busy THEN
                    RAISE WARNING '%: rows of % are in %_default; partition not created',
                        t, to_char(m, 'YYYY-MM'), t;
                ELSE
                    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                                   part, t, r.lo, r.hi);
                    IF t = 'audit_log' THEN
                        EXECUTE format('CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON %I '
                                       'FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change()',
                                       part);
                    END IF;
                    created := created + 1;
                END IF;
            END IF;
            m := (m + interval '1 month')::date;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- The maintain-partitions job: this month and the next `months_ahead` (by the server's
-- UTC clock) exist for every partitioned table. Returns how many partitions it created.
CREATE FUNCTION credits_maintain_partitions(months_ahead integer DEFAULT 1) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    this_month date := date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC')::date;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 24 THEN
        RAISE EXCEPTION 'months_ahead must be 0 to 24, got %', months_ahead
            USING ERRCODE = '22023';
    END IF;
    RETURN credits_create_partitions(this_month,
                                     (this_month + make_interval(months => months_ahead))::date);
END
$$;

-- The statistics view reads two of the tables: kept as it is defined, recreated below.
CREATE TEMP TABLE credits_saved_view ON COMMIT DROP AS
SELECT pg_get_viewdef(format('%I.credits_stats_hourly', current_schema())::regclass) AS def;
DROP MATERIALIZED VIEW credits_stats_hourly;

ALTER TABLE refunded_entries DROP CONSTRAINT refunded_entries_tenant_seq_fkey;

ALTER TABLE journal_entries RENAME TO journal_entries_unpartitioned;
ALTER INDEX journal_entries_pkey RENAME TO journal_entries_unpartitioned_pkey;
CREATE TABLE journal_entries
    (LIKE journal_entries_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (at);
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_pkey PRIMARY KEY (tenant, seq, at);
CREATE TABLE journal_entries_default PARTITION OF journal_entries DEFAULT;

ALTER TABLE idempotency_keys RENAME TO idempotency_keys_unpartitioned;
ALTER INDEX idempotency_keys_pkey RENAME TO idempotency_keys_unpartitioned_pkey;
CREATE TABLE idempotency_keys
    (LIKE idempotency_keys_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (at);
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant, key, at);
CREATE TABLE idempotency_keys_default PARTITION OF idempotency_keys DEFAULT;

ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
ALTER INDEX audit_log_pkey RENAME TO audit_log_unpartitioned_pkey;
CREATE TABLE audit_log
    (LIKE audit_log_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (at);
ALTER TABLE audit_log ADD CONSTRAINT audit_log_pkey PRIMARY KEY (stream, stream_seq, at);
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_reject_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change();
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change();

-- A partition for every month that holds rows (ten years back, one ahead, by the server's
-- clock), and the months ahead.
SELECT credits_create_partitions(m, m)
  FROM (SELECT DISTINCT date_trunc('month', to_timestamp(at / 1000) AT TIME ZONE 'UTC')::date AS m
          FROM (SELECT at FROM journal_entries_unpartitioned
                UNION SELECT at FROM idempotency_keys_unpartitioned
                UNION SELECT at FROM audit_log_unpartitioned) AS a
         WHERE at >= (extract(epoch FROM clock_timestamp() - interval '10 years') * 1000)::bigint
           AND at < (extract(epoch FROM clock_timestamp() + interval '1 year') * 1000)::bigint
        ) AS months
 ORDER BY m;
SELECT credits_maintain_partitions(1);

INSERT INTO journal_entries SELECT * FROM journal_entries_unpartitioned;
INSERT INTO idempotency_keys SELECT * FROM idempotency_keys_unpartitioned;
INSERT INTO audit_log SELECT * FROM audit_log_unpartitioned;
DROP TABLE journal_entries_unpartitioned;
DROP TABLE idempotency_keys_unpartitioned;
DROP TABLE audit_log_unpartitioned;

DO $$
BEGIN
    EXECUTE (SELECT 'CREATE MATERIALIZED VIEW credits_stats_hourly AS ' || def
               FROM credits_saved_view);
END
$$;
CREATE UNIQUE INDEX credits_stats_hourly_key ON credits_stats_hourly (tenant, hour);

-- Archives one month: detaches its partition of every partitioned table and attaches it
-- to the same table in schema `archive` (created when missing, with the audit log's
-- append-only triggers), together with the stored checkpoint that covers every audit
-- entry of the month (archive.archived_months). Refuses (SQLSTATE 55000) a month that is
-- not over by the server's clock, one with an entry not yet in the log, and one whose
-- entries no stored checkpoint covers yet (flush the sequencer first). Export the archive
-- with `pg_dump --schema=<archive>`; audit-verify --archive-schema verifies it with the
-- live log as one log. Run as the schema's owner.
CREATE FUNCTION credits_archive_month(month date, archive text)
RETURNS TABLE (journal_entries bigint, audit_entries bigint, idempotency_records bigint,
               log_index_max bigint, checkpoint text)
LANGUAGE plpgsql AS $$
DECLARE
    live text := current_schema();
    r record;
    suffix text := '_p' || to_char(month, 'YYYY_MM');
    t text;
    n bigint;
    pending boolean;
BEGIN
    IF month IS NULL OR archive IS NULL OR archive = '' OR archive = live THEN
        RAISE EXCEPTION 'archive month % into schema %: need a month and another schema',
            month, archive USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM credits_month_range(month);
    IF r.hi > (extract(epoch FROM clock_timestamp()) * 1000)::bigint THEN
        RAISE EXCEPTION 'month % is not over yet', to_char(month, 'YYYY-MM')
            USING ERRCODE = '55000';
    END IF;
    FOREACH t IN ARRAY credits_partitioned_tables() LOOP
        IF to_regclass(format('%I.%I', live, t || suffix)) IS NULL THEN
            RAISE EXCEPTION 'no partition %: nothing to archive for %', t || suffix,
                to_char(month, 'YYYY-MM') USING ERRCODE = '55000';
        END IF;
    END LOOP;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM audit_pending p JOIN %I a USING (stream, stream_seq))',
                   'audit_log' || suffix) INTO pending;
    IF pending THEN
        RAISE EXCEPTION 'entries of % are not in the log yet (the sequencer integrates them)',
            to_char(month, 'YYYY-MM') USING ERRCODE = '55000';
    END IF;
    EXECUTE format('SELECT max(x.log_index) FROM audit_index x JOIN %I a USING (stream, stream_seq)',
                   'audit_log' || suffix) INTO log_index_max;
    SELECT c.note INTO checkpoint FROM audit_checkpoints c
     WHERE split_part(c.note, E'\n', 2) ~ '^[0-9]{1,18}$'
       AND split_part(c.note, E'\n', 2)::bigint > coalesce(log_index_max, -1)
     ORDER BY c.id LIMIT 1;
    IF checkpoint IS NULL AND log_index_max IS NOT NULL THEN
        RAISE EXCEPTION 'no stored checkpoint covers log index % yet (flush the sequencer)',
            log_index_max USING ERRCODE = '55000';
    END IF;

    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', archive);
    FOREACH t IN ARRAY credits_partitioned_tables() LOOP
        IF to_regclass(format('%I.%I', archive, t)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) '
                           'PARTITION BY RANGE (at)', archive, t, live, t);
            IF t = 'audit_log' THEN
                EXECUTE format('CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON %I.audit_log '
                               'FOR EACH ROW EXECUTE FUNCTION %I.audit_log_reject_change()', archive, live);
                EXECUTE format('CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON %I.audit_log '
                               'FOR EACH STATEMENT EXECUTE FUNCTION %I.audit_log_reject_change()', archive, live);
            END IF;
        END IF;
        EXECUTE format('ALTER TABLE %I.%I DETACH PARTITION %I.%I', live, t, live, t || suffix);
        EXECUTE format('ALTER TABLE %I.%I SET SCHEMA %I', live, t || suffix, archive);
        EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%s) TO (%s)',
                       archive, t, archive, t || suffix, r.lo, r.hi);
        EXECUTE format('SELECT count(*) FROM %I.%I', archive, t || suffix) INTO n;
        CASE t
            WHEN 'journal_entries' THEN journal_entries := n;
            WHEN 'audit_log' THEN audit_entries := n;
            ELSE idempotency_records := n;
        END CASE;
    END LOOP;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I.archived_months ('
                   'month date PRIMARY KEY, from_ms bigint NOT NULL, to_ms bigint NOT NULL, '
                   'journal_entries bigint NOT NULL, audit_entries bigint NOT NULL, '
                   'idempotency_records bigint NOT NULL, log_index_max bigint, checkpoint text, '
                   'archived_at timestamptz NOT NULL DEFAULT clock_timestamp())', archive);
    EXECUTE format('INSERT INTO %I.archived_months (month, from_ms, to_ms, journal_entries, '
                   'audit_entries, idempotency_records, log_index_max, checkpoint) '
                   'VALUES ($1, $2, $3, $4, $5, $6, $7, $8)', archive)
        USING date_trunc('month', month::timestamp)::date, r.lo, r.hi, journal_entries,
              audit_entries, idempotency_records, log_index_max, checkpoint;
    RETURN NEXT;
END
$$;

-- The jobs, now with partition maintenance (daily, next month ahead: a month of slack if
-- the job stops; every month ahead is one more empty partition a key lookup probes).
CREATE OR REPLACE FUNCTION credits_jobs() RETURNS TABLE (name text, schedule text, command text)
LANGUAGE sql STABLE AS $$
    VALUES
        ('recover-stalled', '*/5 * * * *', 'SELECT recover_stalled_transactions()'),
        ('cleanup-transactions', '0 2 * * *', 'SELECT cleanup_old_transactions(90)'),
        ('cleanup-idempotency', '30 2 * * *', 'SELECT cleanup_idempotency_keys(30)'),
        ('refresh-stats', '0 * * * *',
         'REFRESH MATERIALIZED VIEW CONCURRENTLY credits_stats_hourly'),
        ('maintain-partitions', '15 3 * * *', 'SELECT credits_maintain_partitions(1)')
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credits_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO credits_app;
        GRANT SELECT, INSERT ON journal_entries, audit_log TO credits_app;
        GRANT SELECT ON credits_stats_hourly TO credits_app;
    ELSE
        RAISE WARNING 'role credits_app does not exist: grant it SELECT, INSERT, UPDATE, DELETE '
            'on idempotency_keys, SELECT, INSERT on journal_entries and audit_log and SELECT on '
            'credits_stats_hourly (migration 10)';
    END IF;
END
$$;
