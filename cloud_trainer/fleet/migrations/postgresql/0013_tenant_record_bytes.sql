-- The tenant's quota of record bytes per UTC day (the bytes of its records' payloads, 0: no limit) and its usage
-- of the day against it (cloud_trainer/fleet/store.py: QUOTAS, the same columns as fleet.db).
ALTER TABLE tenant_quotas ADD COLUMN IF NOT EXISTS max_record_bytes_per_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenant_usage ADD COLUMN IF NOT EXISTS record_bytes BIGINT NOT NULL DEFAULT 0;
