-- Per agent and epoch: its records stored at or below its retired seqs (retired.last_seq: a record sent long after
-- the records around it, a batch of retired seqs sent again) with their receipt (cloud_trainer/fleet/store.py:
-- LATE_RECORDS, the same table as fleet.db). Retention finds the old ones and an epoch's age through
-- late_records_by_age; read from the records at or below the floor, a replay of retired seqs, young, was read in
-- whole at every visit of its epoch. Kept by triggers on records, whichever service writes them (one of before this
-- migration too, during a rolling upgrade): a row per record inserted at or below its epoch's floor (ingest inserts
-- a record a statement), its receipt followed where changed. Retention deletes a row with its record. Filled from
-- the records, whose writers wait for it (the lock); run again it fills it anew.
CREATE TABLE IF NOT EXISTS late_records (tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL,
  seq BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, agent, epoch, seq));
CREATE INDEX IF NOT EXISTS late_records_by_age ON late_records (tenant, agent, epoch, received);
LOCK TABLE records IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM late_records;
INSERT INTO late_records (tenant, agent, epoch, seq, received) SELECT r.tenant, r.agent, r.epoch, r.seq, r.received
  FROM retired t JOIN records r ON r.tenant = t.tenant AND r.agent = t.agent AND r.epoch = t.epoch
  AND r.seq <= t.last_seq;
CREATE OR REPLACE FUNCTION late_records_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO late_records (tenant, agent, epoch, seq, received)
    SELECT NEW.tenant, NEW.agent, NEW.epoch, NEW.seq, NEW.received FROM retired t
    WHERE t.tenant = NEW.tenant AND t.agent = NEW.agent AND t.epoch = NEW.epoch AND NEW.seq <= t.last_seq
    ON CONFLICT DO NOTHING;
  RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION late_records_received() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE late_records SET received = NEW.received
    WHERE tenant = NEW.tenant AND agent = NEW.agent AND epoch = NEW.epoch AND seq = NEW.seq;
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS late_records_add ON records;
CREATE TRIGGER late_records_add AFTER INSERT ON records FOR EACH ROW EXECUTE FUNCTION late_records_add();
DROP TRIGGER IF EXISTS late_records_received ON records;
CREATE TRIGGER late_records_received AFTER UPDATE OF received ON records FOR EACH ROW
  WHEN (OLD.received IS DISTINCT FROM NEW.received) EXECUTE FUNCTION late_records_received();
