"""The XML-RPC edge: POST /xmlrpc, hardened XML parsing, system.* introspection.

The edge is :class:`~polyport.edges.xmlrpc.binding.XmlRpcEdge` (importing it
without the 'rpc' extra raises :class:`~polyport.core.errors.MissingExtra`,
which switches the edge off). Nothing is imported here, so that importing a
module of this package never loads the edge itself.
"""
