"""Schemathesis against the served /openapi.json: no 5xx, every response as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from polyport import Settings
from polyport.testing import serve_in_thread

SEEDS = (20261128, 20261129, 20261130)
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "allow_header_conformance",
        "unsupported_method",
    ]
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_demo_conforms_to_its_own_openapi_document(db_path: str, tmp_path: Path) -> None:
    """A bounded property-based run, positive and negative inputs, over every operation."""
    from polyport.demo.shop import shop

    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable, "schemathesis is a dev dependency"
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": db_path,
            "rate_limit": {"enabled": False},
            "limits": {"long_poll_max": 1.0},
            "jobs": {"wait_max": 1.0},
        }
    )
    with serve_in_thread(shop, settings) as server:
        for seed in SEEDS:
            result = subprocess.run(
                [
                    executable,
                    "run",
                    f"{server.url}/openapi.json",
                    "--checks",
                    CHECKS,
                    "--max-examples",
                    "12",
                    "--seed",
                    str(seed),
                    "--generation-database",
                    "none",
                    "--max-time",
                    "60",
                    "--request-timeout",
                    "30",
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
