-- A drop event's seq range ending at seq 0 ([5, 0], [0, 0]) was written as a gaps row of last 0, an epoch's end of a
-- drop cause (cloud_trainer/fleet/store.py ``_note_loss`` takes ranges from seq 1 where first <= last since): the gap
-- list said the epoch ended there and each counted among the epochs the agent opened within the day. Such rows are
-- deleted, their agents' loss rows counted again at their next loss write (NULL). An epoch's real end is of cause
-- epoch_change or outbox_corrupt. Through gaps_epoch_ends (the ends only). The same for fleet.db: GAPS_TOLD_ENDS.
UPDATE ingest SET loss_rows = NULL WHERE EXISTS (SELECT 1 FROM gaps g WHERE g.tenant = ingest.tenant
  AND g.agent = ingest.agent AND g.last = 0 AND g.cause IN ('budget', 'damaged', 'refused', 'retention', 'write_failed'));
-- An epoch's real end such a row took the place of stays, as the epoch_change end it was: written on it (the same
-- first: _end_epoch's ON CONFLICT DO NOTHING) or moved with it past a late batch (_move_end kept the cause of the end
-- with the higher first). It is the one at the seq after the epoch's last stored or retired one, of an epoch with
-- records counted that is not the agent's current and has no end of a real cause (store.py KEEP_REAL_END).
UPDATE gaps SET cause = 'epoch_change' WHERE last = 0
  AND cause IN ('budget', 'damaged', 'refused', 'retention', 'write_failed')
  AND NOT EXISTS (SELECT 1 FROM ingest i WHERE i.tenant = gaps.tenant AND i.agent = gaps.agent AND i.epoch = gaps.epoch)
  AND EXISTS (SELECT 1 FROM record_counts c WHERE c.tenant = gaps.tenant AND c.agent = gaps.agent
    AND c.epoch = gaps.epoch)
  AND NOT EXISTS (SELECT 1 FROM gaps e WHERE e.tenant = gaps.tenant AND e.agent = gaps.agent AND e.epoch = gaps.epoch
    AND e.last = 0 AND e.cause IN ('epoch_change', 'outbox_corrupt'))
  AND first - 1 = GREATEST(COALESCE((SELECT MAX(r.seq) FROM records r WHERE r.tenant = gaps.tenant
    AND r.agent = gaps.agent AND r.epoch = gaps.epoch), 0), COALESCE((SELECT t.last_seq FROM retired t
    WHERE t.tenant = gaps.tenant AND t.agent = gaps.agent AND t.epoch = gaps.epoch), 0));
DELETE FROM gaps WHERE last = 0 AND cause IN ('budget', 'damaged', 'refused', 'retention', 'write_failed');
