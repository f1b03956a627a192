-- An agent's latest command generation through an index (cloud_trainer/fleet/commands.py, the same as control.db):
-- its finished commands are kept (who asked for what), and each heartbeat read every one of them to find it.
CREATE INDEX IF NOT EXISTS commands_by_generation ON commands (tenant, agent, generation);
