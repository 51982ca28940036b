"""Authentication: credentials from any edge → a :class:`Principal`.

Edges extract :class:`Credentials` from their wire (HTTP headers, gRPC
metadata, a WebSocket frame) and call :meth:`Authenticator.authenticate`;
they never verify anything themselves. API keys are looked up by their
SHA-256 digest; JWTs (HS256, RS256) are verified once and then cached until
they expire, so a busy client does not pay for a signature check per call.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyport.core.config import AuthConfig, JwtConfig
from polyport.core.context import ANONYMOUS, Principal
from polyport.core.errors import ConfigError, MissingExtra, Unauthenticated
from polyport.core.tickets import PREFIX as TICKET_PREFIX
from polyport.core.tickets import TicketIssuer

#: The principal of anonymous callers in development mode: everything is allowed.
DEV_ANONYMOUS = Principal("anonymous", frozenset({"*"}), anonymous=True)

_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a caller presented: a bearer token and/or an API key."""

    bearer: str | None = None
    api_key: str | None = None

    def __bool__(self) -> bool:
        return self.bearer is not None or self.api_key is not None


NO_CREDENTIALS = Credentials()


def _scopes_of(claims: dict[str, Any], claim: str) -> frozenset[str]:
    for name in (claim, "scopes", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return frozenset(value)
    return frozenset()


class _JwtVerifier:
    def __init__(self, config: JwtConfig) -> None:
        try:
            import jwt
        except ImportError as exc:
            raise MissingExtra("jwt", "JWT authentication") from exc
        self._jwt = jwt
        self.config = config
        self.keys: dict[str, Any] = {}
        if config.hs256_secret is not None:
            secret = config.hs256_secret.get_secret_value()
            if len(secret) < 32:
                raise ConfigError("auth.jwt.hs256_secret must be at least 32 characters")
            self.keys["HS256"] = secret
        if config.rs256_public_key is not None:
            pem = config.rs256_public_key
            if "-----BEGIN" not in pem:
                try:
                    pem = Path(pem).read_text(encoding="ascii")
                except OSError as exc:
                    raise ConfigError(
                        f"auth.jwt.rs256_public_key: cannot read {pem}: {exc}"
                    ) from exc
            try:
                from cryptography.hazmat.primitives.serialization import load_pem_public_key

                self.keys["RS256"] = load_pem_public_key(pem.encode())
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"auth.jwt.rs256_public_key is not a PEM public key: {exc}"
                ) from exc

    def verify(self, token: str) -> tuple[Principal, float]:
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed bearer token", invalid_token=True) from None
        alg = header.get("alg")
        key = self.keys.get(alg) if isinstance(alg, str) else None
        if key is None:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted", invalid_token=True)
        config = self.config
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway,
                options={"require": ["exp"], "verify_aud": config.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", invalid_token=True) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is not accepted", invalid_token=True) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is not accepted", invalid_token=True) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token has no '{exc.claim}' claim", invalid_token=True) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid", invalid_token=True) from None
        except jwt.PyJWTError:
            raise Unauthenticated("token is invalid", invalid_token=True) from None
        subject = claims.get(config.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated(
                f"token has no '{config.subject_claim}' claim", invalid_token=True
            )
        principal = Principal(subject, _scopes_of(claims, config.scope_claim), claims=claims)
        return principal, float(claims["exp"]) + config.leeway


class Authenticator:
    """Turns credentials into a principal, or raises :class:`Unauthenticated`."""

    def __init__(self, config: AuthConfig, *, dev: bool = False) -> None:
        self.dev = dev
        self.anonymous = DEV_ANONYMOUS if dev else ANONYMOUS
        self._keys: dict[str, Principal] = {}
        for entry in config.api_keys:
            digest = (
                entry.key_sha256
                or hashlib.sha256(
                    entry.key.get_secret_value().encode()  # type: ignore[union-attr]
                ).hexdigest()
            )
            self._keys[digest] = Principal(entry.subject, frozenset(entry.scopes))
        self._jwt = _JwtVerifier(config.jwt) if config.jwt is not None else None
        self._cache: dict[str, tuple[Principal, float]] = {}
        secret = config.ticket_secret.get_secret_value() if config.ticket_secret else None
        self.tickets = TicketIssuer(secret, config.ticket_ttl)

    @property
    def requires_credentials(self) -> bool:
        return not self.dev

    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal for ``credentials``; the anonymous one when none were given."""
        if credentials.api_key is not None:
            return self._api_key(credentials.api_key)
        token = credentials.bearer
        if token is None:
            return self.anonymous
        if token.startswith(TICKET_PREFIX):
            return self.tickets.verify(token)
        if token.count(".") == 2:
            return self._bearer_jwt(token)
        return self._api_key(token)

    def _api_key(self, key: str) -> Principal:
        principal = self._keys.get(hashlib.sha256(key.encode()).hexdigest())
        if principal is None:
            raise Unauthenticated("unknown API key", invalid_token=True)
        return principal

    def _bearer_jwt(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires:
                return principal
            del self._cache[token]
        if self._jwt is None:
            raise Unauthenticated("bearer JWTs are not accepted by this node", invalid_token=True)
        principal, expires = self._jwt.verify(token)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (principal, expires)
        return principal
