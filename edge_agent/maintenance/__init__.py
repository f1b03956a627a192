"""Condition monitoring at the edge: per-asset baselines learned in commissioning, remaining-life trends."""
