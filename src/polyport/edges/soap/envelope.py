"""The SOAP 1.1 envelope: checked on the way in, framed on the way out.

A request must be ``soap:Envelope`` in the SOAP 1.1 namespace (a SOAP 1.2
envelope is a ``VersionMismatch`` fault), hold a ``soap:Body`` with exactly
one element — the operation's request element — and may hold a
``soap:Header``. Header entries addressed to this node and marked
``mustUnderstand`` must be understood: only ``wsse:Security`` is, anything
else is a ``MustUnderstand`` fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polyport.core.auth import Credentials
from polyport.core.errors import InvalidArgument
from polyport.edges.soap.errors import MustUnderstand, SoapProtocolError, VersionMismatch
from polyport.edges.soap.mapping import SOAP12_ENV, SOAP_ENV, XSI
from polyport.edges.soap.security import credentials_from, is_security_header

ENVELOPE = f"{{{SOAP_ENV}}}Envelope"
HEADER = f"{{{SOAP_ENV}}}Header"
BODY = f"{{{SOAP_ENV}}}Body"
MUST_UNDERSTAND = f"{{{SOAP_ENV}}}mustUnderstand"
ACTOR = f"{{{SOAP_ENV}}}actor"
NEXT_ACTOR = "http://schemas.xmlsoap.org/soap/actor/next"

#: What every response starts and ends with.
OPEN = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:xsi="{XSI}"><soap:Body>'
)
CLOSE = "</soap:Body></soap:Envelope>"


@dataclass(frozen=True, slots=True)
class SoapEnvelope:
    """A checked request envelope: the operation's element and any WS-Security credentials."""

    request: Any  # the single child of soap:Body (an lxml element)
    credentials: Credentials | None


def _for_us(entry: Any) -> bool:
    actor = entry.get(ACTOR)
    return actor is None or actor == NEXT_ACTOR


def read_envelope(root: Any) -> SoapEnvelope:
    """Check the envelope's shape and headers; raise the fault that fits when it is wrong."""
    tag = root.tag
    if tag != ENVELOPE:
        if not isinstance(tag, str) or tag.rpartition("}")[2] != "Envelope":
            raise SoapProtocolError("Client", "the body is not a SOAP envelope")
        if tag == f"{{{SOAP12_ENV}}}Envelope":
            raise VersionMismatch(
                f"this is a SOAP 1.2 envelope; this endpoint speaks SOAP 1.1 ({SOAP_ENV})"
            )
        raise VersionMismatch(f"the envelope must be in the SOAP 1.1 namespace {SOAP_ENV}")
    header = body = None
    for child in root:
        if child.tag == BODY:
            body = child
            break
        if child.tag == HEADER and header is None:
            header = child
    if body is None:
        raise InvalidArgument("the envelope has no soap:Body", unparseable=True)
    credentials = None
    if header is not None:
        for entry in header:
            if not _for_us(entry):
                continue
            if is_security_header(entry):
                found = credentials_from(entry)
                if credentials is None:
                    credentials = found
            elif entry.get(MUST_UNDERSTAND) in ("1", "true"):
                raise MustUnderstand(f"the header {entry.tag[:200]} is not understood here")
    request = None
    for child in body:
        if request is not None:
            raise InvalidArgument("soap:Body must hold exactly one element", unparseable=True)
        request = child
    if request is None:
        raise InvalidArgument("soap:Body is empty: it must hold the operation's element")
    return SoapEnvelope(request, credentials)
