"""Cloud side: fleet service, stores, registry, deployments, trainers, quantization, publish,
admin CLI. Imports ``protocols`` and ``model_packager`` only; meets the agent on the wire."""

import os

# ONNX Runtime (1.32, Linux included) sends usage telemetry to Microsoft's collector and keeps a device id
# and an event store under ~/.cache/Microsoft unless ORT_DISABLE_TELEMETRY is set before it is first
# imported: no plant gateway or trainer of ours calls an outside host (docs/gateway-install.md). An explicit
# setting of the user's is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
