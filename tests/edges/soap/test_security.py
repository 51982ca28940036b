"""WS-Security UsernameToken in the SOAP header, and HTTP credentials, in secure mode."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
import requests
import zeep
import zeep.transports
from lxml import etree
from zeep.wsse.username import UsernameToken

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread

SECRET = "s" * 48
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "urn:polyport:shop:v1"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordText"
)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    db = tmp_path_factory.mktemp("soap-secure") / "db.sqlite3"
    settings = Settings.model_validate(
        {
            "database": str(db),
            "auth": {
                "api_keys": [
                    {"key": "shopper-key", "subject": "shopper"},
                    {"key": "admin-key", "subject": "admin", "scopes": ["catalog:write"]},
                ],
                "jwt": {"hs256_secret": SECRET},
            },
            "rate_limit": {"enabled": False},
        }
    )
    with serve_in_thread(shop, settings, edges=["soap"]) as server:
        yield server


def client(node: RunningNode, **options: object) -> zeep.Client:
    return zeep.Client(f"{node.url}/soap?wsdl", **options)  # type: ignore[arg-type]


def fault_code(fault: zeep.exceptions.Fault) -> str:
    (detail,) = fault.detail
    return str(detail[0].text)


def test_no_credentials_is_an_unauthenticated_client_fault(secure: RunningNode) -> None:
    """Protected operations need credentials; public ones answer anyone."""
    anonymous = client(secure)
    with pytest.raises(zeep.exceptions.Fault) as caught:
        anonymous.service.GetUser(id=1)
    assert caught.value.code == "soap:Client"
    assert fault_code(caught.value) == "UNAUTHENTICATED"
    assert anonymous.service.Multiply(a=2, b=3) == 6
    assert anonymous.service.GetProduct(id=1).id == 1


def test_username_token_with_an_api_key(secure: RunningNode) -> None:
    """zeep's UsernameToken (PasswordText) carries the API key."""
    shopper = client(secure, wsse=UsernameToken("shopper", "shopper-key"))
    assert shopper.service.GetUser(id=1).id == 1
    with pytest.raises(zeep.exceptions.Fault) as caught:
        shopper.service.CreateProduct(name="x", price="1.00")
    assert caught.value.code == "soap:Client"
    assert fault_code(caught.value) == "PERMISSION_DENIED"
    admin = client(secure, wsse=UsernameToken("admin", "admin-key"))
    assert admin.service.CreateProduct(name="x", price="1.00").name == "x"


def test_username_token_with_a_jwt(secure: RunningNode) -> None:
    """The password may be a bearer JWT; expired ones are refused."""
    token = jwt.encode({"sub": "jo", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert client(secure, wsse=UsernameToken("jo", token)).service.GetUser(id=2).id == 2
    expired = jwt.encode({"sub": "jo", "exp": int(time.time()) - 600}, SECRET, algorithm="HS256")
    with pytest.raises(zeep.exceptions.Fault) as caught:
        client(secure, wsse=UsernameToken("jo", expired)).service.GetUser(id=2)
    assert fault_code(caught.value) == "UNAUTHENTICATED" and "expired" in caught.value.message


def test_bad_tokens_are_refused(secure: RunningNode) -> None:
    """An unknown key, and PasswordDigest (the node cannot recompute a digest), are refused."""
    with pytest.raises(zeep.exceptions.Fault) as unknown:
        client(secure, wsse=UsernameToken("x", "nope")).service.GetUser(id=1)
    assert fault_code(unknown.value) == "UNAUTHENTICATED"
    assert unknown.value.message == "unknown API key"
    digest = UsernameToken("shopper", "shopper-key", use_digest=True)
    with pytest.raises(zeep.exceptions.Fault) as refused:
        client(secure, wsse=digest).service.GetUser(id=1)
    assert fault_code(refused.value) == "UNAUTHENTICATED"
    assert "PasswordText" in refused.value.message


def test_http_credentials_still_work(secure: RunningNode) -> None:
    """X-API-Key and Authorization: Bearer headers authenticate SOAP calls too."""
    for headers in ({"X-API-Key": "shopper-key"}, {"Authorization": "Bearer shopper-key"}):
        session = requests.Session()
        session.headers.update(headers)
        transport = zeep.transports.Transport(session=session)
        assert client(secure, transport=transport).service.GetUser(id=1).id == 1


def raw(node: RunningNode, header: str, body: str) -> httpx.Response:
    envelope = (
        f'<soap:Envelope xmlns:soap="{SOAP}" xmlns:wsse="{WSSE}"><soap:Header>{header}'
        f"</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"
    )
    return httpx.post(
        f"{node.url}/soap", content=envelope, headers={"content-type": "text/xml"}, timeout=10
    )


def token(password: str, kind: str | None = PASSWORD_TEXT) -> str:
    type_attribute = f' Type="{kind}"' if kind else ""
    return (
        '<wsse:Security soap:mustUnderstand="1"><wsse:UsernameToken>'
        "<wsse:Username>anyone</wsse:Username>"
        f"<wsse:Password{type_attribute}>{password}</wsse:Password>"
        "</wsse:UsernameToken></wsse:Security>"
    )


def test_a_hand_written_security_header(secure: RunningNode) -> None:
    """mustUnderstand on wsse:Security is understood; Type may be omitted (PasswordText)."""
    body = f'<GetUser xmlns="{TNS}"><id>1</id></GetUser>'
    assert raw(secure, token("shopper-key"), body).status_code == 200
    assert raw(secure, token(" shopper-key ", None), body).status_code == 200
    empty = raw(secure, token(""), body)
    assert empty.status_code == 500 and b"UNAUTHENTICATED" in empty.content


def test_anonymous_callers_learn_no_argument_schema(secure: RunningNode) -> None:
    """Authentication comes before argument errors, even those found while reading XML."""
    body = f'<GetUser xmlns="{TNS}"><id>1</id><id>2</id></GetUser>'
    response = raw(secure, "", body)
    root = etree.fromstring(response.content)
    assert root.findtext(f".//{{{TNS}}}code") == "UNAUTHENTICATED"
    signed_in = raw(secure, token("shopper-key"), body)
    assert etree.fromstring(signed_in.content).findtext(f".//{{{TNS}}}code") == "INVALID_ARGUMENT"
