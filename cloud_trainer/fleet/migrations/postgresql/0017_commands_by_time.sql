-- migrate: outside a transaction
-- (built CONCURRENTLY: an older replica still serving during a rolling upgrade writes commands (an admin's command,
-- its agents' results) and reads them at each of its agents' heartbeats meanwhile; inside the migration's
-- transaction each build held every write to commands, and the DROP of the former index every read too, until it
-- committed: 2-2.6 s at 300,000 commands)
-- An agent's pending commands in their order, and an admin's list of commands (the newest 500 of a tenant or of one
-- agent), read through indexes instead of sorting the whole kept history (cloud_trainer/fleet/commands.py, the same
-- as control.db). commands_pending replaces commands_by_agent (its first three columns): dropped last.
CREATE INDEX CONCURRENTLY IF NOT EXISTS commands_pending ON commands (tenant, agent, state, issued_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS commands_by_agent_time ON commands (tenant, agent, issued_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS commands_by_time ON commands (tenant, issued_at);
DROP INDEX CONCURRENTLY IF EXISTS commands_by_agent;
