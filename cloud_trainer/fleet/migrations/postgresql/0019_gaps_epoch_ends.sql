-- migrate: outside a transaction
-- (built CONCURRENTLY: writes to gaps go on meanwhile; inside the migration's transaction the build held them,
-- 2.7 s at 2 M rows)
-- An agent's epochs' ends by time (cloud_trainer/fleet/store.py: the same index as fleet.db): the epochs it opened
-- within EPOCH_WINDOW_S are counted in the write transaction of every batch opening one more, refused ones too; read
-- over the primary key, that was every loss row of the agent (up to LOSS_ROWS_PER_AGENT). Loss ranges (last <> 0),
-- the bulk of the rows, are not in it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS gaps_epoch_ends ON gaps (tenant, agent, t) WHERE last = 0;
