-- Balance thresholds and their events (credits_core::BalanceThresholds, BalanceEvent).
--
-- accounts.thresholds: a tenant's thresholds, fixed at creation, as credits-core's serde form
-- (a JSON array of amounts, e.g. [100,500]); NULL: none. Read back through
-- BalanceThresholds::new's checks, so a hand-edited invalid list is reported as corruption.
-- accounts.next_event: the next event's number (the outbox's id generator, tenant state like
-- next_entry). accounts.events_delivered: the delivery cursor, the last event an
-- EventDispatcher handed to its sink (0: none), only ever moved forward and never past the
-- last event.
ALTER TABLE accounts
    ADD COLUMN thresholds text,
    ADD COLUMN next_event bigint NOT NULL DEFAULT 1 CHECK (next_event >= 1),
    ADD COLUMN events_delivered bigint NOT NULL DEFAULT 0
        CHECK (events_delivered >= 0 AND events_delivered < next_event);

-- The outbox: one row per downward crossing, inserted in the transaction of the change whose
-- journal entry (entry_seq) crossed the threshold; never updated or deleted.
CREATE TABLE balance_events (
    tenant     text    NOT NULL,
    seq        bigint  NOT NULL CHECK (seq >= 1),
    at         bigint  NOT NULL,
    threshold  bigint  NOT NULL CHECK (threshold > 0),
    entry_seq  bigint  NOT NULL CHECK (entry_seq >= 1),
    available  bigint  NOT NULL CHECK (available >= 0 AND available < threshold),
    PRIMARY KEY (tenant, seq)
);

-- What a dispatcher looks for: tenants with undelivered events.
CREATE INDEX accounts_events_pending ON accounts (tenant)
    WHERE events_delivered < next_event - 1;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credits_app') THEN
        GRANT SELECT, INSERT ON balance_events TO credits_app;
    ELSE
        RAISE WARNING 'role credits_app does not exist: grant it SELECT, INSERT '
            'on balance_events (migration 12)';
    END IF;
END
$$;
