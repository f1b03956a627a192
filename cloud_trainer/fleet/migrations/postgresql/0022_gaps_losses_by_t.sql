-- migrate: outside a transaction
-- (built CONCURRENTLY: writes to gaps go on meanwhile; inside the migration's transaction the build held them,
-- 2.7 s at 2 M rows)
-- An agent's loss ranges (gaps rows with last <> 0) by time (cloud_trainer/fleet/store.py: the same index as
-- fleet.db): past its LOSS_ROWS_PER_AGENT the oldest are deleted to make room, in the write transaction of the batch
-- telling more; without it every gaps row of the agent was read and sorted, its epochs' ends (never deleted) too.
CREATE INDEX CONCURRENTLY IF NOT EXISTS gaps_losses_by_t ON gaps (tenant, agent, t, epoch, first, last) WHERE last <> 0;
