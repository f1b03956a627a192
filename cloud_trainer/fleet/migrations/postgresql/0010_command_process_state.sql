-- A command's process state (cloud_trainer/fleet/commands.py): baseline_relearn of one state of a pipeline
-- (baseline.state_tag); '' for every state, as every command sent before it.
ALTER TABLE commands ADD COLUMN IF NOT EXISTS process_state TEXT NOT NULL DEFAULT '';
