"""The gRPC edge: every method on a grpc.aio server, with reflection, health and events.

The edge is :class:`~polyport.edges.grpc.binding.GrpcEdge` (importing it
without the 'grpc' extra raises :class:`~polyport.core.errors.MissingExtra`,
which switches the edge off); its settings section,
:class:`~polyport.edges.grpc.config.GrpcConfig`, imports without anything the
edge needs. Nothing is imported here, so that importing a module of this
package never loads the edge itself.
"""
