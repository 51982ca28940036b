"""Polling, long polling and jobs over plain HTTP.

GET  /v1/events?channel=…&after=…[&limit=…]   poll: events after the cursor, at once
GET  /v1/events?…&wait=N                      long poll: hold up to N s for the first event
POST /v1/jobs/{method}                         202 + Location + Retry-After
GET  /v1/jobs/{id}[?wait=N]                    pending | running | complete | failed
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from polyport.core.contract import MethodKind
from polyport.core.dispatch import Binding
from polyport.core.errors import InvalidArgument
from polyport.core.events import parse_patterns
from polyport.core.jobs import Job
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.core.textforms import JSON_NUMBER
from polyport.edges.kinds import ChannelEdge, HttpEdge
from polyport.http.asyncapi import AsyncApiDocument
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import Request, Response
from polyport.http.router import Endpoint, Route

EDGE = "poll"
NO_STORE = (b"cache-control", b"no-store")


def _number(
    request: Request, name: str, default: float, low: float, high: float, *, whole: bool = False
) -> float:
    """A query number as the document describes it: JSON's number syntax, within bounds.

    ``float()`` would also take ``" 1"``, ``"1_0"`` and ``"inf"``; the document's
    ``number`` (and ``integer``: a number without a fraction) takes none of them.
    """
    raw = request.query.get(name)
    if raw is None:
        return default
    value = float(raw) if JSON_NUMBER.fullmatch(raw) else math.nan
    if not math.isfinite(value) or not low <= value <= high or (whole and not value.is_integer()):
        kind = "a whole number" if whole else "a number"
        raise InvalidArgument(
            f"{name} must be {kind} from {low:g} to {high:g}",
            details=[{"field": name, "message": f"must be {kind} from {low:g} to {high:g}"}],
        )
    return value


def _time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_json(job: Job) -> bytes:
    """A job's status document; the result is spliced in as already-encoded JSON."""
    head: dict[str, Any] = {
        "id": job.id,
        "method": job.method,
        "status": job.status,
        "created": _time(job.created),
        "started": _time(job.started),
        "finished": _time(job.finished),
        "attempts": job.attempts,
    }
    if job.error is not None:
        head["error"] = job.error
    body = orjson.dumps(head)
    if job.status == "complete":
        body = body[:-1] + b',"result":' + (job.result or b"null") + b"}"
    return body


class PollEdge(HttpEdge, ChannelEdge):
    """Serves the event log to pollers and long-pollers, and runs jobs."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.prefix = f"/v{runtime.spec.version}"
        self.limits = runtime.settings.limits
        self.jobs_config = runtime.settings.jobs

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def routes(self) -> list[Route]:
        routes = [
            Route("GET", f"{self.prefix}/events", self.poll, "poll"),
            Route("GET", f"{self.prefix}/jobs/{{id}}", self.get_job, "get_job"),
        ]
        # One static route per method: /v1/jobs/multiply accepts only POST, and job
        # ids ("j-…") can never be mistaken for method names.
        for name, binding in self.runtime.dispatcher.bindings.items():
            if binding.kind is MethodKind.UNARY:
                routes.append(
                    Route(
                        "POST",
                        f"{self.prefix}/jobs/{name}",
                        self._submitter(binding),
                        f"start_{name}_job",
                    )
                )
        return routes

    def describe(self, doc: OpenApiDocument) -> None:
        describe(self, doc)

    def describe_channels(self, doc: AsyncApiDocument) -> None:
        describe_channels(self, doc)

    def catalog(self) -> list[CatalogEntry]:
        spec = self.runtime.spec
        entries = []
        for name, event in spec.events.items():
            channel = event.event.channel
            url = f"GET {self.prefix}/events?channel={channel}"
            entries.append(CatalogEntry("polling", name, "event", f"{url}&after=CURSOR"))
            entries.append(
                CatalogEntry(
                    "long polling",
                    name,
                    "event",
                    f"{url}&after=CURSOR&wait={self.limits.long_poll_max:g}",
                )
            )
        for method in spec.methods.values():
            if method.kind is MethodKind.UNARY:
                entries.append(
                    CatalogEntry(
                        "jobs", method.name, "method", f"POST {self.prefix}/jobs/{method.name}"
                    )
                )
        return entries

    # -- events -----------------------------------------------------------------------

    async def poll(self, request: Request) -> Response | None:
        caller = request.caller(EDGE)
        channels = request.query_all("channel")
        if not channels:
            raise InvalidArgument(
                "give at least one channel, e.g. ?channel=orders/created or ?channel=orders/%23",
                details=[{"field": "channel", "message": "required"}],
            )
        patterns = parse_patterns(channels)
        limit = int(_number(request, "limit", 100, 1, self.limits.poll_max_events, whole=True))
        wait = _number(request, "wait", 0.0, 0.0, self.limits.long_poll_max)
        after = request.query.get("after") or None  # empty: as if not given
        types = self.runtime.dispatcher.admit_subscribe(patterns, caller)
        work = self.runtime.hub.poll(patterns, after=after, limit=limit, wait=wait, types=types)
        result = await (request.unless_disconnected(work) if wait > 0 else work)
        if result is None:
            return None  # the client left; nobody to answer
        body = (
            b'{"events":['
            + b",".join(e.to_json() for e in result.events)
            + b'],"next":'
            + orjson.dumps(result.next)
            + b"}"
        )
        return Response(200, body, headers=[NO_STORE])

    # -- jobs ---------------------------------------------------------------------------

    def _submitter(self, binding: Binding) -> Endpoint:
        jobs = self.runtime.jobs
        retry_after = str(self.jobs_config.retry_after).encode()

        async def submit_job(request: Request) -> Response:
            caller = request.caller(EDGE)
            job = await jobs.submit(binding, await request.json_body(), caller)
            headers = [
                (b"location", f"{self.prefix}/jobs/{job.id}".encode()),
                (b"retry-after", retry_after),
                NO_STORE,
            ]
            return Response(202, job_json(job), headers=headers)

        return submit_job

    async def get_job(self, request: Request) -> Response | None:
        caller = request.caller(EDGE)
        wait = _number(request, "wait", 0.0, 0.0, self.jobs_config.wait_max)
        work = self.runtime.jobs.wait(request.params["id"], caller, wait)
        job = await (request.unless_disconnected(work) if wait > 0 else work)
        if job is None:
            return None
        headers = [NO_STORE]
        if not job.done:
            headers.append((b"retry-after", str(self.jobs_config.retry_after).encode()))
        return Response(200, job_json(job), headers=headers)


def describe(edge: PollEdge, doc: OpenApiDocument) -> None:
    """Add polling, long polling and jobs to the OpenAPI document."""
    spec = edge.runtime.spec
    payloads: list[dict[str, object]] = []
    for event in spec.events.values():
        schema = doc.schemas.schema(event.payload)
        if schema not in payloads:  # created and updated share a model
            payloads.append(schema)
    doc.extra_schemas["EventEnvelope"] = {
        "type": "object",
        "title": "EventEnvelope",
        "description": "One event as every push pattern delivers it.",
        "properties": {
            "id": {"type": "string", "description": "'{epoch}:{offset}'; a resume cursor"},
            "channel": {"type": "string"},
            "offset": {"type": "integer", "minimum": 1},
            "epoch": {"type": "string"},
            "type": {"type": "string", "enum": sorted(spec.events)}
            if spec.events
            else {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "data": {"anyOf": payloads} if payloads else {},
        },
        "required": ["id", "channel", "offset", "epoch", "type", "time", "data"],
    }
    doc.extra_schemas["Job"] = {
        "type": "object",
        "title": "Job",
        "properties": {
            "id": {"type": "string"},
            "method": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "running", "complete", "failed"]},
            "created": {"type": "string", "format": "date-time"},
            "started": {"type": ["string", "null"], "format": "date-time"},
            "finished": {"type": ["string", "null"], "format": "date-time"},
            "attempts": {"type": "integer"},
            "result": {"description": "The method's result, once complete"},
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "required": ["id", "method", "status", "created", "attempts"],
    }
    tag = doc.tag("events", "Polling and long polling on the event log")
    limits = edge.limits
    doc.add(
        f"{edge.prefix}/events",
        "get",
        {
            "operationId": "poll_events",
            "summary": "Events after a cursor (poll); with wait, hold until one arrives",
            "tags": [tag],
            "security": doc.security(any(e.event.public for e in spec.events.values())),
            "parameters": [
                doc.channel_parameter(),
                doc.cursor_parameter(
                    "after",
                    "Resume after this cursor: an event id, a 'next' value, "
                    "'now' or 'earliest' (the default; so is an empty value)",
                    empty=True,
                ),
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": limits.poll_max_events,
                        "default": 100,
                    },
                },
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "description": "Long poll: seconds to hold the request when nothing is new",
                    "schema": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": limits.long_poll_max,
                        "default": 0,
                    },
                },
            ],
            "responses": {
                "200": {
                    "description": "Events, oldest first, and the cursor to continue from",
                    "content": doc.json_content(
                        {
                            "type": "object",
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "items": doc.schemas.ref("EventEnvelope"),
                                },
                                "next": {"type": "string"},
                            },
                            "required": ["events", "next"],
                        }
                    ),
                },
                **doc.problems(400, 410, 422),
            },
        },
    )
    jobs_tag = doc.tag("jobs", "Any method, started now and fetched later")
    job = doc.json_content(doc.schemas.ref("Job"))
    for method in spec.methods.values():
        if method.kind is not MethodKind.UNARY:
            continue
        doc.add(
            f"{edge.prefix}/jobs/{method.name}",
            "post",
            doc.describe_method(
                method,
                operationId=f"start_{method.name}_job",
                tags=[jobs_tag],
                summary=f"Start {method.name} as a job",
                requestBody={
                    "required": any(p.required for p in method.params),
                    "content": doc.json_content(doc.body_schema(method.params)),
                },
                responses={
                    "202": {
                        "description": "Accepted; poll the Location",
                        "headers": {
                            "Location": {"schema": {"type": "string"}},
                            "Retry-After": {"schema": {"type": "integer"}},
                        },
                        "content": job,
                    },
                    **doc.problems(400, 413, 415, 422),
                },
            ),
        )
    doc.add(
        f"{edge.prefix}/jobs/{{id}}",
        "get",
        {
            "operationId": "get_job",
            "summary": "A job's status and, once complete, its result; ?wait= long-polls",
            "tags": [jobs_tag],
            "security": doc.security(any(m.public for m in spec.methods.values())),
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": edge.jobs_config.wait_max,
                        "default": 0,
                    },
                },
            ],
            "responses": {
                "200": {"description": "The job", "content": job},
                **doc.problems(404, 422),
            },
        },
    )


def describe_channels(edge: PollEdge, doc: AsyncApiDocument) -> None:
    """Every event type, answered to pollers and held for long pollers."""
    prefix = edge.prefix
    limits = edge.limits
    doc.server(
        "poll",
        "http",
        pathname=f"{prefix}/events",
        title="Polling and long polling",
        description="GET with ?channel= (repeatable, + and # wildcards) and ?after= answers "
        "at once with {events: [envelope…], next}; with ?wait=N it holds the request until "
        "an event arrives (long polling). A cursor history no longer holds is answered "
        "with 410 Gone and the code RECOVERY_FAILED.",
    )
    for name, event in doc.events.items():
        security, extensions = doc.security(
            ("bearer", "apiKey"), public=event.public, scopes=event.scopes
        )
        query: dict[str, Any] = {
            "channel": doc.channels_query(event),
            "after": doc.cursor(
                "Resume after this cursor: an event id, a 'next' value, 'now' or 'earliest' "
                "(the default)",
                empty=True,
            ),
            "limit": {"type": "integer", "minimum": 1, "maximum": limits.poll_max_events},
        }
        wait = {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": limits.long_poll_max,
            "description": "Seconds to hold the request when nothing is new",
        }
        url = f"GET {prefix}/events?channel={doc.query_pattern(event)}&after=CURSOR"
        shape = (
            "as {events: [envelope…], next}: each envelope "
            "{id, channel, offset, epoch, type, time, data} carries this message as `data`; "
            "`next` is the cursor to ask with next time."
        )
        for key, summary, description, wait_query in (
            (
                f"poll.{name}",
                f"{name} events, answered at once to a poller",
                f"{url}: the events after the cursor, at once, {shape}",
                {},
            ),
            (
                f"longpoll.{name}",
                f"{name} events, held for a long poller until one arrives",
                f"{url}&wait={limits.long_poll_max:g}: held until an event arrives "
                f"(or wait runs out), then answered {shape}",
                {"wait": wait},
            ),
        ):
            doc.operation(
                key,
                "send",
                doc.event_channel(name),
                server="poll",
                summary=summary,
                description=description,
                security=security,
                bindings={
                    "http": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {**query, **wait_query},
                            "required": ["channel", *wait_query],
                        },
                    }
                },
                tags=[key.partition(".")[0]],
                extensions=extensions,
            )
