-- Per agent: its sample rows in all (cloud_trainer/fleet/store.py: AGENT_SAMPLES, the same table as fleet.db), kept by
-- triggers on samples, whichever service writes it (one of before this migration too, during a rolling upgrade), so
-- that an agent's stats and the tenants' usage read a row per agent instead of counting the sample rows (the agent's
-- at each console refresh, every tenant's at each ListTenants). A trigger per statement (its rows grouped by agent):
-- per row, retention's deletion of 2,000 of an agent's samples updated its one total row 2,000 times in one
-- transaction. Filled from samples, whose writers wait for it (the lock); run again it fills it anew.
CREATE TABLE IF NOT EXISTS agent_samples (tenant TEXT NOT NULL, agent TEXT NOT NULL, samples BIGINT NOT NULL,
  PRIMARY KEY (tenant, agent));
LOCK TABLE samples IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM agent_samples;
INSERT INTO agent_samples (tenant, agent, samples) SELECT tenant, agent, COUNT(*) FROM samples GROUP BY tenant, agent;
CREATE OR REPLACE FUNCTION agent_samples_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO agent_samples (tenant, agent, samples)
    SELECT tenant, agent, COUNT(*) FROM new_rows GROUP BY tenant, agent
    ON CONFLICT (tenant, agent) DO UPDATE SET samples = agent_samples.samples + excluded.samples;
  RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION agent_samples_take() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE agent_samples AS a SET samples = a.samples - g.n
    FROM (SELECT tenant, agent, COUNT(*) AS n FROM old_rows GROUP BY tenant, agent) AS g
    WHERE a.tenant = g.tenant AND a.agent = g.agent;
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS agent_samples_add ON samples;
CREATE TRIGGER agent_samples_add AFTER INSERT ON samples REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agent_samples_add();
DROP TRIGGER IF EXISTS agent_samples_take ON samples;
CREATE TRIGGER agent_samples_take AFTER DELETE ON samples REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agent_samples_take();
