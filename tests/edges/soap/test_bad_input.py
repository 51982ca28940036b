"""Hostile and malformed input: a clear fault (or a 4xx) each; the node and its data survive."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "urn:polyport:shop:v1"
MAX_BODY = 1024 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    db = tmp_path_factory.mktemp("soap-bad") / "db.sqlite3"
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": str(db),
            "rate_limit": {"enabled": False},
            "limits": {"max_body": MAX_BODY},
            "xml": {"max_depth": 64, "max_elements": 100_000},
        }
    )
    with serve_in_thread(shop, settings, edges=["soap"]) as server:
        yield server


def post(node: RunningNode, body: str | bytes) -> httpx.Response:
    return httpx.post(
        f"{node.url}/soap", content=body, headers={"content-type": "text/xml"}, timeout=30
    )


def envelope(body: str, prolog: str = "") -> str:
    return (
        f'{prolog}<soap:Envelope xmlns:soap="{SOAP}"><soap:Body>{body}</soap:Body></soap:Envelope>'
    )


def fault(response: httpx.Response) -> tuple[str, str, str]:
    """(faultcode, faultstring, detail code)."""
    root = etree.fromstring(response.content)
    found = root.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert found is not None, response.text
    return (
        str(found.findtext("faultcode")),
        str(found.findtext("faultstring")),
        str(found.findtext(f"detail/{{{TNS}}}ServiceFault/{{{TNS}}}code")),
    )


def users(node: RunningNode) -> list[str]:
    body = envelope(f'<ListUsers xmlns="{TNS}"><limit>100</limit></ListUsers>')
    root = etree.fromstring(post(node, body).content)
    return [e.text or "" for e in root.iter(f"{{{TNS}}}email")]


@pytest.fixture(autouse=True)
def data_survives(node: RunningNode) -> Iterator[None]:
    """After each hostile request, the node still answers and its users are unchanged."""
    before = users(node)
    yield
    assert users(node) == before
    assert httpx.get(f"{node.url}/healthz").status_code == 200


def test_billion_laughs(node: RunningNode) -> None:
    """Entity declarations are refused before any expansion."""
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    body = envelope(
        f'<CreateUser xmlns="{TNS}"><name>&lol9;</name><email>a@b.c</email></CreateUser>',
        f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]>',
    )
    response = post(node, body)
    assert response.status_code == 500 and len(response.content) < 2000
    code, message, detail = fault(response)
    assert code == "soap:Client" and detail == "INVALID_ARGUMENT" and "DOCTYPE" in message


def test_external_entity_file(node: RunningNode, tmp_path: Path) -> None:
    """A SYSTEM entity naming a local file is refused; the file's content never appears."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-4711")
    body = envelope(
        f'<CreateUser xmlns="{TNS}"><name>&xxe;</name><email>x@y.z</email></CreateUser>',
        f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    )
    response = post(node, body)
    assert b"TOP-SECRET" not in response.content
    assert fault(response)[0] == "soap:Client"


def test_external_entity_over_the_network(node: RunningNode) -> None:
    """A SYSTEM entity (or external DTD) naming a URL is refused without connecting to it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        for prolog in (
            f'<!DOCTYPE e [<!ENTITY xxe SYSTEM "http://127.0.0.1:{port}/x">]>',
            f'<!DOCTYPE e SYSTEM "http://127.0.0.1:{port}/e.dtd">',
        ):
            body = envelope(
                f'<CreateUser xmlns="{TNS}"><name>&xxe;</name><email>n@e.t</email></CreateUser>',
                f'<?xml version="1.0"?>{prolog}',
            )
            assert fault(post(node, body))[0] == "soap:Client"
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


@pytest.mark.parametrize("depth", [100, 10_000])
def test_deep_nesting(node: RunningNode, depth: int) -> None:
    """Past settings.xml.max_depth (or lxml's own limit) the document is refused."""
    nested = "<a>" * depth + "</a>" * depth
    body = envelope(f'<CreateUser xmlns="{TNS}"><name>{nested}</name></CreateUser>')
    code, message, detail = fault(post(node, body))
    assert code == "soap:Client" and detail == "INVALID_ARGUMENT"
    assert "deeper" in message or "well-formed" in message


def test_huge_element_counts(node: RunningNode) -> None:
    """More elements than settings.xml.max_elements: 413 with a fault."""
    body = envelope(f'<Multiply xmlns="{TNS}"><a>1</a><b>2</b>{"<x/>" * 150_000}</Multiply>')
    assert len(body) < MAX_BODY
    response = post(node, body)
    assert response.status_code == 413
    assert fault(response)[2] == "PAYLOAD_TOO_LARGE"


def test_bodies_over_the_limit(node: RunningNode) -> None:
    """settings.limits.max_body applies: 413 with a fault, the connection closed."""
    body = envelope(f'<CreateUser xmlns="{TNS}"><name>{"x" * MAX_BODY}</name></CreateUser>')
    response = post(node, body)
    assert response.status_code == 413
    assert fault(response)[0] == "soap:Client"


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"", "soap:Client", "empty"),
        (b"hello, not XML", "soap:Client", "well-formed"),
        (b"<soap:Envelope", "soap:Client", "well-formed"),
        (b'{"a": 1}', "soap:Client", "well-formed"),
        (b"\xff\xfe\x00<", "soap:Client", "well-formed"),
        (b"<notsoap/>", "soap:Client", "not a SOAP envelope"),
        (
            b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
            "soap:VersionMismatch",
            "SOAP 1.2",
        ),
        (b'<e:Envelope xmlns:e="urn:wrong"><e:Body/></e:Envelope>', "soap:VersionMismatch", "1.1"),
        (f'<s:Envelope xmlns:s="{SOAP}"/>'.encode(), "soap:Client", "no soap:Body"),
        (envelope("").encode(), "soap:Client", "empty"),
        (envelope("<a/><b/>").encode(), "soap:Client", "exactly one"),
    ],
)
def test_not_soap(node: RunningNode, body: bytes, code: str, words: str) -> None:
    """Garbage, truncated XML and wrong envelopes: the SOAP 1.1 fault that fits."""
    response = post(node, body)
    assert response.status_code == 500
    faultcode, message, detail = fault(response)
    assert faultcode == code and words in message and detail == "INVALID_ARGUMENT"


def test_unknown_operation(node: RunningNode) -> None:
    """An element no operation has, or one in another namespace: NOT_FOUND, soap:Client."""
    for body in (f'<Divide xmlns="{TNS}"/>', '<Multiply xmlns="urn:other"><a>1</a></Multiply>'):
        code, message, detail = fault(post(node, envelope(body)))
        assert (code, detail) == ("soap:Client", "NOT_FOUND")
        assert "?wsdl" in message


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ("<a>six</a><b>7</b>", "a"),
        ("<a>6</a>", "b"),
        ("<a>6</a><b>7</b><c>8</c>", "c"),
        ("<a>6</a><a>6</a><b>7</b>", "a"),
        ("<a>1.5</a><b>7</b>", "a"),
        ("<a><x>1</x></a><b>7</b>", "a"),
        ('<a xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/><b>1</b>', "a"),
    ],
)
def test_wrong_arguments(node: RunningNode, args: str, field: str) -> None:
    """Wrong types, missing, unknown and repeated arguments: INVALID_ARGUMENT naming the field."""
    response = post(node, envelope(f'<Multiply xmlns="{TNS}">{args}</Multiply>'))
    code, _, detail = fault(response)
    assert (code, detail) == ("soap:Client", "INVALID_ARGUMENT")
    root = etree.fromstring(response.content)
    fields = [e.text for e in root.iter(f"{{{TNS}}}field")]
    assert fields == [field]
