"""Webhooks: Standard Webhooks signing, and verifiers for inbound receivers."""

from polyport.webhooks.signing import new_secret, secret_key, sign, signature_header

__all__ = ["new_secret", "secret_key", "sign", "signature_header"]
