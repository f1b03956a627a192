"""OPC UA source (``type: opcua``): subscribe to scalar and array variables, write back, browse.

``settings`` validates configs without importing asyncua; ``client`` holds the adapter
(``OpcUaSource``) and imports asyncua (about 360 ms) only when a config uses it.
"""
