"""The SOAP edge: SOAP 1.1 document/literal at /soap, its WSDL at /soap?wsdl.

The edge is :class:`~polyport.edges.soap.binding.SoapEdge` (importing it
without the 'soap' extra raises :class:`~polyport.core.errors.MissingExtra`,
which switches the edge off). Nothing is imported here, so that importing a
module of this package never loads the edge itself.
"""
