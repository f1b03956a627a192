-- (agent, slot) -> the halted or aborted rollouts whose target of that agent says rolling_back
-- (cloud_trainer/fleet/control.py, the same as control.db): a report of a newer rollout running on the agent reads
-- these rows, not the document of every halted rollout of the slot. Filled from the documents by the service at its
-- next start (Control._fill_going_back, once: the counters row 'going_back').
CREATE TABLE IF NOT EXISTS going_back (tenant TEXT NOT NULL, agent TEXT NOT NULL, slot TEXT NOT NULL,
  deployment_id TEXT NOT NULL, PRIMARY KEY (tenant, agent, slot, deployment_id));
