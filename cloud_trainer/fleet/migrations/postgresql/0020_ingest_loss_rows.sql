-- The agent's loss ranges kept (gaps rows with last <> 0), kept by ingest in the batch's transaction
-- (cloud_trainer/fleet/store.py ``_note_loss``; fleet.db: the same column): every write carrying a loss event counted
-- the agent's rows, up to LOSS_ROWS_PER_AGENT (18-51 ms of the shared writer at 90,000). NULL: counted at the
-- agent's next loss write, so this migration reads no gaps row.
ALTER TABLE ingest ADD COLUMN IF NOT EXISTS loss_rows BIGINT;
