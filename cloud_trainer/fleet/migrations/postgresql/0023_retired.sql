-- Retention (cloud_trainer/fleet/store.py: RETIRED, the same tables as fleet.db; `cloud-trainer serve --retain-days`):
-- per agent and epoch, the seqs up to last_seq were deleted by age (never a gap), and how many records and samples
-- went; per agent, the same in all (stats, usage, exports).
CREATE TABLE IF NOT EXISTS retired (tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL,
  last_seq BIGINT NOT NULL, records BIGINT NOT NULL DEFAULT 0, samples BIGINT NOT NULL DEFAULT 0,
  received_to DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, agent, epoch));
CREATE TABLE IF NOT EXISTS retired_totals (tenant TEXT NOT NULL, agent TEXT NOT NULL, records BIGINT NOT NULL DEFAULT 0,
  samples BIGINT NOT NULL DEFAULT 0, received_to DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, agent));
