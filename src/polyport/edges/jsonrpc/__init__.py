"""The JSON-RPC 2.0 edge: POST /jsonrpc, JSON-RPC over WebSocket, OpenRPC.

The edge is :class:`~polyport.edges.jsonrpc.binding.JsonRpcEdge`; its settings
section, :class:`~polyport.edges.jsonrpc.config.JsonRpcConfig`, imports without
anything the edge needs. Nothing is imported here, so that importing a module
of this package never loads the edge itself.
"""
