"""Hand-written envelopes, as curl sends them: namespaces, SOAPAction, media types, headers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "urn:polyport:shop:v1"
ACTION = f"{TNS}#Multiply"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    db = tmp_path_factory.mktemp("soap-wire") / "db.sqlite3"
    settings = Settings.model_validate(
        {"dev": True, "database": str(db), "rate_limit": {"enabled": False}}
    )
    with serve_in_thread(shop, settings, edges=["soap"]) as server:
        yield server


def envelope(body: str, header: str = "") -> str:
    head = f"<soap:Header>{header}</soap:Header>" if header else ""
    return (
        f'<?xml version="1.0"?>\n<soap:Envelope xmlns:soap="{SOAP}">{head}'
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    )


MULTIPLY = f'<Multiply xmlns="{TNS}"><a>6</a><b>7</b></Multiply>'


def post(node: RunningNode, body: str | bytes, **headers: str) -> httpx.Response:
    sent = {"content-type": "text/xml; charset=utf-8", **headers}
    return httpx.post(f"{node.url}/soap", content=body, headers=sent, timeout=10)


def result_of(response: httpx.Response) -> str:
    root = etree.fromstring(response.content)
    return str(root.findtext(f".//{{{TNS}}}result"))


def fault_of(response: httpx.Response) -> tuple[str, str, str]:
    """(faultcode, faultstring, detail code) of a fault response."""
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert fault is not None, response.text
    code = fault.findtext(f"detail/{{{TNS}}}ServiceFault/{{{TNS}}}code")
    return str(fault.findtext("faultcode")), str(fault.findtext("faultstring")), str(code)


def test_the_readme_curl_example(node: RunningNode) -> None:
    """A plain envelope with the request element in the service's namespace."""
    response = post(node, envelope(MULTIPLY), SOAPAction=f'"{ACTION}"')
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert result_of(response) == "42"
    root = etree.fromstring(response.content)
    assert root.tag == f"{{{SOAP}}}Envelope"
    assert root[0][0].tag == f"{{{TNS}}}MultiplyResponse"


def test_prefixed_request_elements_with_unqualified_children(node: RunningNode) -> None:
    """`<tns:Multiply><a>…` (children without a namespace) is accepted too."""
    body = f'<tns:Multiply xmlns:tns="{TNS}"><a>2</a><b>3</b></tns:Multiply>'
    assert result_of(post(node, envelope(body))) == "6"


@pytest.mark.parametrize("action", [f'"{ACTION}"', ACTION, '""', "", '"Multiply"', None])
def test_soapaction_matching_empty_or_absent_is_accepted(
    node: RunningNode, action: str | None
) -> None:
    """The operation's SOAPAction, its bare name, an empty one, or none at all."""
    headers = {} if action is None else {"SOAPAction": action}
    response = post(node, envelope(MULTIPLY), **headers)
    assert response.status_code == 200 and result_of(response) == "42"


@pytest.mark.parametrize("action", ['"urn:other#Multiply"', f'"{TNS}#GetUser"', "Divide"])
def test_a_mismatching_soapaction_is_a_client_fault(node: RunningNode, action: str) -> None:
    """SOAPAction must name the operation in the body, or nothing."""
    response = post(node, envelope(MULTIPLY), SOAPAction=action)
    assert response.status_code == 500
    code, message, detail = fault_of(response)
    assert code == "soap:Client" and detail == "INVALID_ARGUMENT"
    assert "does not match the operation Multiply" in message


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/xml", 200),
        ("text/xml; charset=utf-8", 200),
        ("application/xml", 200),
        ("application/soap+xml; charset=utf-8", 415),
        ("application/json", 415),
    ],
)
def test_media_types(node: RunningNode, content_type: str, status: int) -> None:
    """SOAP 1.1 is text/xml; SOAP 1.2's media type and others are refused with 415 and a fault."""
    response = post(node, envelope(MULTIPLY), **{"content-type": content_type})
    assert response.status_code == status
    if status == 415:
        code, message, _ = fault_of(response)
        assert code == "soap:Client" and "text/xml" in message


def test_must_understand_headers(node: RunningNode) -> None:
    """An unknown mustUnderstand header is a MustUnderstand fault, unless for another actor."""
    header = '<x:Tx xmlns:x="urn:tx" soap:mustUnderstand="1">1</x:Tx>'
    code, message, _ = fault_of(post(node, envelope(MULTIPLY, header)))
    assert code == "soap:MustUnderstand" and "urn:tx" in message
    optional = '<x:Tx xmlns:x="urn:tx">1</x:Tx>'
    assert result_of(post(node, envelope(MULTIPLY, optional))) == "42"
    elsewhere = (
        '<x:Tx xmlns:x="urn:tx" soap:mustUnderstand="1" soap:actor="urn:some-other-node">1</x:Tx>'
    )
    assert result_of(post(node, envelope(MULTIPLY, elsewhere))) == "42"


def test_the_wsdl_endpoint(node: RunningNode) -> None:
    """?wsdl (any case) is the WSDL at the address the client used; plain GET says where it is."""
    with httpx.Client(base_url=node.url) as client:
        wsdl = client.get("/soap?wsdl")
        assert wsdl.status_code == 200
        assert wsdl.headers["content-type"] == "text/xml; charset=utf-8"
        root = etree.fromstring(wsdl.content)
        address = root.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
        assert address is not None and address.get("location") == f"{node.url}/soap"
        assert client.get("/soap?WSDL").content == wsdl.content
        assert client.head("/soap?wsdl").status_code == 200
        assert client.get("/soap").status_code == 404
        forged = client.get("/soap?wsdl", headers={"host": 'evil"><x'})
        assert b"evil" not in forged.content
        etree.fromstring(forged.content)


def test_namespace_and_actions_in_the_wsdl(node: RunningNode) -> None:
    """One operation per unary method, each with its SOAPAction, in the service's namespace."""
    root = etree.fromstring(httpx.get(f"{node.url}/soap?wsdl").content)
    assert root.get("targetNamespace") == TNS
    actions = {
        op.getparent().get("name"): op.get("soapAction")
        for op in root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}operation")
    }
    assert actions["Multiply"] == ACTION
    assert actions["GetUser"] == f"{TNS}#GetUser"
