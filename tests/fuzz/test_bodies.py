"""Request bodies, fuzzed: JSON on every JSON edge, XML in several encodings, GraphQL documents.

Bad input is the caller's fault: each edge answers it with its own client
error (a 4xx, a JSON-RPC error, an XML-RPC or SOAP fault, a GraphQL error),
never an internal one, and the node stays up with bounded memory.
"""

from __future__ import annotations

import json
import re
from xml.sax.saxutils import escape

import httpx
from hypothesis import given
from hypothesis import strategies as st
from tests.fuzz.harness import FUZZ, FuzzedNode

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["", "1", "-1", "9" * 30, "2026-12-07T00:00:00Z", "a@b", "\x00", "\ud7ff"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = ["name", "email", "id", "a", "b", "user_id", "items", "status", "product_id", "quantity"]
SHAPED = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5)

JSON_TARGETS = [
    ("POST", "/v1/users"),
    ("PUT", "/v1/users/1"),
    ("POST", "/v1/orders"),
    ("PUT", "/v1/orders/1"),
    ("POST", "/v1/multiply"),
    ("POST", "/v1/jobs/multiply"),
    ("POST", "/v1/webhooks"),
    ("POST", "/v1/queues/payments"),
    ("POST", "/v1/queues/notifications"),
    ("POST", "/v1/queues/payments/redrive"),
    ("POST", "/jsonrpc"),
    ("POST", "/graphql"),
]
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-16", "text/plain", "", "application/x"]
)


def body_bytes(value: object) -> bytes:
    # json, not orjson: integers past 64 bits, NaN and lone surrogates are part of the fuzz.
    return json.dumps(value).encode("utf-8", "surrogatepass")


@given(
    target=st.sampled_from(JSON_TARGETS),
    body=SHAPED.map(body_bytes) | JSON.map(body_bytes) | st.binary(max_size=200),
    content_type=CONTENT_TYPES,
)
@FUZZ
def test_json_bodies_get_client_errors_never_internal_ones(
    fuzzed: FuzzedNode, target: tuple[str, str], body: bytes, content_type: str
) -> None:
    """REST, jobs, webhooks, queues, JSON-RPC and GraphQL over HTTP, with any JSON or none."""
    method, path = target
    answer = httpx.request(
        method, fuzzed.url + path, content=body, headers={"content-type": content_type}, timeout=5
    )
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert b"-32603" not in answer.content and b'"INTERNAL"' not in answer.content, answer.text
    fuzzed.check()


XML_VALUES = st.recursive(
    st.builds(lambda v: f"<int>{v}</int>", st.integers() | st.text(max_size=5))
    | st.builds(lambda v: f"<i4>{v}</i4>", st.integers())
    | st.builds(lambda v: f"<string>{v}</string>", st.text(max_size=10).map(escape))
    | st.sampled_from(
        [
            "<boolean>1</boolean>",
            "<boolean>2</boolean>",
            "<double>1e400</double>",
            "<double>nan</double>",
            "<nil/>",
            "<base64>!!</base64>",
            "<dateTime.iso8601>20261207T00:00:00</dateTime.iso8601>",
            "<dateTime.iso8601>x</dateTime.iso8601>",
            "",
            "<value/>",
            "<![CDATA[<x>]]>",
            "&amp;&lt;&#0;&#xD800;",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3).map(
            lambda vs: (
                "<array><data>" + "".join(f"<value>{v}</value>" for v in vs) + "</data></array>"
            )
        )
        | st.lists(st.tuples(st.sampled_from(FIELDS), inner), max_size=3).map(
            lambda ms: (
                "<struct>"
                + "".join(f"<member><name>{n}</name><value>{v}</value></member>" for n, v in ms)
                + "</struct>"
            )
        )
    ),
    max_leaves=8,
)
XML_METHODS = st.sampled_from(
    ["shop.multiply", "shop.get_user", "createUser", "system.listMethods", "nope", ""]
)
SOAP_OPERATIONS = st.sampled_from(["Multiply", "GetUser", "CreateUser", "ListProducts", "Nope"])
ENCODINGS = st.sampled_from(
    [
        "utf-8",
        "utf-8-sig",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "latin-1",
        "utf-32",
        "cp1252",
        "ascii",
    ]
)
DECLARED = st.sampled_from(
    [None, "UTF-8", "UTF-16", "ISO-8859-1", "US-ASCII", "UTF-32", "windows-1252", "ebcdic-cp-us"]
)


def xml_document(text: str, encoding: str, declared: str | None) -> bytes:
    prolog = "" if declared is None else f'<?xml version="1.0" encoding="{declared}"?>'
    return (prolog + text).encode(encoding, "replace")


@given(
    method=XML_METHODS,
    params=st.lists(XML_VALUES, max_size=3),
    encoding=ENCODINGS,
    declared=DECLARED,
    cut=st.none() | st.integers(min_value=0, max_value=300),
)
@FUZZ
def test_xml_rpc_documents_in_any_encoding_get_faults_never_internal_ones(
    fuzzed: FuzzedNode,
    method: str,
    params: list[str],
    encoding: str,
    declared: str | None,
    cut: int | None,
) -> None:
    """XML-RPC calls of every shape, encoding and declaration, whole or cut short."""
    text = (
        f"<methodCall><methodName>{method}</methodName><params>"
        + "".join(f"<param><value>{p}</value></param>" for p in params)
        + "</params></methodCall>"
    )
    body = xml_document(text, encoding, declared)
    if cut is not None:
        body = body[:cut]
    answer = httpx.post(
        fuzzed.url + "/xmlrpc", content=body, headers={"content-type": "text/xml"}, timeout=5
    )
    assert answer.status_code == 200, answer.text[:300]
    fault = re.search(rb"<name>faultCode</name><value><int>(-?\d+)</int>", answer.content)
    assert fault is None or int(fault.group(1)) != -32603, answer.text[:400]
    fuzzed.check()


@given(
    operation=SOAP_OPERATIONS,
    children=st.lists(st.tuples(st.sampled_from(FIELDS), XML_VALUES), max_size=4),
    encoding=ENCODINGS,
    declared=DECLARED,
    cut=st.none() | st.integers(min_value=0, max_value=400),
)
@FUZZ
def test_soap_envelopes_in_any_encoding_get_client_faults_never_internal_ones(
    fuzzed: FuzzedNode,
    operation: str,
    children: list[tuple[str, str]],
    encoding: str,
    declared: str | None,
    cut: int | None,
) -> None:
    """SOAP 1.1 envelopes of every shape, encoding and declaration, whole or cut short."""
    inner = "".join(f"<tns:{name}>{value}</tns:{name}>" for name, value in children)
    text = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:tns="urn:polyport:shop:v1"><soap:Body>'
        f"<tns:{operation}>{inner}</tns:{operation}></soap:Body></soap:Envelope>"
    )
    body = xml_document(text, encoding, declared)
    if cut is not None:
        body = body[:cut]
    answer = httpx.post(
        fuzzed.url + "/soap",
        content=body,
        headers={"content-type": "text/xml", "soapaction": f'"urn:polyport:shop:v1#{operation}"'},
        timeout=5,
    )
    assert answer.status_code in (200, 400, 415, 500), answer.text[:300]
    assert b"<code>INTERNAL</code>" not in answer.content, answer.text[:500]
    fuzzed.check()


GRAPHQL_TOKENS = st.sampled_from(
    [
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ":",
        "...",
        ",",
        "!",
        "=",
        "|",
        "&",
        "$v",
        "$v: Int",
        "query",
        "mutation",
        "subscription",
        "fragment F on User",
        "on",
        "@include(if: true)",
        "@skip(if: $v)",
        "@nope",
        "user(id: 1)",
        "users",
        "products(limit: 2)",
        "items",
        "id",
        "name",
        "email",
        "orders",
        "__typename",
        "__schema",
        '__type(name: "User")',
        "types",
        "fields",
        "a: id",
        'createUser(name: "x", email: "x@y")',
        "multiply(a: 9223372036854775807, b: 2)",
        "1",
        "1.5e999",
        '"s"',
        '"""block"""',
        "null",
        "true",
        "#",
    ]
)
VARIABLES = st.none() | st.dictionaries(st.sampled_from(["v", "id", "x"]), JSON, max_size=3) | JSON


@given(
    tokens=st.lists(GRAPHQL_TOKENS, max_size=40),
    variables=VARIABLES,
    operation=st.none() | st.sampled_from(["A", "", "F"]),
    use_get=st.booleans(),
)
@FUZZ
def test_graphql_documents_get_graphql_errors_never_internal_ones(
    fuzzed: FuzzedNode,
    tokens: list[str],
    variables: object,
    operation: str | None,
    use_get: bool,
) -> None:
    """Token soup of GraphQL syntax, with any variables, over POST and GET."""
    document = " ".join(tokens)
    if use_get:
        params: dict[str, str] = {"query": document}
        if variables is not None:
            params["variables"] = json.dumps(variables)
        answer = httpx.get(fuzzed.url + "/graphql", params=params, timeout=5)
    else:
        payload = {"query": document, "variables": variables, "operationName": operation}
        answer = httpx.post(fuzzed.url + "/graphql", content=body_bytes(payload), timeout=5)
    assert answer.status_code < 500, answer.text[:300]
    assert b'"INTERNAL"' not in answer.content, answer.text[:500]
    fuzzed.check()


@given(
    key=st.none() | st.text(max_size=250),
    delay=st.none() | st.text(max_size=12) | st.floats().map(str),
    # What an HTTP client lets through in a header (h11 refuses the rest before sending).
    message_id=st.none()
    | st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=255, exclude_categories=["Cc"]),
        min_size=1,
        max_size=250,
    ),
)
@FUZZ
def test_queue_send_options_get_client_errors_never_internal_ones(
    fuzzed: FuzzedNode, key: str | None, delay: str | None, message_id: str | None
) -> None:
    """A queue send's ordering key, delay and Idempotency-Key, anything at all: accepted
    (202) or refused as the caller's fault, never an internal error."""
    params = {k: v for k, v in (("key", key), ("delay", delay)) if v is not None}
    headers = {"idempotency-key": message_id.encode("latin-1")} if message_id else {}
    answer = httpx.post(
        fuzzed.url + "/v1/queues/notifications",
        json={"user_id": 1, "order_id": 1, "text": "fuzz"},
        params=params,
        headers=headers,
        timeout=5,
    )
    assert answer.status_code in (202, 400, 422, 431), (answer.status_code, answer.text[:300])
    fuzzed.check()
