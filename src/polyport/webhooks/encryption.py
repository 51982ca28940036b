"""Webhook endpoint secrets encrypted at rest, with keys from the configuration.

A ``whsec_…`` secret must be stored in a form the node can read back (it
signs every delivery with it), so it cannot be hashed like an API key; it is
encrypted instead. A copy of the database — a backup, a dump, a stolen file —
then holds no usable secret without the key, which lives in the
configuration (``webhooks.secret_keys``, or ``POLYPORT_WEBHOOKS__SECRET_KEYS``),
not in the database.

The cipher is Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``),
through ``MultiFernet``: the **first** key encrypts, every listed key
decrypts. Rotating a key is adding a new one in front, restarting (every row
is re-encrypted under it at start), then dropping the old one. A stored value
is either ``fernet:<token>`` or, written without a key, the plain JSON list
it encrypts; both are read, so a database written before encryption (or in
development mode without a key) needs no other migration than a start with
a key configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from polyport.core.errors import ConfigError, MissingExtra

#: What a stored value encrypted by this module starts with.
PREFIX = "fernet:"


class SecretsLocked(ConfigError):
    """Stored secrets are encrypted with a key this node is not configured with."""


class SecretCipher:
    """Seals and opens the stored form of an endpoint's secrets."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self._fernet: Any = None
        self._primary: Any = None
        self._invalid: type[Exception] = Exception
        if self.keys:
            try:
                from cryptography.fernet import Fernet, InvalidToken, MultiFernet
            except ImportError as exc:
                raise MissingExtra("webhooks", "encrypting webhook secrets at rest") from exc
            fernets = [Fernet(key.encode("ascii")) for key in self.keys]
            self._fernet = MultiFernet(fernets)
            self._primary = fernets[0]
            self._invalid = InvalidToken

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, plain: str) -> str:
        """The stored form of ``plain``: encrypted under the first key, or as is without keys."""
        if self._fernet is None:
            return plain
        token: bytes = self._fernet.encrypt(plain.encode())
        return PREFIX + token.decode("ascii")

    def open(self, stored: str, what: str) -> str:
        """``stored`` read back; :class:`SecretsLocked` naming ``what`` when no key opens it."""
        if not stored.startswith(PREFIX):
            return stored  # written without a key (before encryption, or in development)
        if self._fernet is None:
            raise SecretsLocked(
                f"the secrets of {what} are encrypted, and webhooks.secret_keys is empty: "
                "configure the key they were encrypted with"
            )
        try:
            return str(self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode())
        except self._invalid:
            raise SecretsLocked(
                f"none of webhooks.secret_keys opens the secrets of {what}: keep the key "
                "they were encrypted with in the list until a start has re-encrypted them"
            ) from None

    def is_sealed(self, stored: str) -> bool:
        """Whether ``stored`` is encrypted (else it is the plain JSON list)."""
        return stored.startswith(PREFIX)

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is as :meth:`seal` writes it now (else a start re-seals it)."""
        if self._fernet is None:
            return True  # nothing to do without a key (an encrypted value stays encrypted)
        if not stored.startswith(PREFIX):
            return False
        try:
            self._primary.decrypt(stored[len(PREFIX) :].encode("ascii"))
        except self._invalid:
            return False
        return True


__all__ = ["PREFIX", "SecretCipher", "SecretsLocked"]
