"""WS-Security ``UsernameToken`` in the SOAP header: SOAP's own way to send credentials.

    <soap:Header>
      <wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">
        <wsse:UsernameToken>
          <wsse:Username>alice</wsse:Username>
          <wsse:Password Type="…#PasswordText">API key or JWT</wsse:Password>
        </wsse:UsernameToken>
      </wsse:Security>
    </soap:Header>

The password carries what the HTTP edges take as a bearer token — an API key
or a JWT — and becomes ``Credentials(bearer=…)``; the core verifies it, this
module only finds it. The username is not checked: the key or token names the
principal. ``PasswordDigest`` is refused: the node keeps only digests of its
keys, so it could not recompute one (send ``PasswordText`` over TLS).
"""

from __future__ import annotations

from typing import Any

from polyport.core.auth import Credentials
from polyport.core.errors import Unauthenticated
from polyport.edges.soap.mapping import PASSWORD_TEXT, WSSE

SECURITY = f"{{{WSSE}}}Security"
USERNAME_TOKEN = f"{{{WSSE}}}UsernameToken"
PASSWORD = f"{{{WSSE}}}Password"


def is_security_header(entry: Any) -> bool:
    return bool(entry.tag == SECURITY)


def credentials_from(security: Any) -> Credentials | None:
    """The credentials in one ``wsse:Security`` header entry (None: it holds no token)."""
    token = security.find(USERNAME_TOKEN)
    if token is None:
        return None
    password = token.find(PASSWORD)
    if password is None:
        raise Unauthenticated("the UsernameToken has no Password", invalid_token=True)
    kind = password.get("Type")
    if kind is not None and kind != PASSWORD_TEXT:
        raise Unauthenticated(
            "only PasswordText UsernameTokens are accepted (the password is an API key or "
            "a JWT; send it over TLS)",
            invalid_token=True,
        )
    secret = (password.text or "").strip()
    if not secret:
        raise Unauthenticated("the UsernameToken's Password is empty", invalid_token=True)
    return Credentials(bearer=secret)
