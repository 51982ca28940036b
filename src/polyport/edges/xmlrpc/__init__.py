"""The XML-RPC edge: POST /xmlrpc, hardened XML parsing, system.* introspection."""

from polyport.core.errors import MissingExtra

try:
    import lxml  # noqa: F401  (the parser of polyport.xmlsafe)
except ImportError as exc:
    raise MissingExtra("rpc", "the XML-RPC edge") from exc

from polyport.edges.xmlrpc.binding import XmlRpcEdge

__all__ = ["XmlRpcEdge"]
