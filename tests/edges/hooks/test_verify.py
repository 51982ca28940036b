"""The verifiers on their own: each scheme's rules as its documentation gives them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from polyport.webhooks import (
    GitHub,
    MalformedHeader,
    MalformedPayload,
    MissingHeader,
    SignatureMismatch,
    StaleTimestamp,
    StandardWebhooks,
    Stripe,
    Verified,
    new_secret,
    sign,
)

BODY = b'{"type":"payment.succeeded","amount":1200}'


def reference_headers(secret: str, body: bytes, msg_id: str, when: datetime) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


# -- Standard Webhooks ------------------------------------------------------------------------


def test_standard_webhooks_accepts_what_the_reference_library_signs() -> None:
    """A request signed by the ``standardwebhooks`` library verifies, with its id and time."""
    secret = new_secret()
    now = datetime.now(tz=UTC)
    headers = reference_headers(secret, BODY, "msg_2Lh9", now)
    verified = StandardWebhooks(secret).verify(headers, BODY)
    assert verified == Verified("msg_2Lh9", None, int(now.timestamp()))


def test_the_reference_library_accepts_what_polyport_signs() -> None:
    """And the other way round: polyport's signing primitive satisfies the library."""
    secret = new_secret()
    timestamp = int(time.time())
    from polyport.webhooks import secret_key

    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret_key(secret), "msg_x", timestamp, BODY),
    }
    assert Webhook(secret).verify(BODY, headers) == {"type": "payment.succeeded", "amount": 1200}


def test_standard_webhooks_reads_svix_branded_headers() -> None:
    """Svix sends ``svix-id``/``svix-timestamp``/``svix-signature`` by default."""
    secret = new_secret()
    now = datetime.now(tz=UTC)
    standard = reference_headers(secret, BODY, "msg_svix", now)
    branded = {name.replace("webhook-", "svix-"): value for name, value in standard.items()}
    assert StandardWebhooks(secret).verify(branded, BODY).id == "msg_svix"
    with pytest.raises(SignatureMismatch):
        StandardWebhooks(secret).verify(branded, BODY + b" ")
    with pytest.raises(MalformedHeader, match="svix-timestamp"):
        StandardWebhooks(secret).verify(branded | {"svix-timestamp": "later"}, BODY)
    with pytest.raises(MissingHeader, match="webhook-signature"):
        StandardWebhooks(secret).verify(
            {k: branded[k] for k in ("svix-id", "svix-timestamp")}, BODY
        )


def test_standard_webhooks_rejects_a_tampered_body_and_a_wrong_secret() -> None:
    """One changed byte, or another secret, and no signature matches."""
    secret = new_secret()
    headers = reference_headers(secret, BODY, "msg_1", datetime.now(tz=UTC))
    with pytest.raises(SignatureMismatch):
        StandardWebhooks(secret).verify(headers, BODY.replace(b"1200", b"1201"))
    with pytest.raises(SignatureMismatch):
        StandardWebhooks(new_secret()).verify(headers, BODY)


def test_standard_webhooks_rejects_a_stale_or_future_timestamp() -> None:
    """Outside the tolerance either way is refused even with a good signature."""
    secret = new_secret()
    verifier = StandardWebhooks(secret)
    old = reference_headers(secret, BODY, "msg_1", datetime.now(tz=UTC) - timedelta(seconds=301))
    with pytest.raises(StaleTimestamp, match="too old"):
        verifier.verify(old, BODY)
    future = reference_headers(secret, BODY, "msg_1", datetime.now(tz=UTC) + timedelta(minutes=6))
    with pytest.raises(StaleTimestamp, match="future"):
        verifier.verify(future, BODY)
    # A larger tolerance, given by the receiver's settings, lets the old one through.
    assert verifier.verify(old, BODY, tolerance=600).id == "msg_1"
    # The verifier's own tolerance wins over the receiver's.
    with pytest.raises(StaleTimestamp):
        StandardWebhooks(secret, tolerance=60).verify(old, BODY, tolerance=600)


def test_standard_webhooks_tries_every_secret_and_every_signature() -> None:
    """During a rotation: several secrets on our side, several signatures on theirs."""
    old, new = new_secret(), new_secret()
    headers = reference_headers(old, BODY, "msg_1", datetime.now(tz=UTC))
    extra = Webhook(new_secret()).sign("msg_1", datetime.now(tz=UTC), BODY.decode())
    headers["webhook-signature"] = f"{extra} v1a,ignored= {headers['webhook-signature']}"
    assert StandardWebhooks([new, old]).verify(headers, BODY).id == "msg_1"
    assert StandardWebhooks(lambda: [old]).verify(headers, BODY).id == "msg_1"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"webhook-id": None}, MissingHeader),
        ({"webhook-timestamp": None}, MissingHeader),
        ({"webhook-signature": None}, MissingHeader),
        ({"webhook-signature": "   "}, MissingHeader),
        ({"webhook-timestamp": "soon"}, MalformedHeader),
        ({"webhook-timestamp": "1.5e9"}, MalformedHeader),
        ({"webhook-signature": "garbage"}, MalformedHeader),
        ({"webhook-signature": "v1,not base64!"}, MalformedHeader),
        ({"webhook-id": "has space"}, MalformedHeader),
        ({"webhook-id": "x" * 201}, MalformedHeader),
        ({"webhook-signature": "v2,AAAA"}, SignatureMismatch),
    ],
)
def test_standard_webhooks_header_errors(
    change: dict[str, str | None], error: type[Exception]
) -> None:
    """Missing headers, unreadable ones, and no v1 signature are told apart."""
    secret = new_secret()
    headers = reference_headers(secret, BODY, "msg_1", datetime.now(tz=UTC))
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(error):
        StandardWebhooks(secret).verify(headers, BODY)


def test_a_bad_literal_secret_fails_at_declaration() -> None:
    """A secret that is not ``whsec_`` + base64 is refused before any request arrives."""
    with pytest.raises(ValueError, match="whsec_"):
        StandardWebhooks("not-a-secret")
    with pytest.raises(ValueError, match="24 to 64"):
        StandardWebhooks("whsec_" + base64.b64encode(b"short").decode())


# -- GitHub -------------------------------------------------------------------------------------


def test_github_documentation_test_vector() -> None:
    """GitHub's published example: secret "It's a Secret to Everybody", payload "Hello, World!"."""
    headers = {
        "x-hub-signature-256": (
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        ),
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-github-event": "push",
    }
    verified = GitHub("It's a Secret to Everybody").verify(headers, b"Hello, World!")
    assert verified == Verified("72d3162e-cc78-11e3-81ab-4c9367dc0958", "push", None)


def test_github_signature_as_the_documentation_computes_it() -> None:
    """``sha256=`` + hex HMAC-SHA256 of the raw body, keyed by the secret as UTF-8."""
    secret, body = "ünïcode secret", '{"zen":"Keep it logically awesome. ✨"}'.encode()
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    headers = {"x-hub-signature-256": f"sha256={digest}", "x-github-delivery": "d-1"}
    assert GitHub(secret).verify(headers, body).id == "d-1"
    assert GitHub(secret).verify(
        headers | {"x-hub-signature-256": "sha256=" + digest.upper()}, body
    )
    with pytest.raises(SignatureMismatch):
        GitHub(secret).verify(headers, body + b" ")
    with pytest.raises(SignatureMismatch):
        GitHub("another secret").verify(headers, body)
    assert GitHub(["another secret", secret]).verify(headers, body).id == "d-1"


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"x-github-delivery": "d-1"}, MissingHeader),
        ({"x-hub-signature-256": "sha1=" + "0" * 40, "x-github-delivery": "d"}, MalformedHeader),
        ({"x-hub-signature-256": "sha256=xyz", "x-github-delivery": "d"}, MalformedHeader),
        ({"x-hub-signature-256": "sha256=" + "0" * 64}, MissingHeader),
    ],
)
def test_github_header_errors(headers: dict[str, str], error: type[Exception]) -> None:
    """The signature header and the delivery id are both required, in GitHub's format."""
    with pytest.raises(error):
        GitHub("secret").verify(headers, b"{}")


# -- Stripe -------------------------------------------------------------------------------------

STRIPE_SECRET = "whsec_test_secret"
EVENT = b'{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"charge.succeeded"}'


def stripe_header(body: bytes, timestamp: int, *secrets: str) -> str:
    """``t=…,v1=…`` as Stripe's "verify manually" steps compute it: HMAC of ``{t}.{body}``."""
    parts = [f"t={timestamp}"]
    for secret in secrets or (STRIPE_SECRET,):
        signed_payload = f"{timestamp}.".encode() + body
        parts.append("v1=" + hmac.new(secret.encode(), signed_payload, hashlib.sha256).hexdigest())
    return ",".join(parts)


def test_stripe_signature_as_the_documentation_computes_it() -> None:
    """The id and type come from the JSON body; v0 and unknown schemes are ignored."""
    now = int(time.time())
    header = (
        stripe_header(EVENT, now)
        + ",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    )
    verified = Stripe(STRIPE_SECRET).verify({"stripe-signature": header}, EVENT)
    assert verified == Verified("evt_1NG8Du2eZvKYlo2CUI79vXWy", "charge.succeeded", now)


def test_stripe_key_is_the_whole_secret_not_base64() -> None:
    """Unlike Standard Webhooks, Stripe keys the HMAC with the ``whsec_…`` string itself."""
    now = int(time.time())
    decoded_key = base64.b64decode("dGVzdF9zZWNyZXQ=")  # what a Standard Webhooks reading would use
    wrong = hmac.new(decoded_key, f"{now}.".encode() + EVENT, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureMismatch):
        Stripe(STRIPE_SECRET).verify({"stripe-signature": f"t={now},v1={wrong}"}, EVENT)


def test_stripe_accepts_any_of_several_v1_signatures() -> None:
    """While Stripe rolls a secret it sends one v1 per secret."""
    now = int(time.time())
    header = stripe_header(EVENT, now, "whsec_old_one", STRIPE_SECRET)
    assert Stripe(STRIPE_SECRET).verify({"stripe-signature": header}, EVENT).id.startswith("evt_")


def test_stripe_tolerance_is_300_seconds() -> None:
    """A timestamp 301 s old is refused, 299 s old accepted, whatever the receiver's setting."""
    now = time.time()
    verifier = Stripe(STRIPE_SECRET)
    old = {"stripe-signature": stripe_header(EVENT, int(now) - 301)}
    with pytest.raises(StaleTimestamp):
        verifier.verify(old, EVENT, now=now, tolerance=3600)
    recent = {"stripe-signature": stripe_header(EVENT, int(now) - 299)}
    assert verifier.verify(recent, EVENT, now=now).id.startswith("evt_")


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("", MissingHeader),
        ("v1=" + "0" * 64, MalformedHeader),
        ("t=abc,v1=" + "0" * 64, MalformedHeader),
        ("t=1,t=2,v1=" + "0" * 64, MalformedHeader),
        ("t=1,v1=nothex", MalformedHeader),
        ("garbage", MalformedHeader),
        (f"t={int(time.time())},v0=" + "0" * 64, SignatureMismatch),
        (f"t={int(time.time())},v1=" + "0" * 64, SignatureMismatch),
    ],
)
def test_stripe_header_errors(header: str, error: type[Exception]) -> None:
    """One t, hex v1 signatures; anything else is malformed or does not match."""
    headers = {"stripe-signature": header} if header else {}
    with pytest.raises(error):
        Stripe(STRIPE_SECRET).verify(headers, EVENT)


def test_stripe_needs_an_event_id_in_the_body() -> None:
    """A correctly signed body that is not an event with an id cannot be deduplicated."""
    now = int(time.time())
    for body in (b"[1, 2]", b'{"type":"x"}', b"not json"):
        header = stripe_header(body, now)
        with pytest.raises(MalformedPayload):
            Stripe(STRIPE_SECRET).verify({"stripe-signature": header}, body)
