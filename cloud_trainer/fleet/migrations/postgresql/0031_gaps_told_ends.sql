-- A drop event's seq range ending at seq 0 ([5, 0], [0, 0]) was written as a gaps row of last 0, an epoch's end of a
-- drop cause (cloud_trainer/fleet/store.py ``_note_loss`` takes ranges from seq 1 where first <= last since): the gap
-- list said the epoch ended there and each counted among the epochs the agent opened within the day. Such rows are
-- deleted, their agents' loss rows counted again at their next loss write (NULL). An epoch's real end is of cause
-- epoch_change or outbox_corrupt. Through gaps_epoch_ends (the ends only). The same for fleet.db: GAPS_TOLD_ENDS.
UPDATE ingest SET loss_rows = NULL WHERE EXISTS (SELECT 1 FROM gaps g WHERE g.tenant = ingest.tenant
  AND g.agent = ingest.agent AND g.last = 0 AND g.cause IN ('budget', 'damaged', 'refused', 'retention', 'write_failed'));
DELETE FROM gaps WHERE last = 0 AND cause IN ('budget', 'damaged', 'refused', 'retention', 'write_failed');
