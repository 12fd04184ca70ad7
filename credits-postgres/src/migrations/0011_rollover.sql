-- Rollover at expiry (credits_core::RolloverPolicy): a tenant's policy, fixed at creation,
-- as credits-core's serde form ({"share_percent":…,"cap":…,"ttl_ms":…}); NULL: a lot's unused
-- credits expire. Read back through RolloverPolicy's checks, so a hand-edited invalid
-- policy is reported as corruption rather than applied.
ALTER TABLE accounts ADD COLUMN rollover text;
