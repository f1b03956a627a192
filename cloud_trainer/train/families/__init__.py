"""The trainer families: one table, one class per family (``base.TrainerFamily``).

A row names the family's class as ``"module:Class"``, imported only when that family is asked for
(no registration by import). A new family is a module with its class plus one row here; the CLI's
choices, the default epochs and the pipeline's hooks come from the class (docs/plugins.md, "A
trainer family"). Importing this package, or any family's module, imports no torch: the hooks do.
"""

from __future__ import annotations

import importlib

from cloud_trainer.train.families.base import STAGE_VERBS, Evaluation, StageError, TrainerFamily

__all__ = [
    "STAGE_VERBS",
    "TRAINER_FAMILIES",
    "Evaluation",
    "StageError",
    "TrainerFamily",
    "family_names",
    "load_family",
]

TRAINER_FAMILIES: dict[str, str] = {
    "vision": "cloud_trainer.train.families.vision:VisionFamily",
    "maintenance": "cloud_trainer.train.families.maintenance:MaintenanceFamily",
    "anomaly": "cloud_trainer.train.families.anomaly:AnomalyFamily",
}


def load_family(name: str) -> TrainerFamily:
    """The family ``name`` of the table (an instance of its class); ValueError naming the choices."""
    if name not in TRAINER_FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {sorted(TRAINER_FAMILIES)}")
    module, _, cls = TRAINER_FAMILIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def family_names(verb: str) -> list[str]:
    """The families the ``cloud-trainer`` verb accepts, in the table's order."""
    return [k for k in TRAINER_FAMILIES if verb in load_family(k).verbs]
