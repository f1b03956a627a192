-- The completed selector rollout whose version a slot's group runs, per tenant and slot
-- (cloud_trainer/fleet/control.py, the same as control.db): a gateway that joins the group later (enrolled, or
-- labelled into it) is given that version. Any newer rollout of the slot (a rollback included) removes the row.
CREATE TABLE IF NOT EXISTS following (tenant TEXT NOT NULL, slot TEXT NOT NULL, deployment_id TEXT NOT NULL,
  PRIMARY KEY (tenant, slot));
