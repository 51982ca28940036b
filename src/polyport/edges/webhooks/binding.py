"""Outbound webhooks: subscriptions at ``/v{n}/webhooks``, delivered from a durable outbox.

The edge wires the parts together: the store the node chose
(:attr:`Runtime.webhook_store <polyport.core.runtime.Runtime.webhook_store>`,
a :class:`~polyport.core.webhookstore.WebhookStore`), the endpoint table, the
outbox tapping the hub, the sender and its poller, and the management API
(:mod:`.api`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import orjson

from polyport.core.contract import EventType
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.kinds import ChannelEdge, HttpEdge
from polyport.edges.webhooks.config import WebhooksConfig
from polyport.edges.webhooks.endpoints import EndpointState, EndpointTable
from polyport.edges.webhooks.outbox import DISABLED_CHANNEL, DISABLED_EVENT, WebhookOutbox, rfc3339
from polyport.edges.webhooks.rights import ReadRights
from polyport.edges.webhooks.sender import WebhookSender
from polyport.edges.webhooks.ssrf import AddressPolicy
from polyport.http.asyncapi import AsyncApiDocument
from polyport.http.openapi import OpenApiDocument
from polyport.http.router import Route

log = logging.getLogger("polyport.webhooks")

EDGE = "webhooks"
#: The scope that manages subscriptions and reads the delivery log (``*`` holds it too).
ADMIN_SCOPE = "webhooks:admin"


class WebhooksEdge(HttpEdge, ChannelEdge):
    """Serves ``/v{n}/webhooks`` and delivers every matching event to every subscriber."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = config = runtime.settings.section(WebhooksConfig)
        self.prefix = f"/v{runtime.spec.version}/webhooks"
        self.store = runtime.webhook_store
        #: Whether endpoint secrets are sealed at rest (the store seals with these keys).
        self.encrypts = bool(config.secret_keys)
        disabled = EventType(
            name=DISABLED_EVENT,
            model=dict,
            channel=DISABLED_CHANNEL,
            description="A webhook endpoint was disabled (410 Gone, or failing too long).",
            scopes=frozenset({ADMIN_SCOPE}),
        )
        dispatcher = runtime.dispatcher
        dispatcher.add_event(disabled)
        #: Who may receive what: checked at registration, fan-out and every attempt.
        self.rights = ReadRights(
            [*(spec.event for spec in runtime.spec.events.values()), disabled],
            runtime.settings.auth.api_keys,
            dispatcher.authenticator.anonymous,
        )
        self.table = EndpointTable(self.store, self.rights.may_read)
        self.policy = AddressPolicy(config.allow_private)
        # A lease names its holder: unique per process, so nodes sharing a store differ.
        owner = secrets.token_hex(8)
        self.sender = WebhookSender(
            self.store, owner, self.table, config, self.policy, runtime.metrics, self.disable
        )
        self.outbox = WebhookOutbox(runtime.hub, self.store, self.table, self.sender)

    async def start(self) -> None:
        await self.store.open()
        try:
            await self._load()
            await self.outbox.start()
        except BaseException:
            await self.store.close()  # the node stops only what started
            raise
        self.sender.start()

    async def _load(self) -> None:
        # Plain rows, or rows of an older key: sealed under the first key.
        resealed = await self.store.reseal()
        if resealed:
            log.info(
                "webhooks: encrypted the secrets of %d endpoint(s) with the first key", resealed
            )
        elif not self.encrypts and not self.runtime.settings.dev:
            plain = await self.store.plaintext_count()
            if plain:
                log.warning(
                    "webhooks: %d endpoint secret(s) are stored in plain text; set "
                    "webhooks.secret_keys to encrypt them (docs/webhooks.md)",
                    plain,
                )
        await self.table.load()
        unowned = [e.id for e in await self.store.endpoints() if e.owner is None]
        if unowned and not self.runtime.settings.dev:
            log.warning(
                "%d webhook endpoint(s) have no recorded owner (created before read rights "
                "were checked) and now receive public event types only: %s. PATCH their "
                "event_types with credentials that may read them to restore them",
                len(unowned),
                ", ".join(unowned[:20]),
            )

    async def stop(self) -> None:
        await self.outbox.stop()
        await self.sender.stop(grace=min(5.0, self.config.timeout))
        await self.store.close()

    # -- disabling -----------------------------------------------------------------------

    async def disable(self, state: EndpointState, reason: str) -> None:
        """Disable an endpoint for cause; its pending deliveries fail; publish the event."""
        current = self.table.get(state.id)
        if current is None or not current.record.enabled or not state.record.enabled:
            return  # already disabled: by an attempt that failed alongside, or by hand
        # Attempts still in flight hold this state: they must see it disabled too (set
        # before the first await, so an attempt failing alongside returns above).
        state.record.enabled = False
        now = time.time()
        # Outcomes so far first: the deliveries still pending after them are what fails.
        await self.sender.flush()
        # What waits in its lane goes back first, so that the disabling fails it too.
        await self.sender.forget(state.id)
        failed = await self.store.disable(state.id, reason, now)
        record = await self.store.endpoint(state.id)
        if record is not None:
            await self.table.put(record)
        log.warning("webhook endpoint %s disabled: %s", state.id, reason)
        data = {
            "endpoint_id": state.id,
            "url": state.record.url,
            "reason": reason,
            "disabled_at": rfc3339(now),
            "failed_deliveries": failed,
        }
        hub = self.runtime.hub
        if not hub.closing:
            task: asyncio.Task[object] = asyncio.ensure_future(
                hub.publish(DISABLED_CHANNEL, DISABLED_EVENT, orjson.dumps(data))
            )
            task.add_done_callback(_log_failure)

    # -- HTTP --------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        from polyport.edges.webhooks.api import WebhooksApi

        return WebhooksApi(self).routes()

    def catalog(self) -> list[CatalogEntry]:
        p = self.prefix
        return [
            CatalogEntry("webhooks", "subscriptions", "document", f"GET {p}"),
            CatalogEntry("webhooks", "subscribe", "method", f"POST {p}"),
            CatalogEntry("webhooks", "delivery log", "document", f"GET {p}/{{id}}/deliveries"),
            CatalogEntry("webhooks", DISABLED_EVENT, "event", "POST <subscriber URL>"),
        ]

    def describe(self, doc: OpenApiDocument) -> None:
        from polyport.edges.webhooks.openapi import describe

        describe(self, doc)

    def describe_channels(self, doc: AsyncApiDocument) -> None:
        from polyport.edges.webhooks.asyncapi import describe_channels

        describe_channels(self, doc)


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("could not publish %s: %s", DISABLED_EVENT, task.exception())
