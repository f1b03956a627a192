"""`edge-sim`: start one part of the virtual factory, or the whole loop.

Each verb is implemented by its own module's ``main(argv) -> int``; this file is the one
explicit table of them (no registration by import side effect), and imports a module only
when its verb is used.
"""

from __future__ import annotations

import importlib
import sys

VERBS: dict[str, tuple[str, str]] = {
    "machine": ("simulators.machine:main", "OPC UA machine server (vibration, temperature, faults)"),
    "sensors": ("simulators.sensors:main", "MQTT sensor fleet (JSON and Sparkplug B)"),
    "camera": ("simulators.camera:main", "conveyor camera: part images as HTTP MJPEG / video file"),
    "dataset": ("simulators.datasets:main", "write a labelled dataset: 'parts' or 'vibration'"),
    "demo": ("simulators.demo:main", "the whole loop on this machine, narrated"),
}


def _usage() -> str:
    lines = ["usage: edge-sim VERB [options]   (edge-sim VERB --help)", "", "verbs:"]
    lines += [f"  {verb:<9} {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"edge-sim: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _, func = VERBS[verb][0].partition(":")
    return int(getattr(importlib.import_module(module_name), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
