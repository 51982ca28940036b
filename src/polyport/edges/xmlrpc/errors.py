"""Core errors as XML-RPC faults: ``faultCode`` from the table the JSON-RPC edge
shares (:mod:`polyport.rpccodes`), ``faultString`` of ``CODE: message``."""

from __future__ import annotations

from polyport.core.errors import ServiceError
from polyport.edges.xmlrpc.codec import write_fault
from polyport.rpccodes import rpc_code


def fault_string(error: ServiceError) -> str:
    """``CODE: message`` so a client sees the protocol-neutral code too."""
    return f"{error.code}: {error.message}"


def fault(error: ServiceError) -> bytes:
    """The ``methodResponse`` carrying ``error`` as a fault."""
    return write_fault(rpc_code(error), fault_string(error))
