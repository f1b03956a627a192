-- A deployment's model slot ('@config': an agent configuration's) as a column beside its document
-- (cloud_trainer/fleet/control.py, the same as control.db), so that the finished rollouts kept per tenant and slot
-- (Control.prune_finished) are found without parsing every document. Filled from the documents by Control when it
-- opens (Python reads them: a document may hold a NaN that jsonb refuses).
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS slot TEXT;
CREATE INDEX IF NOT EXISTS deployments_by_slot ON deployments (tenant, slot, created);
