"""Inbound webhooks: one ``POST /hooks/{name}`` per declared receiver, and its log.

POST /hooks/{name}                                  verify, validate, store; 200 at once
GET  /hooks/{name}/deliveries[?status=&limit=&before=]   the receiver's deliveries (admin)
GET  /hooks/{name}/deliveries/{id}                  one delivery, with its body (admin)
POST /hooks/{name}/deliveries/{id}/retry            run a dead delivery again (admin)

A delivery is checked in this order, and nothing is stored unless every
check passes: the body size (413, before reading past the limit), the
signature (400 for a missing or unreadable header, 401 for a wrong signature
or a stale timestamp), the media type (415), JSON (400) and the handler's
body type (422). Then it is committed to the inbox and answered 200 — also
when its delivery id was seen before, which is not processed again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from polyport.core.errors import ConfigError, Conflict, InvalidArgument, NotFound
from polyport.core.inbox import INBOX_STATUSES, InboxEntry, InboxStatus, ReceiverInbox
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.hooks.config import HooksConfig
from polyport.edges.hooks.handler import EDGE, ReceiverHandler
from polyport.edges.hooks.worker import InboxWorker
from polyport.edges.kinds import HttpEdge
from polyport.http.openapi import OpenApiDocument
from polyport.http.problems import PROBLEM_JSON, problem_body
from polyport.http.request import Request, Response, UnsupportedMediaType, is_json
from polyport.http.router import Endpoint, Route
from polyport.webhooks.verify import (
    MalformedHeader,
    MalformedPayload,
    MissingHeader,
    SignatureMismatch,
    StaleTimestamp,
    WebhookVerificationError,
)

log = logging.getLogger("polyport.hooks")

#: The scope that may read and redrive the delivery log (``*`` holds it too).
ADMIN_SCOPE = "hooks:admin"
NO_STORE = (b"cache-control", b"no-store")
#: Headers never stored with a delivery: credentials are not the handler's business.
PRIVATE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})

# Verification error → (HTTP status, title, reason); the first match wins.
VERIFICATION_STATUS: tuple[tuple[type[WebhookVerificationError], int, str, str], ...] = (
    (MissingHeader, 400, "Bad Request", "missing_header"),
    (MalformedHeader, 400, "Bad Request", "malformed_header"),
    (MalformedPayload, 400, "Bad Request", "malformed_payload"),
    (SignatureMismatch, 401, "Unauthorized", "signature_mismatch"),
    (StaleTimestamp, 401, "Unauthorized", "stale_timestamp"),
)


class HooksEdge(HttpEdge):
    """Serves the service's webhook receivers and runs their handlers from a durable inbox."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = config = runtime.settings.section(HooksConfig)
        service = runtime.spec.service
        secrets = {name: s.get_secret_value() for name, s in config.secrets.items()}
        unknown = sorted(set(secrets) - set(service.receivers))
        if unknown:
            raise ConfigError(
                f"hooks.secrets names no declared receiver: {', '.join(unknown)}"
                f" (declared: {', '.join(sorted(service.receivers)) or 'none'})"
            )
        self.handlers = {
            name: ReceiverHandler(receiver, service, secrets.get(name))
            for name, receiver in service.receivers.items()
        }
        # The inbox the node chose; used (opened, worked) only when receivers exist.
        self.inbox: ReceiverInbox | None = None
        self.worker: InboxWorker | None = None
        if self.handlers:
            self.inbox = runtime.receiver_inbox
            self.worker = InboxWorker(self.inbox, self.handlers, config, runtime.metrics)

    async def start(self) -> None:
        if self.inbox is not None and self.worker is not None:
            await self.inbox.open()
            self.worker.start()

    async def stop(self) -> None:
        if self.inbox is not None and self.worker is not None:
            await self.worker.stop()
            await self.inbox.close()

    def routes(self) -> list[Route]:
        routes: list[Route] = []
        for name, handler in self.handlers.items():
            base = f"/hooks/{name}"
            routes += [
                Route("POST", base, self._receiver(handler), f"hook_{name}"),
                Route("GET", f"{base}/deliveries", self._lister(name), f"hook_{name}_deliveries"),
                Route(
                    "GET",
                    f"{base}/deliveries/{{id}}",
                    self._getter(name),
                    f"hook_{name}_delivery",
                ),
                Route(
                    "POST",
                    f"{base}/deliveries/{{id}}/retry",
                    self._redriver(name),
                    f"hook_{name}_retry",
                ),
            ]
        return routes

    def catalog(self) -> list[CatalogEntry]:
        entries = []
        for name in self.handlers:
            entries.append(CatalogEntry("webhook receiver", name, "method", f"POST /hooks/{name}"))
            entries.append(
                CatalogEntry(
                    "webhook receiver",
                    f"{name} deliveries",
                    "document",
                    f"GET /hooks/{name}/deliveries",
                )
            )
        return entries

    def describe(self, doc: OpenApiDocument) -> None:
        from polyport.edges.hooks.openapi import describe

        describe(self, doc)

    @property
    def _inbox(self) -> ReceiverInbox:
        if self.inbox is None:  # routes exist only when receivers do
            raise RuntimeError("no webhook receivers")
        return self.inbox

    # -- receiving --------------------------------------------------------------------------

    def _receiver(self, handler: ReceiverHandler) -> Endpoint:
        name = handler.name
        path = f"/hooks/{name}"
        max_body = self.config.max_body
        tolerance = self.config.tolerance
        metrics = self.runtime.metrics

        def count(outcome: str) -> None:
            metrics.inc(
                "polyport_hooks_received_total",
                "Webhook requests by receiver and outcome (accepted, duplicate, rejected).",
                receiver=name,
                outcome=outcome,
            )

        async def receive(request: Request) -> Response:
            try:
                # The connection refuses more than max_body (413) without reading it all.
                body = await request.connection.read_body(max_body)
                headers = {
                    key.decode("latin-1"): value.decode("latin-1")
                    for key, value in request.headers_list
                }
                try:
                    verified = handler.verifier.verify(headers, body, tolerance=tolerance)
                except WebhookVerificationError as exc:
                    count("rejected")
                    log.info("webhook %s refused: %s", name, exc.message)
                    return _rejected(exc, path, handler.verifier)
                content_type = request.headers.get(b"content-type")
                if content_type is not None and not is_json(content_type):
                    raise UnsupportedMediaType(content_type.decode("latin-1"))
                value = handler.validate(body)
            except Exception:
                count("rejected")
                raise
            accepted = await self._inbox.insert(
                name,
                verified.id,
                event_type=verified.event_type or _payload_type(value),
                signed_at=verified.timestamp,
                body=body,
                headers={k: v for k, v in headers.items() if k not in PRIVATE_HEADERS},
                now=time.time(),
            )
            if accepted and self.worker is not None:
                self.worker.wake()
            count("accepted" if accepted else "duplicate")
            status = "accepted" if accepted else "duplicate"
            return Response(
                200, orjson.dumps({"id": verified.id, "status": status}), headers=[NO_STORE]
            )

        return receive

    # -- the delivery log (admin) ------------------------------------------------------------

    def _admit(self, request: Request) -> None:
        caller = request.caller(EDGE)
        self.runtime.dispatcher.admit(False, frozenset({ADMIN_SCOPE}), caller)

    def _lister(self, name: str) -> Endpoint:
        async def deliveries(request: Request) -> Response:
            self._admit(request)
            # An empty value is no status (and no number below): refused, as documented.
            status = request.query.get("status")
            if status is not None and status not in INBOX_STATUSES:
                raise InvalidArgument(
                    f"status is one of {', '.join(INBOX_STATUSES)}",
                    details=[{"field": "status", "message": "unknown status"}],
                )
            limit = request.query_integer("limit", 50, 1, 500)
            before = request.query_integer("before", None, 1, 2**63 - 1)
            rows = await self._inbox.deliveries(
                name, status=_status(status), before=before, limit=limit
            )
            body = {
                "receiver": name,
                "counts": await self._inbox.counts(name),
                "items": [_summary(row) for row in rows],
                "next_cursor": str(rows[-1].seq) if len(rows) == limit else None,
            }
            return Response(200, orjson.dumps(body), headers=[NO_STORE])

        return deliveries

    def _getter(self, name: str) -> Endpoint:
        async def delivery(request: Request) -> Response:
            self._admit(request)
            row = await self._row(name, request.params["id"])
            body = _summary(row) | {"headers": row.headers}
            raw = orjson.dumps(body)
            # The body as received: it was checked to be JSON before it was stored.
            return Response(200, raw[:-1] + b',"body":' + row.body + b"}", headers=[NO_STORE])

        return delivery

    def _redriver(self, name: str) -> Endpoint:
        async def redrive(request: Request) -> Response:
            self._admit(request)
            row = await self._row(name, request.params["id"])
            if not await self._inbox.redrive(name, row.id, time.time()):
                # The delivery's state, not the request, is in the way: a conflict.
                raise Conflict(
                    f"delivery {row.id} is {row.status}; only dead or pending ones can be retried"
                )
            if self.worker is not None:
                self.worker.wake()
            found = await self._row(name, row.id)
            return Response(202, orjson.dumps(_summary(found)), headers=[NO_STORE])

        return redrive

    async def _row(self, name: str, delivery_id: str) -> InboxEntry:
        row = await self._inbox.get(name, delivery_id) if len(delivery_id) <= 200 else None
        if row is None:
            raise NotFound(f"receiver {name} has no delivery {delivery_id[:200]!r}")
        return row


def _summary(entry: InboxEntry) -> dict[str, Any]:
    """A delivery as the deliveries listing shows it (no body)."""
    return {
        "id": entry.id,
        "receiver": entry.receiver,
        "status": entry.status,
        "event_type": entry.event_type,
        "signed_at": entry.signed_at,
        "received": entry.received,
        "attempts": entry.attempts,
        "next_attempt": entry.due if entry.status == "pending" else None,
        "finished": entry.finished,
        "error": entry.error,
    }


def _rejected(exc: WebhookVerificationError, path: str, verifier: Any) -> Response:
    status, title, reason = 401, "Unauthorized", "signature_mismatch"
    for cls, cls_status, cls_title, cls_reason in VERIFICATION_STATUS:
        if isinstance(exc, cls):
            status, title, reason = cls_status, cls_title, cls_reason
            break
    code = "INVALID_ARGUMENT" if status == 400 else "UNAUTHENTICATED"
    body = problem_body(status, title, code, exc.message, instance=path, reason=reason)
    headers = [NO_STORE]
    if status == 401:
        # RFC 9110 asks a 401 to name a scheme: the signature scheme the receiver checks.
        scheme = getattr(verifier, "scheme", "") or "signature"
        headers.append((b"www-authenticate", f'{scheme} realm="{path}"'.encode()))
    return Response(status, body, content_type=PROBLEM_JSON, headers=headers)


def _payload_type(value: Any) -> str | None:
    """The ``type`` of a Standard Webhooks payload (``{"type", "timestamp", "data"}``)."""
    found = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return found[:100] if isinstance(found, str) else None


def _status(value: str | None) -> InboxStatus | None:
    for status in INBOX_STATUSES:
        if status == value:
            return status
    return None
