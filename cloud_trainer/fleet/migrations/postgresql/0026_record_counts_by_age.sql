-- migrate: outside a transaction
-- (built CONCURRENTLY: ingest goes on meanwhile)
-- The epochs by the age of their records (0025's first_received; cloud_trainer/fleet/store.py: RECORD_COUNTS_BY_AGE,
-- the same index as fleet.db): a retention pass reads those that can hold records past the age, in that order.
CREATE INDEX CONCURRENTLY IF NOT EXISTS record_counts_by_age ON record_counts (first_received, tenant, agent, epoch);
