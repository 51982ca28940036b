"""Core errors as SOAP 1.1 faults: the edge's one error table.

    <soap:Fault>
      <faultcode>soap:Client</faultcode>            the table below
      <faultstring>no user 7</faultstring>          the error's message ("internal error" for
      <detail>                                      anything unexpected: never internals)
        <ServiceFault xmlns="urn:polyport:…">
          <code>NOT_FOUND</code>                    the protocol-neutral code
          <request_id>…</request_id>               internal errors: quote it in a bug report
          <retry_after>1.0</retry_after>           rate limits, unavailability
          <errors><error><field/><message/><type/></error>…</errors>   per invalid field
        </ServiceFault>
      </detail>
    </soap:Fault>

A fault is answered with HTTP 500, as SOAP 1.1 over HTTP prescribes; only a
body that is too large (413) or not declared as XML (415) is refused before
SOAP is spoken, with a fault as the body all the same.
"""

from __future__ import annotations

import math

from polyport.core.errors import (
    Conflict,
    Internal,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from polyport.edges.soap.codec import escape
from polyport.edges.soap.mapping import FAULT_DETAIL, SOAP_ENV, XSI

# core error → SOAP 1.1 fault code; the first class that matches wins, anything else is Server.
FAULT_CODES: tuple[tuple[type[ServiceError], str], ...] = (
    (InvalidArgument, "Client"),
    (NotFound, "Client"),
    (Conflict, "Client"),
    (Unauthenticated, "Client"),
    (PermissionDenied, "Client"),
    (RateLimited, "Server"),
    (Unavailable, "Server"),
)


class SoapProtocolError(InvalidArgument):
    """The message breaks SOAP 1.1 itself; ``faultcode`` says how (SOAP 1.1 §4.4.1)."""

    def __init__(self, faultcode: str, message: str) -> None:
        super().__init__(message, unparseable=True)
        self.faultcode = faultcode


class VersionMismatch(SoapProtocolError):
    """The envelope is not a SOAP 1.1 envelope (a SOAP 1.2 one, say)."""

    def __init__(self, message: str) -> None:
        super().__init__("VersionMismatch", message)


class MustUnderstand(SoapProtocolError):
    """A header entry marked ``mustUnderstand`` that this node does not understand."""

    def __init__(self, message: str) -> None:
        super().__init__("MustUnderstand", message)


class UnsupportedMediaType(InvalidArgument):
    """The body is not declared as ``text/xml`` (HTTP 415)."""


def faultcode_of(error: ServiceError) -> str:
    if isinstance(error, SoapProtocolError):
        return error.faultcode
    for cls, code in FAULT_CODES:
        if isinstance(error, cls):
            return code
    return "Server"


def http_status_of(error: ServiceError) -> int:
    if isinstance(error, PayloadTooLarge):
        return 413
    if isinstance(error, UnsupportedMediaType):
        return 415
    return 500


def fault_body(error: ServiceError, tns: str) -> bytes:
    """The whole response envelope for ``error``."""
    message = "internal error" if isinstance(error, Internal) else error.message
    code = "INVALID_ARGUMENT" if isinstance(error, SoapProtocolError) else error.code
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:xsi="{XSI}"><soap:Body><soap:Fault>'
        f"<faultcode>soap:{faultcode_of(error)}</faultcode>"
        f"<faultstring>{_safe(message)}</faultstring>"
        f'<detail><{FAULT_DETAIL} xmlns="{tns}"><code>{code}</code>'
    ]
    if error.request_id:
        parts.append(f"<request_id>{_safe(error.request_id)}</request_id>")
    if error.retry_after is not None and math.isfinite(error.retry_after):
        parts.append(f"<retry_after>{float(error.retry_after)!r}</retry_after>")
    if error.details:
        parts.append("<errors>")
        for detail in error.details:
            parts.append("<error>")
            for key in ("field", "message", "type"):
                value = detail.get(key)
                if value is not None:
                    parts.append(f"<{key}>{_safe(str(value))}</{key}>")
            parts.append("</error>")
        parts.append("</errors>")
    parts.append(f"</{FAULT_DETAIL}></detail></soap:Fault></soap:Body></soap:Envelope>")
    return "".join(parts).encode()


def _safe(text: str) -> str:
    """Character data from a message that may hold anything (a client's own input, say)."""
    try:
        return escape(text)
    except ValueError:
        return escape("".join(c if c.isprintable() or c in "\t\n" else "?" for c in text))
