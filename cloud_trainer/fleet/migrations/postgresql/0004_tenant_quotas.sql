-- Per-tenant quotas set by the platform operator (0: no limit) and each tenant's usage per UTC day
-- (cloud_trainer/fleet/store.py: QUOTAS, the same tables as fleet.db).
CREATE TABLE tenant_quotas (tenant TEXT PRIMARY KEY, max_agents BIGINT NOT NULL DEFAULT 0,
  max_records_per_day BIGINT NOT NULL DEFAULT 0, max_sample_bytes_per_day BIGINT NOT NULL DEFAULT 0);
CREATE TABLE tenant_usage (tenant TEXT NOT NULL, day INTEGER NOT NULL, records BIGINT NOT NULL DEFAULT 0,
  sample_bytes BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, day));
