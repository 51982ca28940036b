"""The endpoints a node delivers to, in memory: who wants which event type, and the keys.

Fan-out asks "which endpoints want ``orders.created``?" for every event, so
the answer is a dict lookup, computed once per event type and forgotten when
an endpoint changes. Other nodes sharing the database change endpoints too;
the table reloads when the store's version counter moves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from polyport.core.webhookstore import WebhookEndpoint, WebhookEndpoints
from polyport.edges.webhooks.ssrf import Target, parse_url
from polyport.webhooks.signing import secret_key

_SEGMENT = r"(?:[a-z0-9_-]+|\*|\+)"
_FILTER = re.compile(rf"^(?:{_SEGMENT}(?:\.{_SEGMENT})*(?:\.#)?|#)$")


def check_filter(pattern: str) -> str:
    """An event-type filter: a dotted event type, with wildcards as in channel patterns.

    ``+`` stands for exactly one segment and a final ``#`` for any number of
    further segments (none included), as in the event log's channel patterns;
    ``*`` stands for one or more segments (``orders.*``, ``*.created``, ``*``).
    """
    if len(pattern) > 200 or not _FILTER.fullmatch(pattern):
        raise ValueError(
            f"invalid event type filter {pattern[:80]!r}: use dotted event type names with "
            "+ for one segment, * for one or more, and a final # for any number "
            "(orders.+, *.created, orders.#, *)"
        )
    return pattern


def _regex(pattern: str) -> str:
    parts: list[str] = []
    for segment in pattern.split("."):
        if segment == "#":
            tail = r"(?:\.[^.]+)*"
            return (r"\.".join(parts) + tail) if parts else r"[^.]+(?:\.[^.]+)*"
        if segment == "*":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        elif segment == "+":
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(segment))
    return r"\.".join(parts)


def compile_filters(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression for a list of filters; None when there are none (everything)."""
    alternatives = [_regex(p) for p in patterns]
    if not alternatives:
        return None
    return re.compile("^(?:" + "|".join(alternatives) + ")$")


class EndpointState:
    """One endpoint as the sender uses it: record, parsed URL, filter, signing keys."""

    __slots__ = ("_keys", "_keys_until", "matcher", "record", "target")

    def __init__(self, record: WebhookEndpoint) -> None:
        self.record = record
        self.target: Target = parse_url(record.url)
        self.matcher = compile_filters(record.event_types)
        self._keys: list[bytes] = []
        self._keys_until = -1.0

    @property
    def id(self) -> str:
        return self.record.id

    def wants(self, event_type: str) -> bool:
        return self.matcher is None or self.matcher.match(event_type) is not None

    def keys(self, now: float) -> list[bytes]:
        """The keys that sign now: the current secret and any not yet expired."""
        if now >= self._keys_until:
            live = [s for s in self.record.secrets if s.expires is None or s.expires > now]
            self._keys = [secret_key(s.value) for s in live]
            expiries = [s.expires for s in live if s.expires is not None]
            self._keys_until = min(expiries) if expiries else float("inf")
        return self._keys


#: Whether an endpoint's owner may read an event type now (``ReadRights.may_read``).
ReadCheck = Callable[[WebhookEndpoint, str], bool]


def _anyone(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return True


class EndpointTable:
    """Every endpoint by id, and the enabled ones by the event types they want and may read."""

    def __init__(self, store: WebhookEndpoints, may_read: ReadCheck = _anyone) -> None:
        self.store = store
        self.may_read = may_read
        self._by_id: dict[str, EndpointState] = {}
        self._by_type: dict[str, tuple[EndpointState, ...]] = {}
        self._version = -1

    async def load(self) -> None:
        version = await self.store.endpoints_version()
        records = await self.store.endpoints()
        self._version = version
        self._by_id = {e.id: EndpointState(e) for e in records}
        self._by_type.clear()

    async def refresh(self) -> bool:
        """Reload if another node (or this one) changed endpoints; True if it did."""
        if await self.store.endpoints_version() != self._version:
            await self.load()
            return True
        return False

    def get(self, endpoint_id: str) -> EndpointState | None:
        return self._by_id.get(endpoint_id)

    def __bool__(self) -> bool:
        """Whether any endpoint exists (enabled or not)."""
        return bool(self._by_id)

    async def put(self, record: WebhookEndpoint) -> EndpointState:
        """Take a record just saved (by this node), as the store's version counts it."""
        state = EndpointState(record)
        self._by_id[record.id] = state
        self._by_type.clear()
        self._version = await self.store.endpoints_version()
        return state

    async def remove(self, endpoint_id: str) -> None:
        """Forget an endpoint just deleted (by this node)."""
        self._by_id.pop(endpoint_id, None)
        self._by_type.clear()
        self._version = await self.store.endpoints_version()

    def matching(self, event_type: str) -> tuple[EndpointState, ...]:
        """The enabled endpoints whose filters take ``event_type`` and whose owner may read it."""
        found = self._by_type.get(event_type)
        if found is None:
            may_read = self.may_read
            found = tuple(
                s
                for s in self._by_id.values()
                if s.record.enabled and s.wants(event_type) and may_read(s.record, event_type)
            )
            self._by_type[event_type] = found
        return found

    def __len__(self) -> int:
        return len(self._by_id)
