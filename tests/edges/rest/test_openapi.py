"""The OpenAPI 3.1 document: valid, complete, and written from the contract."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from polyport import Settings
from polyport.demo.shop import shop
from polyport.node import Node
from polyport.testing import RunningNode
from polyport.web import openapi_document


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document(Node(shop, Settings(database=":memory:", event_log="memory")))


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    """openapi-spec-validator (not ours) accepts it."""
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_operation_is_there(document: dict[str, Any]) -> None:
    """Resources, methods, polling and jobs, with the verbs of the guide."""
    paths = document["paths"]
    assert set(paths["/v1/users"]) == {"get", "post"}
    assert set(paths["/v1/users/{id}"]) == {"get", "put", "delete"}
    assert set(paths["/v1/multiply"]) == {"post"}
    assert set(paths["/v1/events"]) == {"get"}
    assert set(paths["/v1/jobs/multiply"]) == {"post"}
    assert set(paths["/v1/jobs/{id}"]) == {"get"}
    created = paths["/v1/users"]["post"]["responses"]
    assert "201" in created and "Location" in created["201"]["headers"]
    assert "204" in paths["/v1/users/{id}"]["delete"]["responses"]
    get = paths["/v1/users/{id}"]["get"]["responses"]
    assert "304" in get and "ETag" in get["200"]["headers"]
    assert get["404"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }


def test_docstrings_become_descriptions(document: dict[str, Any]) -> None:
    """Method, parameter, model and enum docstrings are all in the document."""
    adjust = document["paths"]["/v1/adjust_stock"]["post"]
    assert adjust["summary"].startswith("Add (or remove")
    body = adjust["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["delta"]["description"] == "Units to add; negative to remove."
    assert body["required"] == ["product_id", "delta"]
    schemas = document["components"]["schemas"]
    assert schemas["User"]["description"] == "A customer of the shop."
    assert schemas["OrderStatus"]["enum"] == [
        "pending",
        "paid",
        "shipped",
        "delivered",
        "cancelled",
    ]
    assert document["info"]["description"].startswith("The guide's e-commerce example")


def test_security_reflects_the_contract(document: dict[str, Any]) -> None:
    """Public methods allow anonymous calls; others need a bearer token or an API key."""
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"bearer", "apiKey"}
    assert {} in document["paths"]["/v1/products/{id}"]["get"]["security"]
    assert {} not in document["paths"]["/v1/users/{id}"]["get"]["security"]


def test_development_mode_marks_auth_optional(demo: RunningNode) -> None:
    """In development mode the served document says credentials are optional (they are)."""
    served = httpx.get(f"{demo.url}/openapi.json").json()
    assert {} in served["paths"]["/v1/users/{id}"]["get"]["security"]


def test_list_parameters_carry_their_bounds(document: dict[str, Any]) -> None:
    """limit is bounded by the resource's max; filters are query parameters."""
    params = {p["name"]: p for p in document["paths"]["/v1/orders"]["get"]["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 1000
    assert params["limit"]["schema"]["default"] == 50
    assert params["status"]["in"] == "query"
