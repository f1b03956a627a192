"""Wire contracts: ``.proto`` files and their generated stubs (``protocols/gen``, never
hand-edited), the MQTT topic scheme, and payload codecs (JSON, Sparkplug B). Imports nothing
of the project's other packages."""
