"""Webhooks: Standard Webhooks signing, and verifiers for inbound receivers."""

from polyport.core.contract import WebhookDelivery
from polyport.webhooks.signing import new_secret, secret_key, sign, signature_header
from polyport.webhooks.verify import (
    GitHub,
    MalformedHeader,
    MalformedPayload,
    MissingHeader,
    SignatureMismatch,
    StaleTimestamp,
    StandardWebhooks,
    Stripe,
    Verified,
    Verifier,
    WebhookVerificationError,
)

__all__ = [
    "GitHub",
    "MalformedHeader",
    "MalformedPayload",
    "MissingHeader",
    "SignatureMismatch",
    "StaleTimestamp",
    "StandardWebhooks",
    "Stripe",
    "Verified",
    "Verifier",
    "WebhookDelivery",
    "WebhookVerificationError",
    "new_secret",
    "secret_key",
    "sign",
    "signature_header",
]
