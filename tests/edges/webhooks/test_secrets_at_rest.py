"""Endpoint secrets encrypted at rest: new rows, old plain rows, key rotation, no key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from polyport import Service, Settings
from polyport.core.errors import ConfigError
from polyport.testing import serve_in_thread
from polyport.webhooks.encryption import SecretCipher, SecretsLocked

from .conftest import (
    OrderCreated,
    Receiver,
    publish,
    running,
    settings_for,
    stored_endpoint,
    subscribe,
)

OLD = "b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQtb2xkLW9sZC0="
NEW = "bmV3LW5ldy1uZXctbmV3LW5ldy1uZXctbmV3LW5ldy0="
OTHER = "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3Q="


def keyed(tmp_path: Path, *keys: str, dev: bool = True) -> Settings:
    base = settings_for(tmp_path, secret_keys=list(keys))
    return base.model_copy(update={"dev": dev})


def stored(tmp_path: Path, endpoint_id: str) -> str:
    return str(stored_endpoint(tmp_path / "db.sqlite3", endpoint_id)["secrets"])


def delivered_and_verified(node: Any, receiver: Receiver, secret: str, n: int) -> None:
    publish(node, OrderCreated, id=n)
    request = receiver.wait_count(n)[-1]
    Webhook(secret).verify(request.body, request.headers)  # raises if not signed with it


def test_a_new_secret_is_stored_encrypted(tmp_path: Path, receiver: Receiver) -> None:
    """With a key, the database holds a Fernet token, not the secret; deliveries still sign."""
    with running(keyed(tmp_path, NEW)) as node:
        endpoint = subscribe(node, receiver.url)
        secret = endpoint["secret"]
        raw = stored(tmp_path, endpoint["id"])
        assert raw.startswith("fernet:") and secret not in raw and "whsec_" not in raw
        delivered_and_verified(node, receiver, secret, 1)
        rotated = httpx.post(f"{node.url}/v1/webhooks/{endpoint['id']}/rotate").json()["secret"]
        assert rotated not in stored(tmp_path, endpoint["id"])


def test_plain_rows_are_encrypted_at_start_and_keys_rotate(
    tmp_path: Path, receiver: Receiver
) -> None:
    """No key (development) → plain; a key → encrypted at start; [new, old] → re-encrypted
    under new; the old key can then go; a key that opens nothing stops the start."""
    with running(keyed(tmp_path)) as node:
        endpoint = subscribe(node, receiver.url)
    secret = endpoint["secret"]
    assert secret in stored(tmp_path, endpoint["id"])  # development mode without a key
    with running(keyed(tmp_path, OLD)) as node:
        under_old = stored(tmp_path, endpoint["id"])
        assert under_old.startswith("fernet:") and secret not in under_old
        delivered_and_verified(node, receiver, secret, 1)
    with running(keyed(tmp_path, NEW, OLD)):
        under_new = stored(tmp_path, endpoint["id"])
        assert under_new != under_old
    assert SecretCipher([NEW]).is_current(under_new)
    with running(keyed(tmp_path, NEW)) as node:
        delivered_and_verified(node, receiver, secret, 2)
    assert "none of webhooks.secret_keys opens" in start_error(keyed(tmp_path, OTHER))
    assert "webhooks.secret_keys is empty" in start_error(keyed(tmp_path))


def start_error(settings: Settings) -> str:
    """The one line a node that cannot read its endpoints' secrets stops with."""
    # A Service of its own: a node that failed to start keeps its service bound.
    throwaway = Service("secretless", description="Starts on a database it cannot read.")
    with (
        pytest.raises(RuntimeError) as failed,
        serve_in_thread(throwaway, settings, edges=["webhooks"]),
    ):
        pass
    cause = failed.value.__cause__
    assert isinstance(cause, ConfigError), cause
    return str(cause)


def test_without_a_key_only_development_mode_stores_new_secrets(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Secure mode with no key: creating or rotating a secret is a 503 naming the setting."""
    secure = Settings.model_validate(
        {
            **keyed(tmp_path).model_dump(mode="json"),
            "dev": False,
            "auth": {"api_keys": [{"key": "ops", "subject": "ops", "scopes": ["*"]}]},
        }
    )
    with running(secure) as node:
        refused = httpx.post(
            f"{node.url}/v1/webhooks", json={"url": receiver.url}, headers={"x-api-key": "ops"}
        )
        assert refused.status_code == 503 and "webhooks.secret_keys" in refused.json()["detail"]


def test_keys_are_checked_with_the_configuration() -> None:
    """A key that is not 32 bytes of URL-safe base64 is refused when settings load."""
    with pytest.raises(ValueError, match=r"webhooks.secret_keys.0: a key is 32 random bytes"):
        Settings.model_validate({"webhooks": {"secret_keys": ["too-short"]}})


def test_the_cipher_on_its_own() -> None:
    """Seal/open round trips; plain values pass through; a wrong key is SecretsLocked."""
    cipher = SecretCipher([NEW, OLD])
    sealed = cipher.seal('[["whsec_x", null]]')
    assert sealed.startswith("fernet:") and cipher.open(sealed, "e") == '[["whsec_x", null]]'
    assert cipher.open('[["whsec_x", null]]', "e") == '[["whsec_x", null]]'
    assert cipher.is_current(sealed) and not cipher.is_current('[["whsec_x", null]]')
    assert not cipher.is_current(SecretCipher([OLD]).seal("x"))
    assert SecretCipher([OLD, NEW]).open(sealed, "e") == '[["whsec_x", null]]'
    with pytest.raises(SecretsLocked, match="endpoint ep_1"):
        SecretCipher([OTHER]).open(sealed, "endpoint ep_1")
    assert SecretCipher([]).seal("plain") == "plain"
