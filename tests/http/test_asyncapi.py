"""The AsyncAPI 3.0 document: valid per the official parser, and what the node serves.

Validity is the AsyncAPI initiative's own parser (``@asyncapi/parser`` from
npm, in ``tests/asyncapi``, installed by ``make asyncapi-parser``): its JSON
Schema and its semantic rules (parameters matching the address, operation
messages from their channel, …). Without npm the validation tests skip, and
fail under ``POLYPORT_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field
from tests.conftest import REQUIRE_SERVICES

from polyport import Service, Settings
from polyport.core.jsonschema import JsonSchemas
from polyport.demo.shop import shop
from polyport.node import Node
from polyport.testing import RunningNode, serve_in_thread
from polyport.web import asyncapi_document

ROOT = Path(__file__).parents[2]
CHECKER = ROOT / "tests" / "asyncapi"
#: What the parser may say and still call the document clean: 3.1.0 exists, 3.0.0 is asked for.
ACCEPTED = {"asyncapi-latest-version"}


class Reading(BaseModel):
    """One measurement of one sensor."""

    model_config = ConfigDict(populate_by_name=True)

    site: str
    sensor_id: str = Field(alias="sensorId")
    value: float


class Alert(BaseModel):
    level: str
    text: str


class Note(BaseModel):
    text: str


plant = Service("plant", version=2)
plant.event(
    "telemetry.reading",
    Reading,
    channel="sites/{site}/sensors/{sensor_id}",
    description="A sensor reported a value.",
    scopes=["telemetry"],
    publish_scopes=["telemetry:write"],
)
plant.event("alerts.raised", Alert, channel="alerts/{level}", public=True)
plant.event("notes.posted", Note, publish_scopes=[])
plant.event("audit.logged", Note, scopes=["audit"])


@plant.method
async def ping() -> str:
    return "pong"


def node_of(service: Service, *, dev: bool = False, edges: list[str] | None = None) -> Node:
    settings = Settings(dev=dev, database=":memory:", event_log="memory")
    return Node(service, settings, edges=edges, announce=False)


def document_of(service: Service, **options: Any) -> dict[str, Any]:
    return asyncapi_document(node_of(service, **options)).build("node.example:8000")


# -- validity, by the official parser -------------------------------------------------------


@pytest.fixture(scope="module")
def parser() -> Path:
    """tests/asyncapi/validate.mjs, with its node_modules (installed now if npm can)."""
    script = CHECKER / "validate.mjs"
    installed = CHECKER / "node_modules" / ".installed-stamp"
    if not installed.exists() and shutil.which("make") and shutil.which("npm"):
        subprocess.run(["make", "-s", "asyncapi-parser"], cwd=ROOT, check=True, timeout=300)
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not installed.exists():
        missing = "the AsyncAPI parser is not installed (make asyncapi-parser needs npm)"
    if missing:
        if REQUIRE_SERVICES:
            pytest.fail(f"{missing} (POLYPORT_REQUIRE_SERVICES=1)")
        pytest.skip(missing)
    return script


def check(parser: Path, tmp_path: Path, **documents: dict[str, Any]) -> None:
    """Each document parses, with nothing said about it but :data:`ACCEPTED`."""
    files = []
    for name, document in documents.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        files.append(str(path))
    run = subprocess.run(
        ["node", str(parser), *files], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(run.stdout)
    for file in files:
        said = [d for d in report[file]["diagnostics"] if d["code"] not in ACCEPTED]
        assert said == [], f"{file}: {json.dumps(said, indent=1)}"
        assert report[file]["parsed"], file


def test_the_parser_refuses_a_broken_document(parser: Path, tmp_path: Path) -> None:
    """The check can fail: a parameter the address lacks is an error the parser reports."""
    document = document_of(plant)
    document["channels"]["alerts.raised"]["parameters"]["nope"] = {"description": "none"}
    with pytest.raises(AssertionError, match="asyncapi3-channel-parameters"):
        check(parser, tmp_path, broken=document)


def test_the_demo_documents_are_valid(parser: Path, tmp_path: Path, demo: RunningNode) -> None:
    """The demo's, served at /asyncapi.json in development mode and built in secure mode."""
    served = httpx.get(f"{demo.url}/asyncapi.json").json()
    assert served["asyncapi"] == "3.0.0"
    check(parser, tmp_path, dev=served, secure=document_of(shop))


def test_templated_private_and_publishable_events_are_valid(parser: Path, tmp_path: Path) -> None:
    """Two placeholders, an alias, public, scoped and publishable events; and a node without
    any edge carrying events (an empty document is still a document)."""
    check(
        parser,
        tmp_path,
        secure=document_of(plant),
        dev=document_of(plant, dev=True),
        sse_only=document_of(plant, edges=["rest", "sse"]),
        none=document_of(plant, edges=["rest"]),
    )


# -- what it says ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return document_of(plant)


def test_a_channel_is_its_template_with_one_parameter_per_field(
    document: dict[str, Any],
) -> None:
    """The address is the channel template; each placeholder is read from the payload."""
    channel = document["channels"]["telemetry.reading"]
    assert channel["address"] == "sites/{site}/sensors/{sensor_id}"
    assert channel["parameters"]["site"]["location"] == "$message.payload#/site"
    # The template names the Python field; the payload carries its alias.
    assert channel["parameters"]["sensor_id"]["location"] == "$message.payload#/sensorId"
    assert channel["messages"] == {
        "telemetry.reading": {"$ref": "#/components/messages/telemetry.reading"}
    }
    assert document["channels"]["notes.posted"]["address"] == "notes/posted"
    assert "parameters" not in document["channels"]["notes.posted"]


def test_a_message_payload_is_the_event_data_schema(document: dict[str, Any]) -> None:
    """The payload is the JSON Schema of the event's model, as /openapi.json writes it."""
    spec = plant.spec()
    schemas = JsonSchemas(spec.graph, "#/components/schemas/")
    for name, event in spec.events.items():
        message = document["components"]["messages"][name]
        assert message["payload"] == schemas.schema(event.payload), name
        assert message["contentType"] == "application/json"
    reading = document["components"]["messages"]["telemetry.reading"]
    assert reading["payload"] == {"$ref": "#/components/schemas/Reading"}
    assert reading["description"] == "A sensor reported a value."
    assert document["components"]["schemas"]["Reading"] == schemas.model(
        spec.graph.model("Reading")
    )


def test_the_schemas_are_the_openapi_documents(demo: RunningNode) -> None:
    """Every schema the messages reference is /openapi.json's schema of that name."""
    asyncapi = httpx.get(f"{demo.url}/asyncapi.json").json()
    openapi = httpx.get(f"{demo.url}/openapi.json").json()
    shared = asyncapi["components"]["schemas"]
    assert {"Order", "User", "InventoryChanged", "ChatMessage"} <= set(shared)
    for name, schema in shared.items():
        assert openapi["components"]["schemas"][name] == schema, name


def test_operations_per_pattern(document: dict[str, Any]) -> None:
    """SSE, polling, long polling, WebSocket, webhooks and MQTT send every event type;
    WebSocket and MQTT receive those clients may publish."""
    operations = document["operations"]
    events = {"telemetry.reading", "alerts.raised", "notes.posted", "audit.logged"}
    for name in events:
        for pattern in ("sse", "poll", "longpoll", "ws", "webhooks", "mqtt"):
            operation = operations[f"{pattern}.{name}"]
            assert operation["action"] == "send"
            assert operation["channel"] == {"$ref": f"#/channels/{name}"}
            assert operation["messages"] == [{"$ref": f"#/channels/{name}/messages/{name}"}]
            assert operation["tags"] == [{"name": pattern}]
    received = {k for k, op in operations.items() if op["action"] == "receive"}
    assert received == {
        f"{pattern}.publish.{name}"
        for pattern in ("ws", "mqtt")
        for name in ("telemetry.reading", "notes.posted")
    }
    assert set(document["servers"]) == {"sse", "poll", "ws", "webhooks", "mqtt"}
    assert document["channels"]["alerts.raised"]["servers"] == [
        {"$ref": f"#/servers/{key}"} for key in ("poll", "sse", "ws", "webhooks", "mqtt")
    ]
    sse = operations["sse.alerts.raised"]["bindings"]["http"]
    assert sse["method"] == "GET"
    assert sse["query"]["required"] == ["channel"]
    assert sse["query"]["properties"]["channel"]["examples"] == [["alerts/+"]]
    long_poll = operations["longpoll.alerts.raised"]["bindings"]["http"]["query"]
    assert long_poll["required"] == ["channel", "wait"]
    assert operations["webhooks.alerts.raised"]["bindings"] == {"http": {"method": "POST"}}


def test_servers_are_where_the_node_serves(document: dict[str, Any]) -> None:
    """Paths of this node's version; webhooks go to each subscriber's host."""
    servers = document["servers"]
    assert (servers["sse"]["protocol"], servers["sse"]["host"]) == ("http", "node.example:8000")
    assert servers["sse"]["pathname"] == "/v2/events/stream"
    assert servers["poll"]["pathname"] == "/v2/events"
    assert (servers["ws"]["protocol"], servers["ws"]["pathname"]) == ("ws", "/ws")
    assert servers["webhooks"]["host"] == "{subscriber}"
    assert "subscriber" in servers["webhooks"]["variables"]
    secure = asyncapi_document(node_of(plant)).build("node.example", secure=True)["servers"]
    assert (secure["sse"]["protocol"], secure["ws"]["protocol"]) == ("https", "wss")
    assert secure["webhooks"]["protocol"] == "http"


def test_security_follows_public_and_scopes(document: dict[str, Any]) -> None:
    """Private types need credentials (with their scopes named); public ones none; clients
    publish with publish_scopes; development mode needs nothing."""
    operations = document["operations"]
    bearer = {"$ref": "#/components/securitySchemes/bearer"}
    api_key = {"$ref": "#/components/securitySchemes/apiKey"}
    assert "security" not in operations["sse.alerts.raised"]
    assert operations["poll.audit.logged"]["security"] == [bearer, api_key]
    assert operations["poll.audit.logged"]["x-polyport-scopes"] == ["audit"]
    assert "x-polyport-scopes" not in operations["poll.notes.posted"]
    assert bearer in operations["sse.notes.posted"]["security"]
    query_token = {"$ref": "#/components/securitySchemes/accessToken"}
    assert query_token in operations["sse.audit.logged"]["security"]
    assert query_token in operations["ws.audit.logged"]["security"]
    assert query_token not in operations["poll.audit.logged"]["security"]
    publish = operations["ws.publish.telemetry.reading"]
    assert publish["x-polyport-scopes"] == ["telemetry:write"]
    assert "x-polyport-scopes" not in operations["ws.publish.notes.posted"]
    assert "security" in operations["ws.publish.notes.posted"]  # any signed-in client
    assert "security" not in operations["webhooks.audit.logged"]  # the node sends those
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "httpApiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["bearer"]["scheme"] == "bearer"
    dev = document_of(plant, dev=True)
    assert not any("security" in op for op in dev["operations"].values())
    assert "securitySchemes" not in dev["components"]


def test_every_event_type_is_listed_public_or_not(document: dict[str, Any]) -> None:
    """As /openapi.json lists every method: rights are enforced on calls, not by hiding names."""
    assert set(plant.events) <= set(document["channels"])


def test_an_edge_turned_off_takes_its_server_and_operations() -> None:
    """--edges decides: only SSE leaves only SSE; no event edge leaves no channel at all."""
    sse_only = document_of(plant, edges=["rest", "sse"])
    assert set(sse_only["servers"]) == {"sse"}
    assert {op.partition(".")[0] for op in sse_only["operations"]} == {"sse"}
    assert sse_only["channels"]["alerts.raised"]["servers"] == [{"$ref": "#/servers/sse"}]
    no_ws = document_of(plant, edges=["sse", "poll", "webhooks", "mqtt-bridge"])
    assert not any(op["action"] == "receive" for op in no_ws["operations"].values())
    assert "ws" not in no_ws["servers"]
    none = document_of(plant, edges=["rest"])
    assert none["servers"] == none["channels"] == none["operations"] == {}
    assert none["components"]["messages"] == {}
    catalog = node_of(plant, edges=["rest"]).catalog()
    assert not any(entry.target == "AsyncAPI" for entry in catalog)
    assert any(entry.target == "AsyncAPI" for entry in node_of(plant).catalog())


def test_the_webhooks_edges_own_event_is_there_with_it() -> None:
    """webhooks.endpoint.disabled is read like any event while the webhooks edge runs."""
    with_webhooks = document_of(plant)
    channel = with_webhooks["channels"]["webhooks.endpoint.disabled"]
    assert channel["address"] == "webhooks/endpoints"
    assert with_webhooks["operations"]["sse.webhooks.endpoint.disabled"]["x-polyport-scopes"] == [
        "webhooks:admin"
    ]
    payload = with_webhooks["components"]["messages"]["webhooks.endpoint.disabled"]["payload"]
    assert payload["type"] == "object"
    assert "webhooks.endpoint.disabled" not in document_of(plant, edges=["sse"])["channels"]


def test_mqtt_is_a_server_with_a_send_and_a_receive_per_event_type(
    document: dict[str, Any],
) -> None:
    """The MQTT listener: protocol mqtt 5.0 on its own port of the requested host; a send
    (SUBSCRIBE) per type, a receive (PUBLISH) per publishable type, with mqtt bindings and
    the password as credential."""
    server = document["servers"]["mqtt"]
    assert (server["protocol"], server["protocolVersion"]) == ("mqtt", "5.0")
    assert server["host"] == "node.example:1883"  # not built for a started node: the default
    assert server["bindings"]["mqtt"]["maximumPacketSize"] == 65536
    send = document["operations"]["mqtt.telemetry.reading"]
    assert send["action"] == "send"
    assert send["bindings"]["mqtt"] == {"qos": 2, "retain": True, "bindingVersion": "0.2.0"}
    password = {"$ref": "#/components/securitySchemes/mqttPassword"}
    assert send["security"] == [password]
    assert send["x-polyport-scopes"] == ["telemetry"]
    publish = document["operations"]["mqtt.publish.telemetry.reading"]
    assert (publish["action"], publish["x-polyport-scopes"]) == ("receive", ["telemetry:write"])
    assert "mqtt.publish.alerts.raised" not in document["operations"]  # server-only type
    assert "security" not in document["operations"]["mqtt.alerts.raised"]  # public
    assert document["components"]["securitySchemes"]["mqttPassword"]["type"] == "userPassword"
    off = Settings(dev=False, database=":memory:", event_log="memory", mqtt={"enabled": False})
    node = Node(plant, off, announce=False)
    assert "mqtt" not in asyncapi_document(node).build("node.example:8000")["servers"]


def test_served_for_the_host_the_client_used() -> None:
    """Servers name the Host the request named; a Host that is no host gives the node's."""
    with serve_in_thread(plant, edges=["sse", "ws", "mqtt"]) as node:
        url = f"{node.url}/asyncapi.json"
        named = httpx.get(url, headers={"Host": "events.example:8443"})
        assert named.status_code == 200
        assert named.json()["servers"]["ws"]["host"] == "events.example:8443"
        # MQTT on its own port of the same host: the one the node bound.
        assert named.json()["servers"]["mqtt"]["host"] == f"events.example:{node.mqtt_port}"
        junk = httpx.get(url, headers={"Host": "no host!"}).json()
        assert junk["servers"]["ws"]["host"] == f"127.0.0.1:{node.port}"
        assert junk["servers"]["mqtt"]["host"] == f"127.0.0.1:{node.mqtt_port}"
        etag = named.headers["etag"]
        again = httpx.get(url, headers={"Host": "events.example:8443", "If-None-Match": etag})
        assert again.status_code == 304


# -- queues ---------------------------------------------------------------------------------

depot = Service("depot")


class Parcel(BaseModel):
    weight: int


class Label(BaseModel):
    code: str


parcels = depot.queue("parcels", Parcel, scopes=("parcels:send",))
depot.queue("returns", Parcel, public=True)  # no consumer: stored for someone else


@parcels.consumer
async def label(parcel: Parcel) -> Label:
    return Label(code=f"L{parcel.weight}")


def test_queues_with_replies_are_valid(parser: Path, tmp_path: Path) -> None:
    """A queue is a channel the node receives on; one whose consumer returns a value also
    answers calls, with a reply to the queue a request names."""
    secure = document_of(depot)
    check(parser, tmp_path, secure=secure, dev=document_of(depot, dev=True))
    call = secure["operations"]["queues.parcels.call"]
    assert call["reply"]["address"]["location"] == "$message.header#/reply-to"
    reply = secure["components"]["messages"]["queue.parcels.reply"]
    assert reply["payload"] == {"$ref": "#/components/schemas/Label"}
    assert secure["channels"]["queue.parcels.reply"]["address"] is None
    assert "queues.returns.call" not in secure["operations"]  # nobody answers it
