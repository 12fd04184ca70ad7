-- The two-phase-commit log and the append-only audit log.

-- phase: 'active', 'prepared', 'committing', 'aborting' (decided, phase two pending),
-- 'committed', 'aborted' (finished). deadline: ms since the Unix epoch.
CREATE TABLE distributed_transactions (
    id          bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deadline    bigint       NOT NULL,
    phase       text         NOT NULL DEFAULT 'active'
                CHECK (phase IN ('active', 'prepared', 'committing', 'aborting', 'committed', 'aborted')),
    branches    jsonb        NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz  NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz  NOT NULL DEFAULT clock_timestamp()
);

-- Only unfinished transactions are scanned by recovery.
CREATE INDEX distributed_transactions_unfinished ON distributed_transactions (deadline)
    WHERE phase IN ('active', 'prepared', 'committing', 'aborting');
CREATE INDEX distributed_transactions_finished ON distributed_transactions (updated_at)
    WHERE phase IN ('committed', 'aborted');

-- Decides to abort every undecided transaction past its deadline (the first decision wins,
-- so this is safe while coordinators run). Phase two (telling participants) is up to a
-- coordinator's recovery pass. Returns how many were decided.
CREATE FUNCTION recover_stalled_transactions() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    decided bigint;
BEGIN
    UPDATE distributed_transactions
       SET phase = 'aborting', updated_at = clock_timestamp()
     WHERE phase IN ('active', 'prepared')
       AND deadline < (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    GET DIAGNOSTICS decided = ROW_COUNT;
    RETURN decided;
END
$$;

-- Deletes finished transactions last changed more than `days` days ago. Returns how many.
CREATE FUNCTION cleanup_old_transactions(days integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'days must be at least 1, got %', days USING ERRCODE = '22023';
    END IF;
    DELETE FROM distributed_transactions
     WHERE phase IN ('committed', 'aborted')
       AND updated_at < clock_timestamp() - make_interval(days => days);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

-- Sealed audit entries (audit-chain's canonical encoding). Every stream (one per tenant for
-- the ledger) is a hash chain: (stream, stream_seq) is unique. log_index is the entry's
-- place in the global Merkle log when it was written through an audit writer (NULL for
-- entries sealed inside ledger transactions, which chain per tenant).
CREATE TABLE audit_log (
    stream       text         NOT NULL,
    stream_seq   bigint       NOT NULL,
    log_index    bigint       UNIQUE,
    journal_seq  bigint,
    at           bigint       NOT NULL,
    entry_hash   bytea        NOT NULL,
    record       bytea        NOT NULL,
    written_at   timestamptz  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stream, stream_seq)
);

CREATE TABLE audit_checkpoints (
    id          bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    note        text         NOT NULL,
    written_at  timestamptz  NOT NULL DEFAULT clock_timestamp()
);

-- Append-only, enforced by the database: no UPDATE, DELETE or TRUNCATE, whoever asks.
CREATE FUNCTION audit_log_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % rejected', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_reject_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change();
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_log_reject_change();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change();
