"""The subscriptions API: endpoints, secrets, and the delivery log, as REST resources.

POST   /v{n}/webhooks                                     subscribe (201; the secret shown once)
GET    /v{n}/webhooks[?limit=&cursor=]                    list
GET    /v{n}/webhooks/{id}                                one
PATCH  /v{n}/webhooks/{id}                                change url, filters, description…
DELETE /v{n}/webhooks/{id}                                unsubscribe (204), with its deliveries
POST   /v{n}/webhooks/{id}/rotate                         new secret; the old one signs on a while
POST   /v{n}/webhooks/{id}/enable | /disable              switch delivery on or off
POST   /v{n}/webhooks/{id}/test                           send a webhooks.test message (202)
GET    /v{n}/webhooks/{id}/deliveries[?status=&limit=&before=]   the delivery log, newest first
GET    /v{n}/webhooks/{id}/deliveries/{event_id}          one delivery with every attempt
POST   /v{n}/webhooks/{id}/deliveries/{event_id}/replay   attempt it again (202)
POST   /v{n}/webhooks/{id}/recover                        retry every failed one since a time

Every route needs the ``webhooks:admin`` scope (anonymous callers hold every
scope in development mode). Creating a subscription, or changing where it
goes (``url``, ``event_types``), also needs read rights: each filter must name
a known event type (422) the caller may read (403), and the caller becomes
the subscription's owner, whose rights bound what it is sent
(:mod:`.rights`). Errors are RFC 9457 problems, from the same table as the
REST edge's.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from polyport.core.dispatch import invalid
from polyport.core.errors import Conflict, InvalidArgument, NotFound, Unavailable
from polyport.core.webhookstore import (
    DELIVERY_STATUSES,
    Delivery,
    DeliveryStatus,
    Owner,
    Secret,
    WebhookEndpoint,
)
from polyport.edges.webhooks.endpoints import EndpointState, check_filter
from polyport.edges.webhooks.outbox import rfc3339
from polyport.edges.webhooks.ssrf import Refused, normalise_url, parse_url
from polyport.http.request import Request, Response
from polyport.http.router import Endpoint, Route
from polyport.webhooks.signing import new_secret, secret_key

if TYPE_CHECKING:
    from polyport.edges.webhooks.binding import WebhooksEdge

NO_STORE = (b"cache-control", b"no-store")
STATUSES = DELIVERY_STATUSES


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointIn(_Body):
    """A new subscription."""

    url: str = Field(min_length=1, max_length=2048)
    event_types: list[str] = Field(default_factory=list, max_length=100)
    description: str = Field(default="", max_length=1000)
    secret: str | None = Field(default=None, max_length=200)
    enabled: StrictBool = True  # 0 and "yes" are no booleans, as documented


class EndpointPatch(_Body):
    """Changes to a subscription; absent fields stay as they are."""

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    event_types: list[str] | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    enabled: StrictBool | None = None


class RotateIn(_Body):
    secret: str | None = Field(default=None, max_length=200)


class TestIn(_Body):
    data: Any = None


#: The latest time a number may name, in Unix seconds: the end of the year 9999.
MAX_UNIX_SECONDS = 253_402_300_799


def _unix_seconds(value: Any) -> Any:
    """A number is Unix seconds, read as such (pydantic would read large ones as
    milliseconds, and refuse times past 9999 only after that guess)."""
    if isinstance(value, bool):
        raise ValueError("a time is RFC 3339 text or Unix seconds, not a boolean")
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_UNIX_SECONDS:
            raise ValueError(f"a time in Unix seconds is from 0 to {MAX_UNIX_SECONDS}")
        return datetime.fromtimestamp(value, UTC)
    return value


class RecoverIn(_Body):
    since: datetime
    until: datetime | None = None

    _seconds = field_validator("since", "until", mode="before")(_unix_seconds)


def _parse(model: type[_Body], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise invalid(exc) from exc


def _time(value: float | None) -> str | None:
    return rfc3339(value) if value is not None else None


def _field_error(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", details=[{"field": field, "message": message}])


def endpoint_json(record: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    """An endpoint as the API shows it; the secret only when just made."""
    previous = [s.expires for s in record.secrets[1:] if s.expires is not None]
    body: dict[str, Any] = {
        "id": record.id,
        "url": record.url,
        "description": record.description,
        "event_types": list(record.event_types),
        "enabled": record.enabled,
        "disabled_reason": record.disabled_reason,
        "disabled_at": _time(record.disabled_at),
        "failing_since": _time(record.failing_since),
        "created": _time(record.created),
        "updated": _time(record.updated),
        "previous_secret_expires": _time(max(previous)) if previous else None,
        "owner": record.owner.subject if record.owner is not None else None,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "endpoint_id": d.endpoint_id,
        "type": d.type,
        "status": d.status,
        "attempts": d.attempts,
        "created": _time(d.created),
        "next_attempt": _time(d.next_at) if d.status == "pending" else None,
        "last_attempt": _time(d.last_at),
        "response_code": d.response_code,
        "latency_ms": round(d.latency * 1000, 3) if d.latency is not None else None,
        "response_body": d.response_body,
        "error": d.error,
    }


def _respond(status: int, body: Any) -> Response:
    return Response(status, orjson.dumps(body), headers=[NO_STORE])


class WebhooksApi:
    """The HTTP handlers of the subscriptions API, over the edge's store and sender."""

    def __init__(self, edge: WebhooksEdge) -> None:
        self.edge = edge
        self.store = edge.store
        self.config = edge.config

    def routes(self) -> list[Route]:
        p = self.edge.prefix
        one = f"{p}/{{id}}"
        return [
            Route("POST", p, self._guard(self.create), "webhooks_create"),
            Route("GET", p, self._guard(self.index), "webhooks_list"),
            Route("GET", one, self._guard(self.get), "webhooks_get"),
            Route("PATCH", one, self._guard(self.update), "webhooks_update"),
            Route("DELETE", one, self._guard(self.delete), "webhooks_delete"),
            Route("POST", f"{one}/rotate", self._guard(self.rotate), "webhooks_rotate"),
            Route("POST", f"{one}/enable", self._guard(self.enable), "webhooks_enable"),
            Route("POST", f"{one}/disable", self._guard(self.disable), "webhooks_disable"),
            Route("POST", f"{one}/test", self._guard(self.test), "webhooks_test"),
            Route("GET", f"{one}/deliveries", self._guard(self.deliveries), "webhooks_deliveries"),
            Route(
                "GET",
                f"{one}/deliveries/{{event_id}}",
                self._guard(self.delivery),
                "webhooks_delivery",
            ),
            Route(
                "POST",
                f"{one}/deliveries/{{event_id}}/replay",
                self._guard(self.replay),
                "webhooks_replay",
            ),
            Route("POST", f"{one}/recover", self._guard(self.recover), "webhooks_recover"),
        ]

    def _guard(self, handler: Endpoint) -> Endpoint:
        from polyport.edges.webhooks.binding import ADMIN_SCOPE, EDGE

        dispatcher = self.edge.runtime.dispatcher
        scopes = frozenset({ADMIN_SCOPE})

        async def guarded(request: Request) -> Response | None:
            # Who is asking, before reading or validating anything they sent.
            dispatcher.admit(False, scopes, request.caller(EDGE))
            return await handler(request)

        return guarded

    # -- checks --------------------------------------------------------------------------

    async def _check_url(self, url: str) -> str:
        try:
            # Stored as delivered: a non-ASCII path or query percent-encoded once, here.
            url = normalise_url(url)
            target = parse_url(url)
        except ValueError as exc:
            raise _field_error("url", str(exc)) from None
        try:
            # Early, to fail at registration; deliveries check again at connect time.
            await self.edge.policy.resolve(target.host, target.port)
        except Refused as exc:
            raise _field_error("url", f"not an acceptable webhook target: {exc}") from None
        return url

    @staticmethod
    def _check_filters(patterns: list[str]) -> tuple[str, ...]:
        for i, pattern in enumerate(patterns):
            try:
                check_filter(pattern)
            except ValueError as exc:
                raise _field_error(f"event_types.{i}", str(exc)) from None
        return tuple(dict.fromkeys(patterns))

    def _check_secret(self, secret: str | None) -> str:
        if not self.edge.encrypts and not self.edge.runtime.settings.dev:
            # Secure by default: outside development mode a new secret is never
            # written in plain text.
            raise Unavailable(
                "webhook secrets are stored encrypted outside development mode: configure "
                "webhooks.secret_keys (see docs/webhooks.md)"
            )
        if secret is None:
            return new_secret()
        try:
            secret_key(secret)
        except ValueError as exc:
            raise _field_error("secret", str(exc)) from None
        return secret

    def _owner(self, request: Request, patterns: tuple[str, ...]) -> Owner:
        """The caller as the owner of a subscription to ``patterns``, after its read rights."""
        from polyport.edges.webhooks.binding import EDGE

        credentials = request.caller(EDGE).credentials
        principal = self.edge.runtime.dispatcher.authenticator.authenticate(credentials)
        self.edge.rights.check_filters(patterns, principal)
        return self.edge.rights.owner_of(principal, credentials)

    async def _state(self, request: Request) -> EndpointState:
        endpoint_id = request.params["id"]
        await self.edge.table.refresh()
        state = self.edge.table.get(endpoint_id) if len(endpoint_id) <= 100 else None
        if state is None:
            raise NotFound(f"no webhook endpoint {endpoint_id[:100]!r}")
        return state

    async def _save(self, record: WebhookEndpoint, *, new: bool = False) -> None:
        await self.store.save_endpoint(record, new=new)
        await self.edge.table.put(record)
        if record.enabled:
            self.edge.sender.wake()
        else:
            await self.edge.sender.forget(record.id)

    # -- endpoints -----------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        body: EndpointIn = _parse(EndpointIn, await request.json_body())
        url = await self._check_url(body.url)
        event_types = self._check_filters(body.event_types)
        owner = self._owner(request, event_types)
        secret = self._check_secret(body.secret)
        now = time.time()
        record = WebhookEndpoint(
            id="ep_" + uuid.uuid4().hex[:24],
            url=url,
            description=body.description,
            event_types=event_types,
            secrets=(Secret(secret),),
            enabled=body.enabled,
            created=now,
            updated=now,
            disabled_reason=None if body.enabled else "disabled on creation",
            disabled_at=None if body.enabled else now,
            owner=owner,
        )
        await self._save(record, new=True)
        response = _respond(201, endpoint_json(record, secret=secret))
        response.headers.append((b"location", f"{self.edge.prefix}/{record.id}".encode()))
        return response

    async def index(self, request: Request) -> Response:
        limit = _integer(request, "limit", 50, 1, 500)
        after = request.query.get("cursor") or None
        records = await self.store.endpoints(limit=limit, after=after)
        return _respond(
            200,
            {
                "items": [endpoint_json(r) for r in records],
                "next_cursor": records[-1].id if len(records) == limit else None,
            },
        )

    async def get(self, request: Request) -> Response:
        return _respond(200, endpoint_json((await self._state(request)).record))

    async def update(self, request: Request) -> Response:
        state = await self._state(request)
        body: EndpointPatch = _parse(EndpointPatch, await request.json_body())
        record = _copy(state.record)
        if body.url is not None:
            record.url = await self._check_url(body.url)
        if body.event_types is not None:
            record.event_types = self._check_filters(body.event_types)
        if body.url is not None or body.event_types is not None:
            # Whoever changes where events go or which ones is their recipient now:
            # their rights are checked and bound the deliveries from here on.
            record.owner = self._owner(request, record.event_types)
        if body.description is not None:
            record.description = body.description
        turn_off = body.enabled is False and record.enabled
        if body.enabled:
            _enable(record)
        record.updated = time.time()
        await self._save(record)
        if turn_off:
            record = await self._turn_off(record)
        return _respond(200, endpoint_json(record))

    async def delete(self, request: Request) -> Response:
        state = await self._state(request)
        await self.store.delete_endpoint(state.id)
        await self.edge.table.remove(state.id)
        await self.edge.sender.forget(state.id)
        return Response(204, b"", headers=[NO_STORE])

    async def rotate(self, request: Request) -> Response:
        state = await self._state(request)
        body: RotateIn = _parse(RotateIn, await request.body())
        secret = self._check_secret(body.secret)
        now = time.time()
        expires = now + self.config.rotation_overlap
        record = _copy(state.record)
        older = [
            Secret(s.value, min(s.expires or expires, expires))
            for s in record.secrets
            if (s.expires is None or s.expires > now) and self.config.rotation_overlap > 0
        ]
        record.secrets = (Secret(secret), *older)
        record.updated = now
        await self._save(record)
        return _respond(200, endpoint_json(record, secret=secret))

    async def enable(self, request: Request) -> Response:
        return await self._set_enabled(request, True)

    async def disable(self, request: Request) -> Response:
        return await self._set_enabled(request, False)

    async def _set_enabled(self, request: Request, enabled: bool) -> Response:
        state = await self._state(request)
        record = _copy(state.record)
        if record.enabled != enabled:
            if enabled:
                _enable(record)
                record.updated = time.time()
                await self._save(record)
            else:
                record = await self._turn_off(record)
        return _respond(200, endpoint_json(record))

    async def _turn_off(self, record: WebhookEndpoint) -> WebhookEndpoint:
        """Disable by hand: pending deliveries fail (``recover`` brings them back)."""
        await self.edge.sender.flush()  # outcomes so far first, as they happened
        await self.edge.sender.forget(record.id)  # what waits goes back, and fails below
        await self.store.disable(record.id, "disabled through the API", time.time())
        fresh = await self.store.endpoint(record.id) or record
        await self.edge.table.put(fresh)
        return fresh

    async def test(self, request: Request) -> Response:
        state = await self._state(request)
        body: TestIn = _parse(TestIn, await request.body())
        if not state.record.enabled:
            raise Conflict(f"webhook endpoint {state.id} is disabled; enable it first")
        data = body.data if body.data is not None else {"message": "a test event from polyport"}
        event_id = await self.edge.outbox.send_test(state, data)
        return _respond(202, {"event_id": event_id, "type": "webhooks.test"})

    # -- the delivery log ----------------------------------------------------------------

    async def deliveries(self, request: Request) -> Response:
        state = await self._state(request)
        # An empty value is no status (and no number below): refused, as documented.
        status = request.query.get("status")
        if status is not None and status not in STATUSES:
            raise _field_error("status", f"one of {', '.join(STATUSES)}")
        limit = _integer(request, "limit", 50, 1, 500)
        before = _cursor(request.query.get("before"))
        await self.edge.sender.flush()  # the log shows every outcome so far
        rows = await self.store.deliveries(
            state.id, status=_status(status), limit=limit, before=before
        )
        last = rows[-1] if len(rows) == limit else None
        return _respond(
            200,
            {
                "endpoint_id": state.id,
                "items": [delivery_json(d) for d in rows],
                "next_cursor": str(last.seq) if last else None,
            },
        )

    async def _delivery(self, state: EndpointState, request: Request) -> Delivery:
        event_id = request.params["event_id"]
        found = None
        if len(event_id) <= 200:
            await self.edge.sender.flush()  # the log shows every outcome so far
            found = await self.store.delivery(state.id, event_id)
        if found is None:
            raise NotFound(f"endpoint {state.id} has no delivery {event_id[:200]!r}")
        return found

    async def delivery(self, request: Request) -> Response:
        state = await self._state(request)
        found = await self._delivery(state, request)
        body = delivery_json(found)
        body["history"] = [
            {
                "attempt": a.number,
                "time": _time(a.time),
                "response_code": a.response_code,
                "latency_ms": round(a.latency * 1000, 3) if a.latency is not None else None,
                "error": a.error,
                "response_body": a.response_body,
            }
            for a in await self.store.attempts(state.id, found.event_id)
        ]
        return _respond(200, body)

    async def replay(self, request: Request) -> Response:
        state = await self._state(request)
        found = await self._delivery(state, request)
        if not state.record.enabled:
            raise Conflict(f"webhook endpoint {state.id} is disabled; enable it first")
        if not await self.store.requeue(state.id, found.event_id, time.time()):
            raise InvalidArgument(f"delivery {found.event_id} is being attempted right now")
        self.edge.sender.wake()
        again = await self.store.delivery(state.id, found.event_id)
        return _respond(202, delivery_json(again or found))

    async def recover(self, request: Request) -> Response:
        state = await self._state(request)
        body: RecoverIn = _parse(RecoverIn, await request.json_body())
        if not state.record.enabled:
            raise Conflict(f"webhook endpoint {state.id} is disabled; enable it first")
        now = time.time()
        since = body.since.timestamp()
        until = body.until.timestamp() if body.until is not None else now + 1
        # An empty window (until not after since) recovers nothing: a valid request
        # whose answer is 0, not a refusal no document could state.
        count = 0
        if until > since:
            await self.edge.sender.flush()  # outcomes so far first: what failed is failed
            count = await self.store.recover(state.id, since, until, now)
        self.edge.sender.wake()
        return _respond(202, {"endpoint_id": state.id, "recovered": count})


def _copy(record: WebhookEndpoint) -> WebhookEndpoint:
    return WebhookEndpoint(
        record.id,
        record.url,
        record.description,
        record.event_types,
        record.secrets,
        record.enabled,
        record.created,
        record.updated,
        record.disabled_reason,
        record.disabled_at,
        record.failing_since,
        record.owner,
    )


def _status(value: str | None) -> DeliveryStatus | None:
    """A status already checked against :data:`STATUSES`, typed as one."""
    for status in STATUSES:
        if status == value:
            return status
    return None


def _enable(record: WebhookEndpoint) -> None:
    """Switch delivery back on; the failing period starts afresh."""
    record.enabled = True
    record.disabled_reason = record.disabled_at = record.failing_since = None


def _integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # ASCII digits only: str.isdigit() also takes '²', which int() then refuses (a 500).
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise _field_error(name, f"a whole number from {low} to {high}")
    return int(raw)


#: A delivery log cursor: the ``seq`` of a page's last delivery, as :func:`_cursor` reads it.
LOG_CURSOR = r"^[0-9]{1,18}$"
_LOG_CURSOR = re.compile(LOG_CURSOR)


def _cursor(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not _LOG_CURSOR.fullmatch(raw):
        raise _field_error("before", "the next_cursor of a previous page")
    return int(raw)
