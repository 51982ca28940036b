"""Restarts: history, jobs and interrupted jobs, across a real process being killed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

SERVICE = textwrap.dedent("""
    import asyncio
    from pydantic import BaseModel
    from polyport import Service

    class Note(BaseModel):
        text: str

    svc = Service("restartable")
    noted = svc.event("notes.added", Note)

    @svc.method
    async def add_note(text: str) -> str:
        await svc.publish(noted, Note(text=text))
        return text

    @svc.method
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @svc.method(idempotent=True)
    async def slow_idempotent(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done again"
""")


@contextmanager
def serving(workdir: Path, grace: float = 0.5) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`polyport serve restartable:svc --dev` in its own process, on a free port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polyport",
            "serve",
            "restartable:svc",
            "--dev",
            "--port",
            "0",
            "--database",
            str(workdir / "state.sqlite3"),
        ],
        cwd=workdir,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={
            **os.environ,
            "POLYPORT_LOG__FORMAT": "text",
            "POLYPORT_JOBS__SHUTDOWN_GRACE": str(grace),
            "POLYPORT_GRPC__PORT": "0",  # any free port: the default may be another node's
            "COLUMNS": "200",
        },
    )
    assert process.stderr is not None
    url = None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if match:
            url = match.group(1)
            break
        if not line and process.poll() is not None:
            break
    assert url, "server did not start:\n" + "".join(lines)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stderr.close()


def test_history_and_jobs_survive_a_kill(tmp_path: Path) -> None:
    """After SIGKILL and restart: events resume from the same cursor, finished jobs remain,
    a running non-idempotent job is failed INTERRUPTED, an idempotent one runs again."""
    (tmp_path / "restartable.py").write_text(SERVICE)
    with serving(tmp_path) as (url, process), httpx.Client(base_url=url) as c:
        for text in ("one", "two"):
            assert c.post("/v1/add_note", json={"text": text}).json() == text
        first = c.get("/v1/events", params={"channel": "notes/added"}).json()["events"][0]
        done = c.post("/v1/jobs/add_note", json={"text": "three"}).headers["location"]
        assert c.get(done, params={"wait": 5}).json()["status"] == "complete"
        interrupted = c.post("/v1/jobs/slow", json={"seconds": 60}).headers["location"]
        rerun = c.post("/v1/jobs/slow_idempotent", json={"seconds": 0.2}).headers["location"]
        rerun_first = c.get(rerun, params={"wait": 5}).json()
        assert rerun_first["status"] == "complete"
        again = c.post("/v1/jobs/slow_idempotent", json={"seconds": 60}).headers["location"]
        for location in (interrupted, again):
            for _ in range(50):
                if c.get(location).json()["status"] == "running":
                    break
                time.sleep(0.1)
            assert c.get(location).json()["status"] == "running"
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    with serving(tmp_path) as (url, _), httpx.Client(base_url=url) as c:
        body = c.get("/v1/events", params={"channel": "notes/added", "after": first["id"]}).json()
        assert [e["data"]["text"] for e in body["events"]] == ["two", "three"]
        assert c.get(done).json()["result"] == "three"
        failed = c.get(interrupted).json()
        assert failed["status"] == "failed" and failed["error"]["code"] == "INTERRUPTED"
        assert "idempotent" in failed["error"]["message"]
        restarted = c.get(again).json()
        assert restarted["status"] == "running" and restarted["attempts"] == 2


def test_a_graceful_stop_lets_running_jobs_finish(tmp_path: Path) -> None:
    """SIGTERM: the node stops taking work, finishes the running job, then exits 0."""
    (tmp_path / "restartable.py").write_text(SERVICE)
    with serving(tmp_path, grace=20) as (url, process), httpx.Client(base_url=url) as c:
        location = c.post("/v1/jobs/slow", json={"seconds": 1.5}).headers["location"]
        for _ in range(50):
            if c.get(location).json()["status"] == "running":
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    with serving(tmp_path) as (url, _), httpx.Client(base_url=url) as c:
        job = c.get(location).json()
        assert job["status"] == "complete"
        assert job["result"] == "done"
