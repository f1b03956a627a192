-- migrate: outside a transaction
-- (filled outside one: the records' writes go on meanwhile)
-- Per agent and epoch: its records stored at or below its retired seqs (retired.last_seq: a record sent long after
-- the records around it, a batch of retired seqs sent again) with their receipt (cloud_trainer/fleet/store.py:
-- LATE_RECORDS, the same table as fleet.db). Retention finds the old ones and an epoch's age through
-- late_records_by_age; read from the records at or below the floor, a replay of retired seqs, young, was read in
-- whole at every visit of its epoch. Kept by triggers on records, whichever service writes them (one of before this
-- migration too, during a rolling upgrade): a row per record inserted at or below its epoch's floor (ingest inserts
-- a record a statement), its receipt followed where changed; the table is untouched by the other records' writes.
-- Retention deletes a row with its record; one whose record is gone otherwise, or has another receipt, is put right
-- when a pass reads it. The triggers are made first (their lock waits for the records' writes open then, briefly),
-- then the table is filled from the records stored before: in one transaction with the fill, every write to records
-- waited for it (3.4 s at 100,000 retired epochs, past a batch's 2 s lock wait: every agent's batch failed). Stopped
-- anywhere, it is run again whole.
CREATE TABLE IF NOT EXISTS late_records (tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL,
  seq BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, agent, epoch, seq));
CREATE INDEX IF NOT EXISTS late_records_by_age ON late_records (tenant, agent, epoch, received);
CREATE OR REPLACE FUNCTION late_records_add() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
  IF EXISTS (SELECT 1 FROM retired t WHERE t.tenant = NEW.tenant AND t.agent = NEW.agent AND t.epoch = NEW.epoch
      AND NEW.seq <= t.last_seq) THEN
    INSERT INTO late_records (tenant, agent, epoch, seq, received)
      VALUES (NEW.tenant, NEW.agent, NEW.epoch, NEW.seq, NEW.received) ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END';
CREATE OR REPLACE FUNCTION late_records_received() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
  UPDATE late_records SET received = NEW.received
    WHERE tenant = NEW.tenant AND agent = NEW.agent AND epoch = NEW.epoch AND seq = NEW.seq;
  RETURN NULL;
END';
-- (both triggers made in one statement: a run stopped between them is made whole again)
DO '
BEGIN
  DROP TRIGGER IF EXISTS late_records_add ON records;
  CREATE TRIGGER late_records_add AFTER INSERT ON records FOR EACH ROW EXECUTE FUNCTION late_records_add();
  DROP TRIGGER IF EXISTS late_records_received ON records;
  CREATE TRIGGER late_records_received AFTER UPDATE OF received ON records FOR EACH ROW
    WHEN (OLD.received IS DISTINCT FROM NEW.received) EXECUTE FUNCTION late_records_received();
END';
-- (a record stored since the triggers were made has its row: the fill's insert passes it by)
INSERT INTO late_records (tenant, agent, epoch, seq, received) SELECT r.tenant, r.agent, r.epoch, r.seq, r.received
  FROM retired t JOIN records r ON r.tenant = t.tenant AND r.agent = t.agent AND r.epoch = t.epoch
  AND r.seq <= t.last_seq ON CONFLICT DO NOTHING;
