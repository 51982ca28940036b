"""Which event types a subscription may receive: its owner's read rights, at every step.

A webhook subscription is a subscription like a WebSocket ``subscribe`` or an
SSE stream, only longer-lived: it must not deliver an event its owner could
not read by polling. So the same rule as the dispatcher's ``admit_subscribe``
applies — an event type is readable when it is ``public``, or the principal
is signed in and holds its ``scopes`` (``*`` holds everything) — at three
moments:

* **create and update** (a new URL or new filters): every filter must name
  at least one known event type (else 422) and at least one the caller may
  read (else 403); the caller becomes the subscription's owner;
* **fan-out**: an event is owed to an endpoint only if its owner may read its
  type — a wildcard filter (``*``, ``chat.#``) reaches only readable types;
* **each attempt**: rights can change between fan-out and a retry hours later
  (a restart with a new configuration), so the owner is checked again.

An owner's rights are those of now where the node can know them: an API key
owner has the scopes its key has in the configuration now (none once the key
is gone), an anonymous owner those of the node's anonymous caller (everything
in development mode, public types only otherwise). A token owner (JWT,
ticket) keeps the scopes its token carried, which the node cannot read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from polyport.core.auth import Credentials
from polyport.core.config import ApiKeyConfig
from polyport.core.context import Principal
from polyport.core.contract import EventType
from polyport.core.errors import InvalidArgument, PermissionDenied
from polyport.core.tickets import PREFIX as TICKET_PREFIX
from polyport.core.webhookstore import Owner, WebhookEndpoint
from polyport.edges.webhooks.endpoints import compile_filters
from polyport.edges.webhooks.outbox import TEST_EVENT


def _readable(principal: Principal, event: EventType) -> bool:
    if "*" in principal.scopes or event.public:
        return True
    return not principal.anonymous and principal.has_scopes(event.scopes)


class ReadRights:
    """The event types of a node and who may read them, for the webhooks edge."""

    def __init__(
        self,
        events: Iterable[EventType],
        api_keys: Sequence[ApiKeyConfig],
        anonymous: Principal,
    ) -> None:
        self.events: dict[str, EventType] = {e.name: e for e in events}
        self.anonymous = anonymous
        keys: dict[str, set[str]] = {}
        for key in api_keys:
            keys.setdefault(key.subject, set()).update(key.scopes)
        self._key_scopes: Mapping[str, frozenset[str]] = {
            subject: frozenset(scopes) for subject, scopes in keys.items()
        }
        self._cache: dict[tuple[Owner | None, str], bool] = {}

    # -- owners -------------------------------------------------------------------------

    @staticmethod
    def owner_of(principal: Principal, credentials: Credentials) -> Owner:
        """The owner a subscription made (or re-aimed) by this caller gets."""
        if principal.anonymous:
            return Owner(principal.subject, (), "anonymous")
        bearer = credentials.bearer
        is_token = (
            credentials.api_key is None
            and bearer is not None
            and (bearer.startswith(TICKET_PREFIX) or bearer.count(".") == 2)
        )
        return Owner(
            principal.subject, tuple(sorted(principal.scopes)), "token" if is_token else "key"
        )

    def principal_of(self, owner: Owner | None) -> Principal:
        """The owner's rights now (see the module docstring); None: an owner not recorded."""
        if owner is None or owner.via == "anonymous":
            # Unrecorded owners (subscriptions older than this check) get no more
            # than an anonymous caller: everything in development mode only.
            return self.anonymous
        if owner.via == "key":
            return Principal(owner.subject, self._key_scopes.get(owner.subject, frozenset()))
        return Principal(owner.subject, frozenset(owner.scopes))

    def may_read(self, endpoint: WebhookEndpoint, event_type: str) -> bool:
        """Whether ``endpoint``'s owner may read ``event_type`` now."""
        key = (endpoint.owner, event_type)
        found = self._cache.get(key)
        if found is None:
            event = self.events.get(event_type)
            if event_type == TEST_EVENT:
                found = True  # sent to one endpoint on request, whatever its filters
            elif event is None:
                found = False  # no longer declared: nobody reads it
            else:
                found = _readable(self.principal_of(endpoint.owner), event)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = found
        return found

    # -- registration ---------------------------------------------------------------------

    def check_filters(self, patterns: Sequence[str], principal: Principal) -> None:
        """Refuse filters that match no event type (422) or none ``principal`` may read (403)."""
        known = sorted(self.events)
        for i, pattern in enumerate(patterns):
            matcher = compile_filters([pattern])
            assert matcher is not None  # one filter: a pattern
            matched = [self.events[name] for name in known if matcher.match(name)]
            if not matched:
                message = f"no event type matches {pattern[:80]!r}; known: {', '.join(known)}"
                raise InvalidArgument(
                    f"event_types.{i}: {message}",
                    details=[{"field": f"event_types.{i}", "message": message}],
                )
            if not any(_readable(principal, event) for event in matched):
                raise PermissionDenied(
                    f"event_types.{i}: you may not read any event type matching {pattern[:80]!r}"
                )


__all__ = ["ReadRights"]
