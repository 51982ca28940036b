"""The XML parser of the XML edges: accepted encodings, and nothing it parses opens a file.

The tripwire is a named pipe: opening one for reading blocks until a writer
comes, so a parser that follows an external entity or DTD to it hangs instead
of failing quietly. Each parse runs in a thread that must finish in time.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from polyport import xmlsafe
from polyport.core.errors import InvalidArgument

CALL = "<methodCall><methodName>x</methodName></methodCall>"


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe no one writes to; released at the end so a stuck parse can finish."""
    path = tmp_path / "tripwire"
    os.mkfifo(path)
    yield path
    # A reader stuck in open() gets its writer and end of file (no reader: ENXIO).
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def parse_within(data: bytes, seconds: float = 5.0) -> object:
    """``xmlsafe.parse(data)`` in a thread; fail if it has not returned within ``seconds``."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(xmlsafe.parse(data, max_depth=64, max_elements=10_000))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the parser blocked: it opened what the document named"
    return outcome[0]


HOSTILE = {
    "parameter entity": '<!DOCTYPE r [<!ENTITY % p SYSTEM "file://{path}"> %p;]>' + CALL,
    "external entity": (
        '<!DOCTYPE r [<!ENTITY e SYSTEM "file://{path}">]>'
        "<methodCall><methodName>&e;</methodName></methodCall>"
    ),
    "external DTD": '<!DOCTYPE r SYSTEM "file://{path}">' + CALL,
    "public DTD": '<!DOCTYPE r PUBLIC "-//x//y" "file://{path}">' + CALL,
}
ENCODINGS = {
    "UTF-8": ("UTF-8", "utf-8"),
    "UTF-8 with a mark": ("UTF-8", "utf-8-sig"),
    "UTF-16 (little-endian mark)": ("UTF-16", "utf-16-le-bom"),
    "UTF-16 (big-endian mark)": ("UTF-16", "utf-16-be-bom"),
    "ISO-8859-1": ("ISO-8859-1", "latin-1"),
    "US-ASCII": ("US-ASCII", "ascii"),
}


def encode(text: str, codec: str) -> bytes:
    if codec == "utf-16-le-bom":
        return b"\xff\xfe" + text.encode("utf-16-le")
    if codec == "utf-16-be-bom":
        return b"\xfe\xff" + text.encode("utf-16-be")
    return text.encode(codec)


@pytest.mark.parametrize("attack", sorted(HOSTILE))
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_no_document_type_is_followed_in_any_encoding(
    fifo: Path, attack: str, encoding: str
) -> None:
    """A DTD or entity naming a local file is refused before anything opens it."""
    declared, codec = ENCODINGS[encoding]
    text = f'<?xml version="1.0" encoding="{declared}"?>' + HOSTILE[attack].format(path=fifo)
    outcome = parse_within(encode(text, codec))
    assert isinstance(outcome, InvalidArgument)
    assert "DOCTYPE" in str(outcome)


def test_the_reported_utf16_body_is_refused(fifo: Path) -> None:
    """The issue's 546-byte reproduction (with the pipe for /dev/zero) is refused at once."""
    body = (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY % p SYSTEM '
        f'"file://{fifo}"> %p;]>{CALL}'
    ).encode("utf-16")
    outcome = parse_within(body)
    assert isinstance(outcome, xmlsafe.XmlRefused)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_accepted_encodings_parse_the_same(encoding: str) -> None:
    """The same call in every accepted encoding parses to the same text."""
    declared, codec = ENCODINGS[encoding]
    name = "caf\u00e9" if codec != "ascii" else "cafe"
    text = f'<?xml version="1.0" encoding="{declared}"?><a><b>{name}</b></a>'
    root = parse_within(encode(text, codec))
    assert not isinstance(root, Exception), root
    assert root.findtext("b") == name  # type: ignore[attr-defined]


def test_no_declaration_means_utf8() -> None:
    """Without a declaration or a mark a body is UTF-8, and invalid UTF-8 is refused."""
    root = parse_within("<a>caf\u00e9</a>".encode())
    assert root.text == "caf\u00e9"  # type: ignore[attr-defined]
    assert isinstance(parse_within(b"<a>caf\xe9</a>"), xmlsafe.XmlRefused)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'<?xml version="1.0" encoding="UTF-32"?><a/>', "not accepted"),
        ("<a/>".encode("utf-32"), "UTF-32"),
        ("<a/>".encode("utf-16-le"), "accepted encoding"),  # no mark
        ("<a/>".encode("utf-16-be"), "accepted encoding"),
        (b'<?xml version="1.0" encoding="UTF-16"?><a/>', "byte-order mark"),
        (b'<?xml version="1.0" encoding="windows-1252"?><a/>', "not accepted"),
        (b'<?xml version="1.0" encoding="ebcdic-cp-us"?><a/>', "not accepted"),
        (b'<?xml version="1.0" encoding="no-such-thing"?><a/>', "not accepted"),
        (b'\xef\xbb\xbf<?xml version="1.0" encoding="ISO-8859-1"?><a/>', "declares"),
        ('\ufeff<?xml version="1.0" encoding="UTF-8"?><a/>'.encode("utf-16-le"), "declares"),
        (b"<?xml version=1.0?><a/>", "malformed"),
    ],
    ids=[
        "declared UTF-32",
        "UTF-32",
        "UTF-16LE without a mark",
        "UTF-16BE without a mark",
        "declared UTF-16 without a mark",
        "windows-1252",
        "EBCDIC",
        "unknown",
        "UTF-8 mark declaring Latin-1",
        "UTF-16 mark declaring UTF-8",
        "malformed declaration",
    ],
)
def test_other_encodings_get_a_clear_refusal(body: bytes, says: str) -> None:
    """Encodings outside the accepted four are refused, naming what is accepted."""
    outcome = parse_within(body)
    assert isinstance(outcome, xmlsafe.XmlRefused)
    assert says in str(outcome)


@pytest.mark.parametrize(
    ("read", "good", "bad"),
    [
        (xmlsafe.integer, {" 5 ": 5, "+7": 7, "-0012": -12}, ["5_0", "\u0665", "5.0", "", "1e3"]),
        (
            xmlsafe.double,
            {"1.5": 1.5, " -2e3 ": -2000.0, ".5": 0.5, "7": 7.0},
            ["nan", "inf", "-INF", "1_0.5", "1e999", "0x10", ""],
        ),
        (xmlsafe.decimal, {"19.90": Decimal("19.90"), "+3": Decimal(3)}, ["NaN", "1e5", "1_0"]),
    ],
    ids=["integer", "double", "decimal"],
)
def test_numbers_are_read_as_xml_schema_spells_them(
    read: Callable[[str], object], good: dict[str, object], bad: list[str]
) -> None:
    """Python reads more than XML Schema allows (underscores, other digits, NaN): refused."""
    for text, value in good.items():
        assert read(text) == value
    for text in bad:
        with pytest.raises(ValueError, match=r"not a|out of"):
            read(text)


def test_xml_schemas_infinities_are_read_only_where_asked() -> None:
    """INF, -INF and NaN (XML Schema's spelling, or zeep's inf and nan) for SOAP's doubles."""
    assert xmlsafe.double("-INF", special=True) == -math.inf
    assert xmlsafe.double("inf", special=True) == math.inf
    assert math.isnan(xmlsafe.double(" NaN ", special=True))
    for text in ("Infinity", "nan(1)", "1e999", "in f"):
        with pytest.raises(ValueError, match=r"not a|out of"):
            xmlsafe.double(text, special=True)
    with pytest.raises(ValueError, match=r"not a"):
        xmlsafe.double("INF")
