-- The newest samples of a tenant (the console's page: at most 200, newest first) read through an index instead of
-- every sample row of the tenant (cloud_trainer/fleet/store.py: the same indexes as fleet.db).
CREATE INDEX samples_newest ON samples (tenant, model, t, seq);
CREATE INDEX samples_by_time ON samples (tenant, t, seq);
