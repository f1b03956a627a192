-- A deployment's tenant and state as columns beside its document (cloud_trainer/fleet/control.py, the same as
-- control.db), so that the rollout tick every replica runs each second reads the running deployments only, and
-- an admin's list reads its own tenant's only, instead of parsing every document of every tenant ever created.
-- Filled from the documents by Control when it opens (Python reads them: a document may hold a NaN that jsonb
-- refuses).
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS tenant TEXT;
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS state TEXT;
CREATE INDEX IF NOT EXISTS deployments_by_state ON deployments (state, created);
CREATE INDEX IF NOT EXISTS deployments_by_tenant ON deployments (tenant, created);
