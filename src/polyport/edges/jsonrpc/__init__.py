"""The JSON-RPC 2.0 edge: POST /jsonrpc, JSON-RPC over WebSocket, OpenRPC."""

from polyport.edges.jsonrpc.binding import JsonRpcEdge

__all__ = ["JsonRpcEdge"]
