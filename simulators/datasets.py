"""`edge-sim dataset parts|vibration ...`: write a labelled dataset for training and tests."""

from __future__ import annotations

import importlib
import sys

KINDS = {
    "parts": "simulators.parts:dataset_main",  # part images with defect labels, masks and boxes
    "vibration": "simulators.vibration:dataset_main",  # vibration windows with fault, health, remaining life
    "mvtec": "simulators.mvtec:main",  # part images in the MVTec AD layout (good-only training)
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in KINDS:
        print("usage: edge-sim dataset {parts|vibration|mvtec} --out DIR [options]", file=sys.stderr)
        return 2
    module_name, _, func = KINDS[argv[0]].partition(":")
    return int(getattr(importlib.import_module(module_name), func)(argv[1:]) or 0)
