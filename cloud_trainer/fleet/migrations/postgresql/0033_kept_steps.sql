-- The deployment steps kept late and untold during an agent's clone hold (cloud_trainer/fleet/control.py: KEPT_STEPS,
-- the same table as control.db), to be taken again after the hold under a later run of the gateway that made them,
-- by whichever replica that run reaches: kept in one replica's memory, a step was lost when the gateway's reports
-- went to another replica after the hold, or that replica restarted (its rollout stalled until STEP_TIMEOUT_S).
-- ``until``: the hold's end, wall-clock seconds (every replica applies it); ``runs``: JSON list of run ids.
CREATE TABLE IF NOT EXISTS kept_steps (tenant TEXT NOT NULL, agent TEXT NOT NULL, deployment_id TEXT NOT NULL,
  step TEXT NOT NULL, was TEXT NOT NULL, runs TEXT NOT NULL, until DOUBLE PRECISION NOT NULL,
  kept_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, agent, deployment_id));
