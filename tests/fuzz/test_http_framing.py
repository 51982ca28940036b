"""HTTP/1.1 framing, fuzzed: request lines, headers, bodies, chunking, pipelining.

Every example is sent on a raw socket. Whatever it is, the node answers with
a status it means (never a 500: bad input is the caller's fault) or closes,
and afterwards answers /healthz within a second with bounded memory.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.fuzz.harness import FUZZ, FuzzedNode, exchange, statuses

METHODS = st.sampled_from(
    [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"]
) | st.binary(min_size=1, max_size=12)
PATHS = st.sampled_from(
    [
        b"/",
        b"/healthz",
        b"/v1/users",
        b"/v1/users/1",
        b"/v1/products?limit=2",
        b"/v1/multiply",
        b"/v1/events?channel=orders/%23&after=earliest",
        b"/v1/events/stream?channel=orders/%23",
        b"/jsonrpc",
        b"/xmlrpc",
        b"/soap",
        b"/graphql",
        b"/ws",
        b"/v1/webhooks",
        b"/openapi.json",
        b"*",
        b"http://example.com/v1/users",
        b"/%00%ff/..%2f..%2fetc/passwd",
        b"/v1/users/" + b"9" * 40,
    ]
) | st.binary(max_size=64).map(lambda b: b"/" + b)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.9", b"HTTP/1", b""])
HEADER_NAMES = st.sampled_from(
    [
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"upgrade",
        b"expect",
        b"content-type",
        b"origin",
        b"cookie",
        b"authorization",
        b"last-event-id",
        b"accept",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"if-none-match",
        b"x-forwarded-for",
    ]
) | st.binary(min_size=1, max_size=20)
HEADER_VALUES = st.sampled_from(
    [
        b"127.0.0.1",
        b"0",
        b"5",
        b"-1",
        b"99999999999999999999",
        b"chunked",
        b"gzip, chunked",
        b"chunked, identity",
        b"close",
        b"keep-alive",
        b"Upgrade",
        b"websocket",
        b"h2c",
        b"100-continue",
        b"application/json",
        b"text/xml",
        b"Bearer x",
        b"zzzzzzzzzz:1",
        b"dGhlIHNhbXBsZSBub25jZQ==",
        b"13",
    ]
) | st.binary(max_size=40)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        return body
    # Chunked, well or badly.
    size = draw(st.sampled_from([b"%x" % len(body), b"zz", b"-1", b"ffffffffffffffff", b""]))
    end = draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n", b"", b"1\r\nx\r\n"]))
    return size + b"\r\n" + body + b"\r\n" + end


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    line = b" ".join([draw(METHODS), draw(PATHS), draw(VERSIONS)])
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8))
    if draw(st.booleans()):
        headers.insert(0, (b"host", b"127.0.0.1"))
    head = line + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    return head + draw(bodies())


@given(
    pipeline=st.lists(requests(), min_size=1, max_size=3),
    split=st.integers(min_value=0, max_value=400),
    garbage=st.booleans(),
)
@FUZZ
def test_any_bytes_get_an_answer_or_a_close_never_a_500(
    fuzzed: FuzzedNode, pipeline: list[bytes], split: int, garbage: bool
) -> None:
    """Pipelined, split, and sometimes line-noise requests: never a 500, the node stays up."""
    data = b"".join(pipeline)
    if garbage:
        data = data.replace(b"\r\n", b"\n")[::-1] if split % 2 else data[split:]
    answer = exchange(fuzzed.host, fuzzed.port, [data[:split], data[split:]])
    assert 500 not in statuses(answer), answer[:300]
    fuzzed.check()
