-- Per agent, its records' payload bytes and sample bytes stored per UTC day, counted in the batch's transaction
-- (cloud_trainer/fleet/store.py: AGENT_USAGE, the same table as fleet.db): the fleet service's per-agent day
-- budgets start from them after a restart.
CREATE TABLE IF NOT EXISTS agent_usage (tenant TEXT NOT NULL, agent TEXT NOT NULL, day INTEGER NOT NULL,
  record_bytes BIGINT NOT NULL DEFAULT 0, sample_bytes BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, agent, day));
