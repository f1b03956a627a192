-- Per agent and kind: its records stored in all (cloud_trainer/fleet/store.py: AGENT_COUNTS, the same table as
-- fleet.db), kept from record_counts by a trigger, whichever service writes it (one of before this migration too,
-- during a rolling upgrade), so that an agent's stats read a row per kind, not one per epoch and kind (an agent opening
-- an epoch each 10 s for a month: 0.2-0.7 s per console refresh). Filled from record_counts, whose writers wait for
-- it (the lock); run again on a filled table (its row in schema_version deleted) it fills it anew.
CREATE TABLE IF NOT EXISTS agent_counts (tenant TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
  records BIGINT NOT NULL, PRIMARY KEY (tenant, agent, kind));
LOCK TABLE record_counts IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM agent_counts;
INSERT INTO agent_counts (tenant, agent, kind, records)
  SELECT tenant, agent, kind, SUM(records) FROM record_counts GROUP BY tenant, agent, kind;
CREATE OR REPLACE FUNCTION agent_counts_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE agent_counts SET records = agent_counts.records - OLD.records
      WHERE tenant = OLD.tenant AND agent = OLD.agent AND kind = OLD.kind;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO agent_counts (tenant, agent, kind, records) VALUES (NEW.tenant, NEW.agent, NEW.kind, NEW.records)
      ON CONFLICT (tenant, agent, kind) DO UPDATE SET records = agent_counts.records + excluded.records;
  END IF;
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS agent_counts_keep ON record_counts;
CREATE TRIGGER agent_counts_keep AFTER INSERT OR UPDATE OR DELETE ON record_counts
  FOR EACH ROW EXECUTE FUNCTION agent_counts_keep();
