-- The console's events (/api/events: newest first, per tenant or per agent) read through partial indexes over the
-- event and alarm rows only (cloud_trainer/fleet/store.py: the same indexes as fleet.db). Results and samples, the
-- bulk of the records, are not in them: their cost is one index entry per event.
CREATE INDEX IF NOT EXISTS records_events ON records (tenant, t, agent, epoch, seq) WHERE kind IN ('event', 'alarm');
CREATE INDEX IF NOT EXISTS records_agent_events ON records (tenant, agent, t, epoch, seq)
  WHERE kind IN ('event', 'alarm');
