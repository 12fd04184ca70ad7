-- The grant lifecycle: voided lots, frozen and closed tenants.
--
-- accounts.status: 0 open, 1 frozen, 2 closed (credits_core::AccountStatus; the golden
-- test pins the numbers). journal_entries.reason: why an operator voided a lot (NULL for
-- every other entry). Status entries (kinds 11 frozen, 12 unfrozen, 13 closed) move no
-- credits: their amount is zero, every other entry's stays positive.

ALTER TABLE accounts
    ADD COLUMN status smallint NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2));

ALTER TABLE journal_entries
    ADD COLUMN reason text CHECK (octet_length(reason) BETWEEN 1 AND 128);

ALTER TABLE journal_entries
    DROP CONSTRAINT journal_entries_amount_check,
    ADD CONSTRAINT journal_entries_amount_check
        CHECK (amount > 0 OR (amount = 0 AND kind IN (11, 12, 13)));

-- A lot voided while part of it is held: the hold's draws are re-pointed at the voided
-- lot, so the upsert of an active hold now writes its draws too (see sql::UPSERT_HOLDS).
