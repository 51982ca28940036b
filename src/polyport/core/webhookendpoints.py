"""Webhook endpoints in a record store: the records half of the webhook store.

One record per endpoint (``webhooks/endpoints/{id}``, JSON, its secrets
sealed), listed in id order by a scan, and one record whose version every
endpoint change moves (``webhooks/endpoints.version``): nodes watch that
version to reload their tables. A change of one field is a read, a change
and a compare-and-set write, again if another node wrote meanwhile — never a
lost update. :class:`~polyport.core.webhookqueue.QueuedWebhookStore` adds the
deliveries (and what disabling or deleting an endpoint does to them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from polyport.core.errors import Conflict, InvalidArgument
from polyport.core.records import ABSENT, RecordStore, scan_all
from polyport.core.webhooklayout import (
    ENDPOINTS,
    VERSION_KEY,
    SecretSeal,
    endpoint_fields,
    endpoint_from,
    endpoint_key,
)
from polyport.core.webhookstore import WebhookEndpoint

#: The longest endpoint id (the API makes ``ep_`` and 24 hex digits).
MAX_ID = 100


def check_endpoint_id(endpoint_id: str) -> None:
    """Refuse an id that cannot name a queue and a key prefix of its own."""
    if not endpoint_id or len(endpoint_id) > MAX_ID or "/" in endpoint_id:
        raise InvalidArgument(f"invalid webhook endpoint id {endpoint_id[:40]!r}")
    if not endpoint_id.isprintable():
        raise InvalidArgument(f"invalid webhook endpoint id {endpoint_id[:40]!r}")


class RecordedEndpoints:
    """Subscriptions as records, their secrets sealed by ``seal``."""

    def __init__(self, records: RecordStore, seal: SecretSeal) -> None:
        self.records = records
        #: Seals endpoint secrets at rest (a cipher without keys stores them as they are).
        self.seal = seal
        self._listed: tuple[int, list[tuple[str, bool]]] = (-1, [])

    async def endpoints_version(self) -> int:
        found = await self.records.get(VERSION_KEY)
        return 0 if found is None else found.version

    async def _bump(self) -> None:
        """Move the version: every node reloads its endpoints."""
        await self.records.put(VERSION_KEY, b"")

    async def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        found = await self.records.get(endpoint_key(endpoint_id))
        if found is None:
            return None
        return endpoint_from(endpoint_id, orjson.loads(found.value), self.seal)

    async def endpoints(
        self, limit: int | None = None, after: str | None = None
    ) -> list[WebhookEndpoint]:
        start = None if after is None else endpoint_key(after)
        if limit is None:
            found = await scan_all(self.records, ENDPOINTS, after=start)
        else:
            found = await self.records.scan(ENDPOINTS, after=start, limit=limit)
        return [
            endpoint_from(r.key[len(ENDPOINTS) :], orjson.loads(r.value), self.seal) for r in found
        ]

    async def save_endpoint(self, endpoint: WebhookEndpoint, *, new: bool = False) -> None:
        check_endpoint_id(endpoint.id)
        value = orjson.dumps(endpoint_fields(endpoint, self.seal))
        written = await self.records.put(
            endpoint_key(endpoint.id), value, expect=ABSENT if new else None
        )
        if written is None:
            raise Conflict(f"webhook endpoint {endpoint.id} exists already")
        await self._bump()

    async def _change(self, endpoint_id: str, change: Callable[[dict[str, Any]], None]) -> bool:
        """Apply ``change`` to an endpoint's fields, compared and set; False if unknown."""
        key = endpoint_key(endpoint_id)
        while True:
            found = await self.records.get(key)
            if found is None:
                return False
            fields = orjson.loads(found.value)
            change(fields)
            if await self.records.put(key, orjson.dumps(fields), expect=found.version):
                return True

    async def set_failing_since(self, endpoint_id: str, since: float | None) -> None:
        def failing(fields: dict[str, Any]) -> None:
            fields["failing_since"] = since

        await self._change(endpoint_id, failing)

    async def _mark_disabled(self, endpoint_id: str, reason: str, at: float) -> None:
        def disabled(fields: dict[str, Any]) -> None:
            fields.update(enabled=False, disabled_reason=reason, disabled_at=at, updated=at)

        if await self._change(endpoint_id, disabled):
            await self._bump()

    async def _forget_endpoint(self, endpoint_id: str) -> bool:
        found = await self.records.delete(endpoint_key(endpoint_id))
        if found:
            await self._bump()
        return found

    async def reseal(self) -> int:
        changed = 0
        for record in await scan_all(self.records, ENDPOINTS):
            fields = orjson.loads(record.value)
            stored = fields["secrets"]
            if self.seal.is_current(stored):
                continue
            what = f"webhook endpoint {record.key[len(ENDPOINTS) :]}"
            fields["secrets"] = self.seal.seal(self.seal.open(stored, what))
            # Changed meanwhile by another node: sealed by it, under the same keys.
            if await self.records.put(record.key, orjson.dumps(fields), expect=record.version):
                changed += 1
        return changed

    async def plaintext_count(self) -> int:
        return sum(
            not self.seal.is_sealed(orjson.loads(r.value)["secrets"])
            for r in await scan_all(self.records, ENDPOINTS)
        )

    async def enabled_ids(self) -> list[str]:
        """The ids of the enabled endpoints, read again only when the version moved."""
        version, listed = self._listed
        current = await self.endpoints_version()
        if current != version:
            listed = [
                (r.key[len(ENDPOINTS) :], bool(orjson.loads(r.value)["enabled"]))
                for r in await scan_all(self.records, ENDPOINTS)
            ]
            self._listed = (current, listed)
        return [endpoint_id for endpoint_id, enabled in listed if enabled]

    async def all_ids(self) -> list[str]:
        return [r.key[len(ENDPOINTS) :] for r in await scan_all(self.records, ENDPOINTS)]


__all__ = ["MAX_ID", "RecordedEndpoints", "check_endpoint_id"]
