-- The runs of each agent's reports (a run: one boot_id, its reports numbered 1, 2, ... as the agent made them), in the
-- order the control state first took a report of each (run 1, 2, ...), with the highest number taken from each
-- (cloud_trainer/fleet/control.py, the same as control.db): a report or deployment step of a run that a newer run
-- followed is late and never taken over the newer run's; every replica orders them alike, by no clock.
CREATE TABLE IF NOT EXISTS report_runs (tenant TEXT NOT NULL, agent TEXT NOT NULL, boot TEXT NOT NULL,
  run INTEGER NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (tenant, agent, boot));
