"""Numbers over XML-RPC and SOAP: what XML Schema spells is read, what Python also reads is not."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator

import httpx
import pytest

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread

ENVELOPE = (
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    '<Multiply xmlns="urn:polyport:shop:v1"><a>{a}</a><b>3</b></Multiply>'
    "</soap:Body></soap:Envelope>"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    db = tmp_path_factory.mktemp("numbers") / "db.sqlite3"
    with serve_in_thread(shop, Settings(dev=True, database=str(db)), edges=["xmlrpc", "soap"]) as n:
        yield n


def xml_rpc(node: RunningNode, a: str) -> object:
    body = (
        "<methodCall><methodName>shop.multiply</methodName><params>"
        f"<param><value><int>{a}</int></value></param>"
        "<param><value><int>3</int></value></param></params></methodCall>"
    )
    answer = httpx.post(f"{node.url}/xmlrpc", content=body, headers={"content-type": "text/xml"})
    try:
        return xmlrpc.client.loads(answer.content)[0][0]
    except xmlrpc.client.Fault as fault:
        return fault.faultCode


def soap(node: RunningNode, a: str) -> httpx.Response:
    return httpx.post(
        f"{node.url}/soap",
        content=ENVELOPE.format(a=a),
        headers={"content-type": "text/xml", "soapaction": '"urn:polyport:shop:v1#Multiply"'},
    )


@pytest.mark.parametrize("text", [" 5 ", "+5", "5"])
def test_integers_as_xml_schema_spells_them_are_read(node: RunningNode, text: str) -> None:
    """Whitespace around and a plus sign are part of the lexical form."""
    assert xml_rpc(node, text) == 15
    assert b"<result>15</result>" in soap(node, text).content


@pytest.mark.parametrize("text", ["5_0", "\u0665", "5.0", "0x5"])
def test_what_only_python_reads_is_refused(node: RunningNode, text: str) -> None:
    """int() reads '5_0' as 50 and Arabic-Indic digits as numbers; neither protocol does."""
    assert xml_rpc(node, text) in (-32700, -32602)
    answer = soap(node, text)
    assert answer.status_code == 500 and b"<faultcode>soap:Client</faultcode>" in answer.content
