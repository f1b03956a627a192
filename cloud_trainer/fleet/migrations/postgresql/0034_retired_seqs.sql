-- The seqs retention retired, per agent and epoch, as ranges of seqs each stored then deleted (cloud_trainer/fleet/
-- store.py: RETIRED_SEQS, the same table as fleet.db): a record of one sent again is a duplicate at ingest, not stored
-- and counted a second time. Seqs retired before this migration have no row: sent again, they are stored again.
CREATE TABLE IF NOT EXISTS retired_seqs (tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL,
  first BIGINT NOT NULL, last BIGINT NOT NULL, PRIMARY KEY (tenant, agent, epoch, first));
