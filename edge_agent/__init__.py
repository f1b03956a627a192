"""The gateway runtime: config, engines, pipelines, actions, outbox, uplink, model manager,
metrics, status page, CLI. Imports ``devices``, ``protocols`` and ``model_packager`` only."""

__version__ = "0.1.0"
