"""The pre-auth freeze of issue 14: one hostile XML body must not stop the node.

A UTF-16 body hid its DOCTYPE from a byte search, and libxml2 then opened the
file its parameter entity named. Here that file is a named pipe, which blocks
whoever opens it for reading: a node that follows the entity stops answering.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    settings = Settings(dev=True, database=str(tmp_path / "db.sqlite3"))
    with serve_in_thread(shop, settings, edges=["xmlrpc", "soap"]) as server:
        yield server


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "tripwire"
    os.mkfifo(path)
    yield path
    # Release a node stuck opening it, so the test ends either way (no reader: ENXIO).
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("path", ["/xmlrpc", "/soap"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-8"])
def test_a_hostile_document_type_is_refused_and_the_node_answers(
    node: RunningNode, fifo: Path, path: str, encoding: str
) -> None:
    """The reported 546-byte body gets a clear fault; /healthz answers within a second after."""
    body = (
        f'<?xml version="1.0" encoding="{encoding.upper()}"?>'
        f'<!DOCTYPE r [<!ENTITY % p SYSTEM "file://{fifo}"> %p;]>'
        "<methodCall><methodName>x</methodName></methodCall>"
    ).encode(encoding)
    with httpx.Client(timeout=5.0) as client:
        headers = {"content-type": "text/xml"}
        answer = client.post(f"{node.url}{path}", content=body, headers=headers)
        assert b"DOCTYPE" in answer.content
        # An XML-RPC fault rides a 200; a SOAP 1.1 fault, a 500.
        assert answer.status_code == {"/xmlrpc": 200, "/soap": 500}[path]
        health = client.get(f"{node.url}/healthz", timeout=1.0)
        assert health.status_code == 200
