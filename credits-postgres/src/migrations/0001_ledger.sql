-- The ledger: one row per tenant (its lock, counters, id generators and audit chain head),
-- live credit lots, holds, the journal, refund tallies and idempotency records.
-- Amounts are counts of the smallest unit; times are milliseconds since the Unix epoch.
--
-- The per-tenant tables have no foreign key to `accounts`: every row of them is written by a
-- transaction that holds the tenant's `accounts` row lock, and tenants are never deleted, so
-- a foreign key would protect nothing and cost a lookup and a row lock per inserted row (a
-- third of the throughput of the batched path).

CREATE TABLE accounts (
    tenant           text    PRIMARY KEY,
    overdraft_limit  bigint  NOT NULL CHECK (overdraft_limit >= 0),
    granted          bigint  NOT NULL DEFAULT 0 CHECK (granted >= 0),
    refunded         bigint  NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    consumed         bigint  NOT NULL DEFAULT 0 CHECK (consumed >= 0),
    expired          bigint  NOT NULL DEFAULT 0 CHECK (expired >= 0),
    available        bigint  NOT NULL DEFAULT 0 CHECK (available >= 0),
    held             bigint  NOT NULL DEFAULT 0 CHECK (held >= 0),
    overdrawn        bigint  NOT NULL DEFAULT 0 CHECK (overdrawn >= 0),
    next_entry       bigint  NOT NULL DEFAULT 1,
    next_lot         bigint  NOT NULL DEFAULT 1,
    next_hold        bigint  NOT NULL DEFAULT 1,
    last_at          bigint  NOT NULL,
    -- Earliest hold or lot expiry (NULL: none); the sweeper's index.
    next_deadline    bigint,
    -- Head of the tenant's audit hash chain: chaining serializes per tenant, not globally.
    audit_next_seq   bigint  NOT NULL DEFAULT 0,
    audit_last_hash  bytea   NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    -- Conservation, checked by the database on every write.
    CHECK (granted::numeric + refunded + overdrawn = available::numeric + held + consumed + expired)
) WITH (fillfactor = 80);

CREATE INDEX accounts_due ON accounts (next_deadline) WHERE next_deadline IS NOT NULL;

CREATE TABLE credit_lots (
    tenant      text     NOT NULL,
    lot_id      bigint   NOT NULL,
    expires_at  bigint,                       -- NULL: never
    priority    integer  NOT NULL CHECK (priority BETWEEN 0 AND 65535),
    remaining   bigint   NOT NULL CHECK (remaining > 0),
    PRIMARY KEY (tenant, lot_id)
) WITH (fillfactor = 80);

-- state: 'active', 'committed', 'cancelled' or 'expired'.
CREATE TABLE holds (
    tenant      text    NOT NULL,
    hold_id     bigint  NOT NULL,
    amount      bigint  NOT NULL CHECK (amount > 0),
    expires_at  bigint  NOT NULL,
    state       text    NOT NULL CHECK (state IN ('active', 'committed', 'cancelled', 'expired')),
    committed   bigint  CHECK (committed >= 0),
    draws       text    NOT NULL,             -- JSON: the lots the hold came from
    PRIMARY KEY (tenant, hold_id)
);

-- Only active holds are looked up by tenant or deadline.
CREATE INDEX holds_active ON holds (tenant, expires_at) WHERE state = 'active';

CREATE TABLE journal_entries (
    tenant             text      NOT NULL,
    seq                bigint    NOT NULL,
    at                 bigint    NOT NULL,
    kind               smallint  NOT NULL,
    amount             bigint    NOT NULL CHECK (amount > 0),
    before_available   bigint    NOT NULL,
    before_held        bigint    NOT NULL,
    before_overdrawn   bigint    NOT NULL,
    after_available    bigint    NOT NULL,
    after_held         bigint    NOT NULL,
    after_overdrawn    bigint    NOT NULL,
    hold_id            bigint,
    lot_id             bigint,
    refers_to          bigint,
    idempotency_key    text,
    PRIMARY KEY (tenant, seq)
);

CREATE TABLE refunded_entries (
    tenant    text    NOT NULL,
    seq       bigint  NOT NULL,
    refunded  bigint  NOT NULL CHECK (refunded > 0),
    PRIMARY KEY (tenant, seq),
    FOREIGN KEY (tenant, seq) REFERENCES journal_entries (tenant, seq)
);

-- One record per tenant and key: the command first sent with it and its result (JSON).
CREATE TABLE idempotency_keys (
    tenant  text    NOT NULL,
    key     text    NOT NULL,
    at      bigint  NOT NULL,
    record  text    NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- Forgets idempotency records older than `days` days (a retried request older than that is
-- applied again). Returns how many were removed.
CREATE FUNCTION cleanup_idempotency_keys(days integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'days must be at least 1, got %', days USING ERRCODE = '22023';
    END IF;
    DELETE FROM idempotency_keys
     WHERE at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - days::bigint * 86400000;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;
