-- Per agent, epoch and kind: at most the receipt of the epoch's lowest stored record (cloud_trainer/fleet/store.py:
-- RECORD_COUNTS, the same column as fleet.db; 0: not known yet, a row written before it or by an older replica),
-- kept by ingest and retention, so that a retention pass reads only the epochs that can hold records that old
-- (0026's index), not every epoch with records. A constant default: no rewrite of the table.
ALTER TABLE record_counts ADD COLUMN IF NOT EXISTS first_received DOUBLE PRECISION NOT NULL DEFAULT 0;
-- The agent totals follow the records counted, not the other columns: retention's update of an epoch's age (and of
-- its first seq) changed no total and cost two updates of the agent's total row each.
DROP TRIGGER IF EXISTS agent_counts_keep ON record_counts;
CREATE TRIGGER agent_counts_keep AFTER INSERT OR UPDATE OF records OR DELETE ON record_counts
  FOR EACH ROW EXECUTE FUNCTION agent_counts_keep();
