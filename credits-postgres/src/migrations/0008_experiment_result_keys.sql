-- The Idempotency-Keys under which experiment results were merged
-- (PgExperimentStore::merge_once): a key is inserted in the merge's transaction, before the
-- counts are added, so a result posted again under the same key is counted once on every
-- replica and across restarts; the same key with a different request is refused. An
-- experiment's keys are deleted with it.
CREATE TABLE service_experiment_result_keys (
    tenant      text        NOT NULL,
    id          text        NOT NULL,
    key         text        NOT NULL,
    -- A digest of the request merged under the key (16 bytes): the key posted again with
    -- another fingerprint is refused (idempotency_conflict) rather than counted or ignored.
    fingerprint bytea       NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, id, key)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credits_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON service_experiment_result_keys TO credits_app;
    ELSE
        RAISE WARNING 'role credits_app does not exist: grant it SELECT, INSERT, UPDATE, '
            'DELETE on service_experiment_result_keys (migration 8)';
    END IF;
END
$$;
