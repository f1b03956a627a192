-- An agent's pending commands in their order, and an admin's list of commands (the newest 500 of a tenant or of one
-- agent), read through indexes instead of sorting the whole kept history (cloud_trainer/fleet/commands.py, the same
-- as control.db). commands_pending replaces commands_by_agent (its first three columns).
CREATE INDEX IF NOT EXISTS commands_pending ON commands (tenant, agent, state, issued_at);
CREATE INDEX IF NOT EXISTS commands_by_agent_time ON commands (tenant, agent, issued_at);
CREATE INDEX IF NOT EXISTS commands_by_time ON commands (tenant, issued_at);
-- Last: a DROP INDEX takes the whole table until the migration commits, and an older replica still serving during a
-- rolling upgrade reads commands at each of its agents' heartbeats (second, it held those reads for the two builds
-- after it: 2 s and more at 300,000 commands); an index build lets reads through (writes wait for it).
DROP INDEX IF EXISTS commands_by_agent;
