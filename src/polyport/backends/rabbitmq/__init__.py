"""RabbitMQ as a node's message broker (``queues.broker = amqp://…``), with aio-pika.

:mod:`polyport.backends.rabbitmq.broker` builds it (and says how each
guarantee of the broker port is kept on RabbitMQ); the driver is imported
only then: without the ``rabbitmq`` extra, building raises
:class:`~polyport.core.errors.MissingExtra` naming it.

    layout      the names of a queue's queues and exchanges
    topology    declaring them (quorum or classic), the delay levels' bindings
    wire        a polyport message as an AMQP message, and back
    connection  the connection, its channels, reconnecting
    idlog       the stream of sent ids every node follows (deduplication)
    held        a delivery this node holds, and its lease
    partitions  keyed messages: partitions held one at a time
    rabbitbroker  sending, receiving, settling
    operations  dead letters, redrive, peek, stats, purge
"""
