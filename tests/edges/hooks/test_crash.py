"""A node SIGKILLed in the middle of a handler loses nothing: the next node runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import httpx
import pytest

Lab = types.SimpleNamespace

HERE = Path(__file__).parent
BODY = b'{"type":"payment.succeeded","amount":1200}'

# A node serving this directory's receivers whose handlers hang (the gate is
# closed), printing its URL when it serves.
CHILD = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {here!r})
    import conftest
    conftest.recorder.gate.clear()
    with conftest.serve({db!r}, hooks={{"timeout": 1}}) as node:
        print(node.url, flush=True)
        threading.Event().wait()
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_delivery_survives_sigkill_of_the_node_running_its_handler(
    lab: Lab, tmp_path: Path
) -> None:
    """Accepted, handler running, process killed: a new node on the same database takes
    the delivery over when the dead node's lease ends, and runs it once more."""
    db = str(tmp_path / "db")
    script = CHILD.format(here=str(HERE), db=db)
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(HERE.parents[2]),
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        assert url.startswith("http://"), "the child node did not start"
        headers = lab.standard_headers(BODY, msg_id="msg_crash")
        response = httpx.post(f"{url}/hooks/flaky", content=BODY, headers=headers, timeout=10)
        assert response.json()["status"] == "accepted"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = httpx.get(f"{url}/hooks/flaky/deliveries/msg_crash", timeout=10).json()
            if found["status"] == "running":
                break
            time.sleep(0.02)
        assert found["status"] == "running"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    with lab.serve(db, hooks={"timeout": 1}) as node:
        # The same id again, while the takeover is pending: still a duplicate.
        again = lab.standard_headers(BODY, msg_id="msg_crash")
        response = httpx.post(f"{node.url}/hooks/flaky", content=BODY, headers=again, timeout=10)
        assert response.json()["status"] == "duplicate"
        lab.recorder.wait_for(lambda: len(lab.recorder.of("flaky")) == 1)
        delivery = lab.recorder.of("flaky")[0][2]
        # The killed run counted as an attempt (the child may even have timed out
        # and retried before it died, on a slow machine).
        assert delivery.id == "msg_crash" and delivery.attempt >= 2
