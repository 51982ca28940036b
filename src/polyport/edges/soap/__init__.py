"""The SOAP edge: SOAP 1.1 document/literal at /soap, its WSDL at /soap?wsdl."""

from polyport.core.errors import MissingExtra

try:
    from polyport.edges.soap.binding import SoapEdge
except ImportError as exc:  # lxml comes with the 'soap' extra
    if exc.name and exc.name.split(".")[0] == "lxml":
        raise MissingExtra("soap", "the SOAP edge") from exc
    raise

__all__ = ["SoapEdge"]
