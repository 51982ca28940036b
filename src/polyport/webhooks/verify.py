"""Verifiers for inbound webhooks: Standard Webhooks, GitHub and Stripe.

A verifier checks that a request was signed by the sender that holds the
shared secret, and names the delivery (the id a receiver deduplicates on):

    verifier = GitHub("It's a Secret to Everybody")
    verified = verifier.verify(headers, body)     # headers: lower-case names
    verified.id, verified.event_type

Every comparison of a signature is constant-time (:func:`hmac.compare_digest`),
and every offered signature is compared with every secret, so the time taken
says nothing about which part matched. The errors, and what ``/hooks/{name}``
answers with them::

    WebhookVerificationError
    ├── MissingHeader        a header the scheme requires is absent       400
    ├── MalformedHeader      a header is present but cannot be read       400
    ├── MalformedPayload     the body lacks what the scheme needs (id)    400
    ├── SignatureMismatch    no signature matches any secret              401
    └── StaleTimestamp       the signed time is outside the tolerance     401

A secret may be given as a string, a list of strings (during a rotation every
one is tried) or a function returning either (read at each verification, for
secrets that change while the process runs). Left out (``None``), a receiver
mounted by a node takes it from the setting ``hooks.secrets.<receiver>``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeAlias

import orjson

from polyport.core.errors import PolyportError
from polyport.webhooks.signing import secret_key, signed_content

SecretSource: TypeAlias = str | Sequence[str] | Callable[[], str | Sequence[str]]

#: Tolerance used when neither the verifier nor the caller gives one (five minutes,
#: as Standard Webhooks and Stripe recommend).
DEFAULT_TOLERANCE = 300.0
#: Longest delivery id accepted: ids are stored, and listed, per receiver.
MAX_ID = 200
#: Standard base64 with its padding, not empty: what ``b64decode(validate=True)`` reads.
_BASE64 = (
    r"(?:(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
    r"|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)"
)
_PRINTABLE_ID = re.compile(r"^[\x21-\x7e]+$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class WebhookVerificationError(PolyportError):
    """A webhook request could not be verified; ``message`` says why (safe to show)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingHeader(WebhookVerificationError):
    """A header the scheme requires is absent."""

    def __init__(self, header: str) -> None:
        super().__init__(f"the {header} header is missing")
        self.header = header


class MalformedHeader(WebhookVerificationError):
    """A header is present but not in the scheme's format."""

    def __init__(self, header: str, why: str) -> None:
        super().__init__(f"the {header} header is malformed: {why}")
        self.header = header


class MalformedPayload(WebhookVerificationError):
    """The body does not carry what the scheme takes from it (Stripe's event id)."""


class SignatureMismatch(WebhookVerificationError):
    """No offered signature was made with any of the secrets over this body."""


class StaleTimestamp(WebhookVerificationError):
    """The signed timestamp is further from now than the tolerance (a replay, or a bad clock)."""


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified request says about itself."""

    #: The delivery id: the same on every retry of one delivery; receivers deduplicate on it.
    id: str
    #: The event type, when the scheme carries one (GitHub's ``X-GitHub-Event``, Stripe's ``type``).
    event_type: str | None = None
    #: The signed time (Unix seconds), when the scheme signs one; GitHub signs none.
    timestamp: int | None = None


class Verifier(Protocol):
    """Checks one signature scheme; what ``@service.webhook_receiver(verify=…)`` takes."""

    #: Short name of the scheme, for listings and documents.
    scheme: ClassVar[str]
    #: The signature headers the scheme reads (for documents), lower-case.
    headers: ClassVar[tuple[str, ...]]

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: float | None = None,
        tolerance: float | None = None,
    ) -> Verified:
        """The delivery, or a :class:`WebhookVerificationError` subclass saying what is wrong.

        ``headers`` are keyed by lower-case name; ``body`` is the raw body, byte
        for byte as received; ``tolerance`` applies when the verifier has none.
        """
        ...


def _secrets(source: SecretSource | None, scheme: str) -> list[str]:
    if source is None:
        raise ValueError(
            f"{scheme}: no secret; give one, or set hooks.secrets.<receiver> for a node"
        )
    value = source() if callable(source) else source
    found = [value] if isinstance(value, str) else list(value)
    if not found or not all(isinstance(s, str) and s for s in found):
        raise ValueError(f"{scheme}: a secret is a non-empty string (or a list of them)")
    return found


def _check_id(value: str, header: str) -> str:
    if len(value) > MAX_ID or not _PRINTABLE_ID.fullmatch(value):
        raise MalformedHeader(header, f"an id is 1 to {MAX_ID} printable ASCII characters")
    return value


def _check_time(timestamp: int, now: float | None, tolerance: float) -> None:
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        direction = "old" if timestamp < now else "far in the future"
        raise StaleTimestamp(
            f"the signed timestamp is too {direction} (tolerance {tolerance:g} s); "
            "re-sign the request with the current time"
        )


class _Keyed:
    """Secrets resolved to HMAC keys, cached per secret string (rotation-friendly)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, bytes] = {}

    def keys(self, secrets: list[str], to_key: Callable[[str], bytes]) -> list[bytes]:
        out = []
        for secret in secrets:
            key = self._cache.get(secret)
            if key is None:
                if len(self._cache) > 16:  # a source that changes often: keep the cache small
                    self._cache.clear()
                key = self._cache[secret] = to_key(secret)
            out.append(key)
        return out


@dataclass(frozen=True)
class _HmacVerifier:
    secret: SecretSource | None = None
    #: Seconds a signed timestamp may differ from now; None: the receiver's setting.
    tolerance: float | None = None
    _keys: _Keyed = dataclasses.field(default_factory=_Keyed, init=False, repr=False, compare=False)

    scheme: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.tolerance is not None and not self.tolerance > 0:
            raise ValueError(f"{self.scheme}: tolerance must be a positive number of seconds")
        if isinstance(self.secret, str | list | tuple):
            self._key_list()  # a bad literal secret fails at declaration, not at the first request

    def with_secret(self, secret: SecretSource) -> _HmacVerifier:
        """This verifier with ``secret`` filled in (a node does this from its settings)."""
        return dataclasses.replace(self, secret=secret)

    def _key_list(self) -> list[bytes]:
        return self._keys.keys(_secrets(self.secret, self.scheme), self._key)

    def _key(self, secret: str) -> bytes:
        return secret.encode()

    def _check_signature(
        self, content: bytes, offered: list[bytes], mismatch: str = "no signature matches"
    ) -> None:
        """Raise SignatureMismatch unless some offered signature is some key's HMAC of ``content``.

        No early exit: every key is compared with every candidate, so timing says nothing.
        """
        found = False
        for key in self._key_list():
            expected = hmac.digest(key, content, "sha256")
            for candidate in offered:
                found |= hmac.compare_digest(expected, candidate)
        if not found:
            raise SignatureMismatch(mismatch)

    def _tolerance(self, tolerance: float | None) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return DEFAULT_TOLERANCE if tolerance is None else tolerance


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise MissingHeader(name)
    return value.strip()


def _branded(headers: Mapping[str, str], field: str) -> tuple[str, str]:
    """``svix-{field}`` if present (Svix's default brand), else ``webhook-{field}``.

    Svix sends ``svix-id`` / ``svix-timestamp`` / ``svix-signature`` unless an
    account has them renamed to the standard ``webhook-`` names; the value and
    the signature are the same either way, and Svix's own libraries read both.
    """
    svix = headers.get(f"svix-{field}")
    if svix is not None and svix.strip():
        return f"svix-{field}", svix.strip()
    name = f"webhook-{field}"
    return name, _header(headers, name)


@dataclass(frozen=True)
class StandardWebhooks(_HmacVerifier):
    """Standard Webhooks (https://www.standardwebhooks.com/), as Svix and others send them.

    ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``:
    space-separated ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``,
    keyed by the base64 part of a ``whsec_…`` secret. Signatures of other versions
    (``v1a``, asymmetric) are ignored. Svix's branded ``svix-id``,
    ``svix-timestamp`` and ``svix-signature`` are read too.
    """

    scheme: ClassVar[str] = "standard-webhooks"
    headers: ClassVar[tuple[str, ...]] = ("webhook-id", "webhook-timestamp", "webhook-signature")
    #: Each header's form as :meth:`verify` reads it, for documents (signatures of
    #: other versions are read too, and ignored: the document names the one that counts).
    header_patterns: ClassVar[dict[str, str]] = {
        "webhook-id": rf"^[\x21-\x7e]{{1,{MAX_ID}}}$",
        "webhook-timestamp": r"^[0-9]{1,12}$",
        "webhook-signature": rf"^v1,{_BASE64}(?: v1,{_BASE64})*$",
    }

    def _key(self, secret: str) -> bytes:
        return secret_key(secret)

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: float | None = None,
        tolerance: float | None = None,
    ) -> Verified:
        id_header, raw_id = _branded(headers, "id")
        msg_id = _check_id(raw_id, id_header)
        time_header, raw_time = _branded(headers, "timestamp")
        if not (raw_time.isascii() and raw_time.isdigit()) or len(raw_time) > 12:
            raise MalformedHeader(time_header, "it is a whole number of Unix seconds")
        timestamp = int(raw_time)
        offered = []
        signature_header, raw_signatures = _branded(headers, "signature")
        for part in raw_signatures.split():
            version, comma, value = part.partition(",")
            if not comma or not version or not value:
                raise MalformedHeader(signature_header, "each signature is 'v1,<base64>'")
            if version != "v1":
                continue
            try:
                offered.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                raise MalformedHeader(signature_header, "a v1 signature is base64") from None
        if not offered:
            raise SignatureMismatch("no v1 signature was offered")
        self._check_signature(signed_content(msg_id, timestamp, body), offered)
        _check_time(timestamp, now, self._tolerance(tolerance))
        return Verified(msg_id, None, timestamp)


@dataclass(frozen=True)
class GitHub(_HmacVerifier):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

    The key is the webhook's secret as UTF-8. The delivery id is
    ``X-GitHub-Delivery``, the event ``X-GitHub-Event``. GitHub signs **no
    timestamp**, so there is no replay window to check: a replayed request is
    caught only by its delivery id, which the receiver remembers for
    ``hooks.retention``. Configure the webhook with content type
    ``application/json``.
    """

    scheme: ClassVar[str] = "github"
    headers: ClassVar[tuple[str, ...]] = (
        "x-hub-signature-256",
        "x-github-delivery",
        "x-github-event",
    )

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: float | None = None,
        tolerance: float | None = None,
    ) -> Verified:
        signature = _header(headers, "x-hub-signature-256")
        algorithm, _, hex_digest = signature.partition("=")
        if algorithm != "sha256" or not _HEX64.fullmatch(hex_digest):
            raise MalformedHeader("x-hub-signature-256", "it is 'sha256=' and 64 hex digits")
        delivery = _check_id(_header(headers, "x-github-delivery"), "x-github-delivery")
        event = headers.get("x-github-event")
        self._check_signature(body, [bytes.fromhex(hex_digest)], "the signature does not match")
        return Verified(delivery, event.strip()[:100] if event else None, None)


@dataclass(frozen=True)
class Stripe(_HmacVerifier):
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]``.

    Each ``v1`` is the hex HMAC-SHA256 of ``{t}.{body}``, keyed by the endpoint's
    whole signing secret (``whsec_…``) as UTF-8 — not base64-decoded as in
    Standard Webhooks. Other schemes (``v0``) are ignored; several ``v1`` appear
    while Stripe rolls a secret. The delivery id is the event's ``id`` in the
    JSON body, the type its ``type``. Stripe's tolerance is 300 s.
    """

    scheme: ClassVar[str] = "stripe"
    headers: ClassVar[tuple[str, ...]] = ("stripe-signature",)
    tolerance: float | None = DEFAULT_TOLERANCE

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: float | None = None,
        tolerance: float | None = None,
    ) -> Verified:
        timestamps: list[str] = []
        offered: list[bytes] = []
        for item in _header(headers, "stripe-signature").split(","):
            prefix, equals, value = item.strip().partition("=")
            if not equals:
                raise MalformedHeader("stripe-signature", "it is 't=<unix>,v1=<hex>'")
            if prefix == "t":
                timestamps.append(value)
            elif prefix == "v1":
                if not _HEX64.fullmatch(value):
                    raise MalformedHeader("stripe-signature", "a v1 signature is 64 hex digits")
                offered.append(bytes.fromhex(value))
        if len(timestamps) != 1 or not timestamps[0].isdigit() or len(timestamps[0]) > 12:
            raise MalformedHeader("stripe-signature", "it carries one t=<Unix seconds>")
        timestamp = int(timestamps[0])
        if not offered:
            raise SignatureMismatch("no v1 signature was offered")
        self._check_signature(timestamps[0].encode() + b"." + body, offered)
        _check_time(timestamp, now, self._tolerance(tolerance))
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MalformedPayload("a Stripe event is a JSON object") from None
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, str) or not event_id:
            raise MalformedPayload("a Stripe event has a string 'id'")
        if len(event_id) > MAX_ID or not _PRINTABLE_ID.fullmatch(event_id):
            raise MalformedPayload(f"a Stripe event id is 1 to {MAX_ID} printable characters")
        event_type = event.get("type")
        return Verified(
            event_id, event_type[:100] if isinstance(event_type, str) else None, timestamp
        )


__all__ = [
    "DEFAULT_TOLERANCE",
    "GitHub",
    "MalformedHeader",
    "MalformedPayload",
    "MissingHeader",
    "SecretSource",
    "SignatureMismatch",
    "StaleTimestamp",
    "StandardWebhooks",
    "Stripe",
    "Verified",
    "Verifier",
    "WebhookVerificationError",
]
