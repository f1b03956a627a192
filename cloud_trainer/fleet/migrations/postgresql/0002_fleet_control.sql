-- The deployments' control state (cloud_trainer/fleet/control.py) on PostgreSQL: the same tables as control.db.
CREATE TABLE deployments (id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, doc TEXT NOT NULL);
CREATE TABLE desired (tenant TEXT NOT NULL, agent TEXT NOT NULL, slot TEXT NOT NULL, package TEXT NOT NULL,
  version TEXT NOT NULL, digest TEXT NOT NULL, size BIGINT NOT NULL, deployment_id TEXT NOT NULL,
  generation BIGINT NOT NULL, PRIMARY KEY (tenant, agent, slot));
CREATE TABLE counters (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE tenants (id TEXT PRIMARY KEY, display_name TEXT NOT NULL, created DOUBLE PRECISION NOT NULL);
CREATE TABLE changes (generation BIGINT PRIMARY KEY, tenant TEXT NOT NULL, agent TEXT NOT NULL);
