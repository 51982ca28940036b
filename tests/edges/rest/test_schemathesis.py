"""Schemathesis, every check, against the demo's /openapi.json: the document is the server.

``--checks all`` includes positive_data_acceptance (a request the document
allows is not refused with 400/422) and negative_data_rejection (a request it
forbids is refused): the document describes exactly what validation accepts.

What the run is told, each for a reason no schema can carry (SCHEMATHESIS_TOML):

* ``multiply`` may answer 422 OUT_OF_RANGE: ``a * b`` of two int64 arguments may
  not fit the int64 result, and no JSON Schema states ``a * b`` within int64;
* ``poll_events`` may answer 410 or 422 to a well-formed cursor: ``after`` names a
  position of the log, and one from another epoch is recovery-failed (410), one
  ahead of the log a 422 — facts of the log's state, not of the request;
* ``webrtc_offer`` may answer 422 to a schema-valid body: whether a session
  description is one aiortc can answer (a data channel, fingerprints, ICE
  credentials) is not something JSON Schema states; the schema says ``v=0`` first;
* ``sales_report`` is slow by design, up to its documented ``delay`` of 10 s;
* a request refused for its size by the HTTP server (414 for a URL over
  ``limits.max_url``, 431 for headers) counts as refused, as 413 does for a body:
  negative data can be as long as it likes, and RFC 9110 names these refusals;
* ``stream_events`` (``x-polyport-streaming``) is left out: a text/event-stream
  body never ends, and schemathesis reads whole bodies. Its parameters are the
  polling ones, described by the same code and exercised through ``poll_events``;
* the queues' ``…/call`` operations are left out: a call waits for the queue's
  consumer (up to its ``timeout``, 30 s by default) and answers what the
  consumer did — 500 for a request that died, 504 for no reply in time — facts
  of the consumers' state, not of the request. Their body is the queue's send
  body, validated by the same code and exercised through the send operations;
  tests/queues/test_http.py calls them.

The machine's DNS is not part of the contract: webhook target names resolve to
127.0.0.1 here (allowed by ``webhooks.allow_private``), and the first delivery
attempt waits an hour, so the run never connects anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from polyport import Settings
from polyport.edges.webhooks import ssrf
from polyport.testing import serve_in_thread

SEEDS = (20261128, 20261129, 20261130)
#: What positive_data_acceptance expects by default, and the answers listed above.
ACCEPTED = '"2xx", "3xx", "401", "403", "404", "409", "429", "5xx"'
#: What negative_data_rejection expects by default, and the server's own size refusals.
REFUSED = '"400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"'
SCHEMATHESIS_TOML = f"""
[checks.negative_data_rejection]
expected-statuses = [{REFUSED}, "413", "414", "431"]

[[operations]]
include-operation-id = "multiply"
checks.positive_data_acceptance.expected-statuses = [{ACCEPTED}, "422"]

[[operations]]
include-operation-id = "poll_events"
checks.positive_data_acceptance.expected-statuses = [{ACCEPTED}, "410", "422"]

[[operations]]
include-operation-id = "webrtc_offer"
checks.positive_data_acceptance.expected-statuses = [{ACCEPTED}, "422"]

[[operations]]
include-operation-id = "sales_report"
checks.max_response_time = 15.0
"""


async def _loopback(host: str, port: int) -> list[tuple[Any, ...]]:
    return [(2, 1, 6, "", ("127.0.0.1", port))]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_demo_conforms_to_its_own_openapi_document(
    db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bounded property-based run of every check, positive and negative inputs, over
    every operation (about a minute: the time budget ends the fuzzing phase)."""
    from polyport.demo.shop import shop

    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable, "schemathesis is a dev dependency"
    monkeypatch.setattr(ssrf, "getaddrinfo", _loopback)
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_TOML)
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": db_path,
            "rate_limit": {"enabled": False},
            "limits": {"long_poll_max": 1.0},
            "jobs": {"wait_max": 1.0},
            "grpc": {"port": 0},
            "webhooks": {"allow_private": ["127.0.0.1"], "retry_schedule": [3600.0]},
        }
    )
    with serve_in_thread(shop, settings) as server:
        for seed in SEEDS:
            result = subprocess.run(
                [
                    executable,
                    "--config-file",
                    str(config),
                    "run",
                    f"{server.url}/openapi.json",
                    "--checks",
                    "all",
                    "--exclude-by",
                    "/x-polyport-streaming == true",
                    "--exclude-path-regex",
                    "^/v1/queues/[^/]+/call$",
                    "--max-examples",
                    "10",
                    "--seed",
                    str(seed),
                    "--generation-database",
                    "none",
                    "--max-time",
                    "50",
                    "--request-timeout",
                    "20",
                    "--no-color",
                    "--phases",
                    "examples,coverage,fuzzing",
                    "--workers",
                    "2",
                ],
                capture_output=True,
                text=True,
                timeout=280,
                cwd=tmp_path,
            )
            if result.returncode == 0 or not only_interpreter_bug(result.stdout):
                break
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


def only_interpreter_bug(output: str) -> bool:
    """Whether the run failed only on CPython 3.11's 'AST constructor recursion depth
    mismatch' (a SystemError inside hypothesis' data generation, not a finding about
    the API: python/cpython#106905); then the run is repeated with another seed."""
    return (
        "AST constructor recursion depth mismatch" in output
        and "Failures:" not in output
        and output.count("Runtime Error") <= 2
    )
