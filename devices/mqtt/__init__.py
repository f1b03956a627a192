"""MQTT device adapter: JSON and Sparkplug B sensors over paho-mqtt 2.x (see docs/mqtt.md).

``settings`` holds the pydantic config (no paho import); ``client.MqttSource`` is the adapter;
``sparkplug_host.SparkplugHost`` is the Sparkplug B host-application state machine it uses.
"""
