-- Holds owned by a transaction branch (credits_core::Command::Prepare): only that branch's
-- decision commits or cancels them, they never expire on their own (their expires_at is
-- the end of time, stored as the largest bigint), and recovery finds them by owner.
ALTER TABLE holds
    ADD COLUMN owner_tx     bigint,
    ADD COLUMN owner_branch integer,
    ADD CONSTRAINT holds_owner_whole CHECK ((owner_tx IS NULL) = (owner_branch IS NULL)),
    ADD CONSTRAINT holds_owner_range CHECK (owner_tx IS NULL OR (owner_tx > 0 AND owner_branch >= 0));

-- Active prepared holds, in branch order (LedgerStore::prepared_holds).
CREATE INDEX holds_prepared ON holds (owner_tx, owner_branch)
    WHERE state = 'active' AND owner_tx IS NOT NULL;
