"""Cloud side: fleet service, stores, registry, deployments, trainers, quantization, publish,
admin CLI. Imports ``protocols`` and ``model_packager`` only; meets the agent on the wire."""
