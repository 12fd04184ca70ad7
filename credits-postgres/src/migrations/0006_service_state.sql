-- The service's own state, shared by every replica: experiments (their counts and their
-- spec) and rollouts (their state and spec). Times are milliseconds since the Unix epoch;
-- the JSON columns are text, like the ledger's.

-- An experiment belongs to a tenant: the key leads with it, and the per-tenant quota is a
-- count of these rows under a per-tenant transaction lock (PgExperimentStore::create_within).
-- `state` is bayes-ab's ExperimentState as JSON (its counts); `spec` the caller's description
-- of its rule, guardrails and split (NULL when created through ExperimentStore::create).
-- `version` is the optimistic version of ExperimentStore: one more after every write.
CREATE TABLE service_experiments (
    tenant      text    NOT NULL,
    id          text    NOT NULL,
    state       text    NOT NULL,
    spec        text,
    version     bigint  NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant, id)
) WITH (fillfactor = 80);

-- A rollout is the operator's, not a tenant's. `state` is canary's RolloutState as JSON;
-- `spec` the caller's description of its plan, policy and metrics source. A save is
-- `UPDATE … WHERE version = $expected`, with the rollout's trail entries sealed into the
-- audit log in the same transaction (PgRolloutStore).
CREATE TABLE service_rollouts (
    id          text    PRIMARY KEY,
    spec        text    NOT NULL,
    state       text    NOT NULL,
    version     bigint  NOT NULL CHECK (version >= 1)
) WITH (fillfactor = 80);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credits_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON service_experiments, service_rollouts
            TO credits_app;
    ELSE
        RAISE WARNING 'role credits_app does not exist: grant it SELECT, INSERT, UPDATE, '
            'DELETE on service_experiments and service_rollouts (migration 6)';
    END IF;
END
$$;
