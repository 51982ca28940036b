"""Receivers' parameters: what the OpenAPI document says is what the server reads.

Schemathesis found ``before=0`` refused though the document allowed it; the
same class: digits beyond ASCII (``²``) taken for numbers and then a 500, and
signature headers documented as any string.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

Lab = Any


def test_the_listing_cursor_is_documented_as_read(lab: Lab, tmp_path: Any) -> None:
    """``before`` is a row id from 1 to 2**63 - 1, as the listing reads it (an empty value,
    like an empty ``limit`` or ``status``, was taken for none though documented as none)."""
    with lab.serve(str(tmp_path / "db")) as node:
        document = httpx.get(f"{node.url}/openapi.json").json()
        listing = document["paths"]["/hooks/std/deliveries"]["get"]["parameters"]
        pattern = next(p for p in listing if p["name"] == "before")["schema"]["pattern"]
        url = f"{node.url}/hooks/std/deliveries"
        assert httpx.get(url, params={"limit": ""}).status_code == 422
        assert httpx.get(url, params={"status": ""}).status_code == 422
        for before, status in (("1", 200), ("", 422), ("0", 422), ("9223372036854775808", 422)):
            assert bool(re.fullmatch(pattern, before)) == (status == 200), before
            assert httpx.get(url, params={"before": before}).status_code == status, before


def test_non_ascii_digits_are_refused_not_a_500(lab: Lab, tmp_path: Any) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises: these were 500s."""
    with lab.serve(str(tmp_path / "db")) as node:
        url = f"{node.url}/hooks/std/deliveries"
        assert httpx.get(url, params={"before": "²"}).status_code == 422
        assert httpx.get(url, params={"limit": "²"}).status_code == 422
        body = b'{"type": "x"}'
        # Header values travel as bytes; the server reads them as Latin-1.
        headers = lab.standard_headers(body) | {"webhook-timestamp": "²".encode("latin-1")}
        answer = httpx.post(f"{node.url}/hooks/std", content=body, headers=headers)
        assert answer.status_code == 400, answer.text


def test_standard_webhooks_headers_are_documented_required(lab: Lab, tmp_path: Any) -> None:
    """The three headers are required, each with the form the verifier reads; a signed
    request the reference library made matches them."""
    with lab.serve(str(tmp_path / "db")) as node:
        document = httpx.get(f"{node.url}/openapi.json").json()
        headers = {p["name"]: p for p in document["paths"]["/hooks/std"]["post"]["parameters"]}
        signed = lab.standard_headers(b"{}")
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            assert headers[name]["required"] is True
            assert re.fullmatch(headers[name]["schema"]["pattern"], signed[name]), name
