"""The model package format: build, sign, verify, inspect, safe extract.

Public API (what the agent and the trainer import)::

    from model_packager import Manifest, build_package, open_package, PackageError

Imports nothing of the project's other packages.
"""

from model_packager.manifest import SCHEMA_VERSION, Manifest

__all__ = ["SCHEMA_VERSION", "Manifest"]
