"""The MQTT edge: the node's own MQTT 5.0 and 3.1.1 listener (topics are event channels).

The edge is :class:`~polyport.edges.mqtt.binding.MqttEdge`; its settings
section, :class:`~polyport.edges.mqtt.config.MqttConfig`, imports without
the edge. The packet codec (:mod:`~polyport.edges.mqtt.codec`) is polyport's
own and sans-I/O: ``docs/mqtt.md`` says why no library on PyPI fitted.
Nothing is imported here, so that importing one module of this package never
loads the others.
"""
