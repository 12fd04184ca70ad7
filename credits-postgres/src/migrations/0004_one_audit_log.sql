-- One Merkle log for every audit entry. The ledger seals each change's entries in the
-- change's transaction (audit_log) and queues them (audit_pending) in the same
-- transaction; the sequencer (one at a time, by advisory lock) gives them log indices
-- (audit_index) and removes them from the queue in one transaction.

-- An entry's place in the log. Append-only, like audit_log. (No foreign key to audit_log:
-- the sequencer inserts only rows it joined to their stored entry, hash included.)
CREATE TABLE audit_index (
    log_index   bigint  PRIMARY KEY CHECK (log_index >= 0),
    stream      text    NOT NULL,
    stream_seq  bigint  NOT NULL,
    UNIQUE (stream, stream_seq)
);

-- Entries an audit writer already wrote with a log index keep it.
INSERT INTO audit_index (log_index, stream, stream_seq)
SELECT log_index, stream, stream_seq FROM audit_log WHERE log_index IS NOT NULL;

-- Committed entries not yet in the log, in commit order (per stream, stream order). (No
-- foreign key: a row is inserted by the statement that inserts its audit_log row.)
CREATE TABLE audit_pending (
    id          bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text    NOT NULL,
    stream_seq  bigint  NOT NULL,
    UNIQUE (stream, stream_seq)
);

-- Ledger entries sealed before this migration (stream = tenant id) join the log as they
-- are; from now on a tenant's entries go to the stream ledger/<tenant>, which starts a new
-- chain.
INSERT INTO audit_pending (stream, stream_seq)
SELECT stream, stream_seq FROM audit_log WHERE log_index IS NULL ORDER BY stream, stream_seq;
-- audit_log.log_index is superseded by audit_index; its index would cost every insert.
ALTER TABLE audit_log DROP CONSTRAINT audit_log_log_index_key;

UPDATE accounts
   SET audit_next_seq = 0,
       audit_last_hash = '\x0000000000000000000000000000000000000000000000000000000000000000'
 WHERE audit_next_seq <> 0;

-- Refuses a ledger change while the queue holds backlog_max entries or more (the
-- sequencer is down or behind): SQLSTATE CA001, the count in DETAIL and the limit in HINT.
-- The count is max(id) - min(id) + 1, two index probes: exact unless entries left the
-- queue out of order, and never less than the true count.
CREATE FUNCTION audit_backlog_check(backlog_max bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    SELECT coalesce(max(id) - min(id) + 1, 0) INTO n FROM audit_pending;
    IF n >= backlog_max THEN
        RAISE EXCEPTION 'audit backlog of % entries is at its limit of %', n, backlog_max
            USING ERRCODE = 'CA001', DETAIL = n::text, HINT = backlog_max::text;
    END IF;
    RETURN true;
END
$$;

-- recover_stalled_transactions() by the caller's clock (ms since the epoch): the clock that
-- set the deadlines decides when they pass (PgTxLog::maintain passes its `now`).
CREATE FUNCTION recover_stalled_transactions(now_ms bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    decided bigint;
BEGIN
    UPDATE distributed_transactions
       SET phase = 'aborting', updated_at = clock_timestamp()
     WHERE phase IN ('active', 'prepared')
       AND deadline < now_ms;
    GET DIAGNOSTICS decided = ROW_COUNT;
    RETURN decided;
END
$$;

CREATE TRIGGER audit_index_append_only
    BEFORE UPDATE OR DELETE ON audit_index
    FOR EACH ROW EXECUTE FUNCTION audit_log_reject_change();
CREATE TRIGGER audit_index_no_truncate
    BEFORE TRUNCATE ON audit_index
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change();

-- The application's role: it may change the ledger, but only add to the audit log. Run the
-- migrations as the schema's owner and the service as a login role that is a member of
-- credits_app (CREATE ROLE credits_service LOGIN IN ROLE credits_app), so the application
-- can neither rewrite the log nor drop its triggers (only an owner can).
-- Without the CREATEROLE privilege the migration still applies, and says what to run.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credits_app') THEN
        BEGIN
            CREATE ROLE credits_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE WARNING 'role credits_app not created (this user lacks CREATEROLE): '
                    'create it, then grant it what migration 4 of credits-postgres grants';
                RETURN;
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO credits_app', current_schema());
    GRANT SELECT, INSERT, UPDATE, DELETE
        ON accounts, credit_lots, holds, refunded_entries, idempotency_keys,
           distributed_transactions
        TO credits_app;
    GRANT SELECT, INSERT ON journal_entries, audit_log, audit_index, audit_checkpoints
        TO credits_app;
    GRANT SELECT, INSERT, DELETE ON audit_pending TO credits_app;
    GRANT SELECT ON schema_migrations TO credits_app;
    GRANT EXECUTE ON FUNCTION recover_stalled_transactions(),
        recover_stalled_transactions(bigint), cleanup_old_transactions(integer),
        cleanup_idempotency_keys(integer), audit_backlog_check(bigint)
        TO credits_app;
END
$$;
