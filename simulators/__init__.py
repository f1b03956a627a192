"""A virtual factory: an OPC UA machine, an MQTT sensor fleet, a camera/part-image generator,
and the launcher that runs the whole loop on one machine. Imports ``protocols`` only (to speak
the wire formats)."""
