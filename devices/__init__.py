"""Adapters to real inputs and outputs: OPC UA, MQTT, cameras.

Each adapter turns one protocol into timestamped ``Reading`` or ``Frame`` objects
(see ``devices.base``) behind one async shape. Settings models live in modules that do
not import the protocol library, so that validating a config costs no heavy import;
the adapter class is imported only when a config uses it (``SOURCE_TYPES``).
"""

from devices.base import (
    ConnectionState,
    DeviceError,
    DeviceStats,
    Frame,
    Quality,
    Reading,
)

# type key -> (settings "module:Class", adapter "module:Class"). One explicit table, no
# registration by import side effect. Settings modules must not import the protocol library.
# A settings class has `type: Literal["<key>"]`, says what it gives pipelines (`produces: ClassVar[str]`,
# "frames" or "readings") and may have `known_tags()` (tags known offline, for the config's checks)
# and `cross_check(name, cfg, report)` (its own checks against the rest of the agent's config).
SOURCE_TYPES: dict[str, tuple[str, str]] = {
    "opcua": ("devices.opcua.settings:OpcUaSettings", "devices.opcua.client:OpcUaSource"),
    "mqtt": ("devices.mqtt.settings:MqttSettings", "devices.mqtt.client:MqttSource"),
    "camera": ("devices.camera.settings:CameraSettings", "devices.camera.capture:CameraSource"),
}

__all__ = [
    "SOURCE_TYPES",
    "ConnectionState",
    "DeviceError",
    "DeviceStats",
    "Frame",
    "Quality",
    "Reading",
    "load_object",
]


def load_object(ref: str):
    """Import ``"package.module:Name"`` and return the attribute."""
    import importlib

    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)
