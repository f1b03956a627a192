"""The gateway runtime: config, engines, pipelines, actions, outbox, uplink, model manager,
metrics, status page, CLI. Imports ``devices``, ``protocols`` and ``model_packager`` only."""

import os

# ONNX Runtime (1.32, Linux included) sends usage telemetry to Microsoft's collector and keeps a device id
# and an event store under ~/.cache/Microsoft unless ORT_DISABLE_TELEMETRY is set before it is first
# imported: no plant gateway or trainer of ours calls an outside host (docs/gateway-install.md). An explicit
# setting of the user's is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
