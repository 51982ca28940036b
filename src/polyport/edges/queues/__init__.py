"""Message queues over HTTP: ``POST /v{n}/queues/{name}`` sends; admins inspect and redrive.

The edge is :class:`~polyport.edges.queues.binding.QueuesEdge`. The queues
themselves (sending, consumers) are the core's
:class:`~polyport.core.queuerunner.QueueRunner`, which runs whether or not
this edge is served. Nothing is imported here.
"""
