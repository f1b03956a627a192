-- The runs a run's state report named as its process's runs before it (fleet.proto v4 runs_before: at most 3 run
-- ids, as JSON), kept with the run (cloud_trainer/fleet/control.py: REPORT_RUNS_NAMED, the same column as
-- control.db): a deployment step kept during a clone hold on one replica is taken there under a later run of the
-- gateway that made it, through the runs in between, whichever replica each reached. NULL: none named (a process's
-- first run) or written by a service of before it.
ALTER TABLE report_runs ADD COLUMN IF NOT EXISTS named TEXT;
