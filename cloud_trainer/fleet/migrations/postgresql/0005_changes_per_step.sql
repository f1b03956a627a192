-- The desired-state change log holds one generation per rollout step (all the step's agents share it) instead
-- of one per agent: a fleet-wide step is one counter update. Its key becomes (generation, tenant, agent).
ALTER TABLE changes DROP CONSTRAINT changes_pkey;
ALTER TABLE changes ADD PRIMARY KEY (generation, tenant, agent);
