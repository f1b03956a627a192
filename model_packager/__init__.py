"""The model package format: build, sign, verify, inspect, safe extract.

Public API (what the agent and the trainer import)::

    from model_packager import build_package, open_package, verify_package, load_trusted_keys, PackageError

Imports nothing of the project's other packages; ONNX Runtime, OpenVINO and onnx are imported
only by the functions that run or read a model. The key functions (``model_packager.keys``) are
loaded on first use: they bring ``cryptography`` (~7 MB resident), which a process that only runs
verified packages (the agent, which verifies in a short-lived child) never needs.
"""

import os

# ONNX Runtime (1.32, Linux included) sends usage telemetry to Microsoft's collector and keeps a device id
# and an event store under ~/.cache/Microsoft unless ORT_DISABLE_TELEMETRY is set before it is first
# imported: no plant gateway or trainer of ours calls an outside host (docs/gateway-install.md). An explicit
# setting of the user's is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from typing import TYPE_CHECKING

from model_packager.errors import (
    GoldenError,
    IntegrityError,
    ManifestError,
    PackageError,
    SignatureError,
    SpecMismatchError,
    UnsafeArchiveError,
)
from model_packager.manifest import SCHEMA_VERSION, Manifest
from model_packager.package import (
    OpenedPackage,
    build_package,
    open_package,
    package_digest,
    package_signer,
    read_manifest,
    run_golden,
    verify_folder,
    verify_package,
)

if TYPE_CHECKING:
    from model_packager.keys import TrustedKeys, generate_keypair, key_id, load_private_key, load_trusted_keys

_KEYS = ("TrustedKeys", "generate_keypair", "key_id", "load_private_key", "load_trusted_keys")


def __getattr__(name: str):
    if name in _KEYS:  # PEP 562: imported (with cryptography) only when a caller asks for one of them
        from model_packager import keys

        return getattr(keys, name)
    raise AttributeError(f"module 'model_packager' has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION",
    "GoldenError",
    "IntegrityError",
    "Manifest",
    "ManifestError",
    "OpenedPackage",
    "PackageError",
    "SignatureError",
    "SpecMismatchError",
    "TrustedKeys",
    "UnsafeArchiveError",
    "build_package",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_trusted_keys",
    "open_package",
    "package_digest",
    "package_signer",
    "read_manifest",
    "run_golden",
    "verify_folder",
    "verify_package",
]
