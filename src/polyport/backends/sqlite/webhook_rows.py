"""The webhook store's tables in SQLite, and how its records are written to rows and read back.

Kept apart from the store's queries (:mod:`.webhooks`): the schema, the
columns added since it was first written (added to older files at open), and
the row codecs — where an endpoint's secrets are sealed by the
:class:`~polyport.webhooks.encryption.SecretCipher` on the way in and opened
on the way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from polyport.core.webhookstore import AttemptResult, Delivery, Owner, Secret, WebhookEndpoint
from polyport.webhooks.encryption import SecretCipher

SCHEMA = """
CREATE TABLE IF NOT EXISTS polyport_webhook_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS polyport_webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    event_types TEXT NOT NULL,
    secrets TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    disabled_reason TEXT,
    disabled_at REAL,
    failing_since REAL,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS polyport_webhook_messages (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    time REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS polyport_webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_base INTEGER NOT NULL DEFAULT 0,
    next_at REAL,
    lease_owner TEXT,
    lease_until REAL,
    last_at REAL,
    response_code INTEGER,
    latency REAL,
    response_body TEXT,
    error TEXT,
    PRIMARY KEY (endpoint_id, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS polyport_webhook_due
    ON polyport_webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS polyport_webhook_log
    ON polyport_webhook_deliveries (endpoint_id, created);
CREATE INDEX IF NOT EXISTS polyport_webhook_by_event
    ON polyport_webhook_deliveries (event_id);
CREATE TABLE IF NOT EXISTS polyport_webhook_attempts (
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    time REAL NOT NULL,
    response_code INTEGER,
    latency REAL,
    error TEXT,
    response_body TEXT,
    PRIMARY KEY (endpoint_id, event_id, number)
) WITHOUT ROWID;
"""

ENDPOINT_COLUMNS = (
    "id, url, description, event_types, secrets, enabled, created, updated, "
    "disabled_reason, disabled_at, failing_since, owner"
)
#: Columns added since the first schema, added to older files when they are opened.
ADDED_COLUMNS = {"polyport_webhook_endpoints": (("owner", "TEXT"),)}
DELIVERY_COLUMNS = (
    "endpoint_id, event_id, type, created, status, attempts, retry_base, next_at, "
    "last_at, response_code, latency, response_body, error"
)


def endpoint_row(ep: WebhookEndpoint, cipher: SecretCipher) -> tuple[object, ...]:
    return (
        ep.id,
        ep.url,
        ep.description,
        orjson.dumps(list(ep.event_types)).decode(),
        cipher.seal(orjson.dumps([[s.value, s.expires] for s in ep.secrets]).decode()),
        int(ep.enabled),
        ep.created,
        ep.updated,
        ep.disabled_reason,
        ep.disabled_at,
        ep.failing_since,
        _owner_json(ep.owner),
    )


def _owner_json(owner: Owner | None) -> str | None:
    if owner is None:
        return None
    return orjson.dumps([owner.subject, list(owner.scopes), owner.via]).decode()


def _owner(text: str | None) -> Owner | None:
    if text is None:
        return None
    subject, scopes, via = orjson.loads(text)
    return Owner(subject, tuple(scopes), via)


def endpoint_from_row(row: Sequence[Any], cipher: SecretCipher) -> WebhookEndpoint:
    secrets = orjson.loads(cipher.open(row[4], f"webhook endpoint {row[0]}"))
    return WebhookEndpoint(
        id=row[0],
        url=row[1],
        description=row[2],
        event_types=tuple(orjson.loads(row[3])),
        secrets=tuple(Secret(value, expires) for value, expires in secrets),
        enabled=bool(row[5]),
        created=row[6],
        updated=row[7],
        disabled_reason=row[8],
        disabled_at=row[9],
        failing_since=row[10],
        owner=_owner(row[11]),
    )


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(*row)


def attempt_row(r: AttemptResult) -> tuple[object, ...]:
    """An outcome as a row of ``polyport_webhook_attempts`` (its history)."""
    return (
        r.endpoint_id,
        r.event_id,
        r.number,
        r.time,
        r.response_code,
        r.latency,
        r.error,
        r.response_body,
    )


def outcome_row(r: AttemptResult, owner: str) -> tuple[object, ...]:
    """An outcome as the arguments of the delivery row's update, for the lease of ``owner``."""
    return (
        r.status,
        r.number,
        r.next_at,
        r.time,
        r.response_code,
        r.latency,
        r.response_body,
        r.error,
        r.endpoint_id,
        r.event_id,
        owner,
    )


__all__ = [
    "ADDED_COLUMNS",
    "DELIVERY_COLUMNS",
    "ENDPOINT_COLUMNS",
    "SCHEMA",
    "attempt_row",
    "delivery_from_row",
    "endpoint_from_row",
    "endpoint_row",
    "outcome_row",
]
