"""One fuzzed node for the whole fuzz suite (see :mod:`tests.fuzz.harness`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.fuzz.harness import FuzzedNode


@pytest.fixture(scope="session")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedNode]:
    database = tmp_path_factory.mktemp("fuzz") / "db.sqlite3"
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fuzznode.py")), str(database)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        http_port, grpc_port = (int(p) for p in process.stdout.readline().split())
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        node = FuzzedNode(url, "127.0.0.1", http_port, grpc_port, process, 0)
        node.baseline_rss = node.rss()
        yield node
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
