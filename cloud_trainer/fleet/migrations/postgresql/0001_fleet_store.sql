-- The fleet store (cloud_trainer/fleet/store.py) on PostgreSQL: the same tables and keys as the SQLite file.
CREATE TABLE records (
  tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL DEFAULT 0, seq BIGINT NOT NULL,
  kind TEXT NOT NULL, t DOUBLE PRECISION NOT NULL, received DOUBLE PRECISION NOT NULL, payload TEXT NOT NULL,
  PRIMARY KEY (tenant, agent, epoch, seq));
CREATE TABLE samples (
  sha256 TEXT NOT NULL, tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL DEFAULT 0,
  seq BIGINT NOT NULL, t DOUBLE PRECISION NOT NULL, model TEXT, version TEXT, pipeline TEXT, reason TEXT,
  verdict TEXT, label TEXT, label_state TEXT NOT NULL DEFAULT 'unlabelled', ext TEXT,
  PRIMARY KEY (tenant, agent, epoch, seq));
CREATE INDEX samples_by_tenant ON samples (tenant, model, label_state, t);
CREATE INDEX samples_by_digest ON samples (tenant, sha256);
CREATE TABLE agents (
  tenant TEXT NOT NULL, id TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '{}', last_seen DOUBLE PRECISION,
  slots TEXT NOT NULL DEFAULT '[]', health TEXT NOT NULL DEFAULT '{}', outbox_depth BIGINT DEFAULT 0,
  outbox TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (tenant, id));
CREATE TABLE ingest (
  tenant TEXT NOT NULL, agent TEXT NOT NULL, duplicates BIGINT NOT NULL DEFAULT 0, epoch BIGINT,
  PRIMARY KEY (tenant, agent));
CREATE TABLE gaps (
  tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL, first BIGINT NOT NULL, last BIGINT NOT NULL,
  cause TEXT NOT NULL, t DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, agent, epoch, first, last));
