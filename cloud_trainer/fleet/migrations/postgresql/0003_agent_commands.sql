-- Commands to one agent (cloud_trainer/fleet/commands.py): the same table as in control.db.
CREATE TABLE commands (tenant TEXT NOT NULL, id TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
  pipeline TEXT NOT NULL, reason TEXT NOT NULL, issued_at DOUBLE PRECISION NOT NULL, issued_by TEXT NOT NULL,
  state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', done_at DOUBLE PRECISION, generation BIGINT NOT NULL,
  PRIMARY KEY (tenant, id));
CREATE INDEX commands_by_agent ON commands (tenant, agent, state);
