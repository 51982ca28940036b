"""A simulated payment provider: a small HTTP app of its own, on loopback.

It plays the part Stripe or Adyen play in the guide's e-commerce example::

    POST /v1/payments      {"amount": "98.50", "currency": "EUR", "reference": "order-7",
                            "webhook_url": "http://127.0.0.1:8000/hooks/payments",
                            "card": "4242 4242 4242 4242"}
                           → 201 {"id": "pay_…", "status": "processing", …}
    GET  /v1/payments/{id} → the payment and its status

A moment later (``delay``), like a real provider, it settles the payment and
calls ``webhook_url`` with a Standard Webhooks request: ``webhook-id`` (the
same on every retry), ``webhook-timestamp`` and ``webhook-signature`` signed
with the endpoint's ``whsec_…`` secret over ``{id}.{timestamp}.{body}``. The
body is ``{"type": "payment.succeeded" | "payment.failed", "timestamp": …,
"data": {…the payment…}}``. Anything but a 2xx is retried after each of
``retry_delays`` seconds, re-signed with a fresh timestamp, then given up.
The card ``4000 0000 0000 0002`` is declined, as in Stripe's test mode.

It speaks just enough HTTP/1.1 for this (one request per connection, bodies
with ``Content-Length``) and shares nothing with the shop but the secret: it
stands for a third party, so it does not use polyport's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import urllib.parse
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation

import orjson

from polyport.webhooks.signing import secret_key, signature_header

log = logging.getLogger("polyport.demo.provider")

#: Stripe's test card that is always declined.
DECLINED_CARD = "4000000000000002"
MAX_BODY = 64 * 1024
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 413: "Too Large"}


@dataclass
class ProviderPayment:
    """A payment as the provider keeps it."""

    id: str
    amount: str
    currency: str
    reference: str
    status: str  # processing, succeeded, failed
    created: float
    failure_reason: str | None = None
    #: Attempts made to deliver the settlement webhook, and the last answer's status.
    webhook_attempts: int = 0
    webhook_status: int | None = None


class PaymentProvider:
    """Takes payment requests over HTTP and settles them with signed webhooks."""

    def __init__(
        self,
        secret: str,
        *,
        delay: float = 0.5,
        retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0),
        timeout: float = 10.0,
    ) -> None:
        self.secret = secret
        self._key = secret_key(secret)  # a bad secret fails here, not at the first webhook
        self.delay = delay
        self.retry_delays = retry_delays
        self.timeout = timeout
        self.payments: dict[str, ProviderPayment] = {}
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen (an ephemeral port by default) and return the base URL."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        """Stop listening and give up the webhooks not sent yet."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the API --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                status, answer = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(answer)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode() + answer)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that went away or spoke garbage: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        method, target, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            return 413, _error("the body is too large")
        body = await reader.readexactly(length)
        path = urllib.parse.urlsplit(target).path
        if method == "POST" and path == "/v1/payments":
            return self._create(body)
        if method == "GET" and path.startswith("/v1/payments/"):
            found = self.payments.get(path.rsplit("/", 1)[1])
            if found is None:
                return 404, _error("no such payment")
            return 200, orjson.dumps(asdict(found))
        return 404, _error(f"no route {method} {path}")

    def _create(self, body: bytes) -> tuple[int, bytes]:
        try:
            request = orjson.loads(body)
            amount = Decimal(str(request["amount"]))
            currency = str(request["currency"])
            reference = str(request["reference"])
            webhook_url = str(request["webhook_url"])
            card = str(request.get("card", "4242424242424242")).replace(" ", "")
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation):
            return 400, _error("give amount, currency, reference and webhook_url")
        target = urllib.parse.urlsplit(webhook_url)
        # This simulation only ever calls back on loopback.
        if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost"):
            return 400, _error("webhook_url must be http://127.0.0.1:<port>/…")
        if not amount > 0:
            return 400, _error("amount must be positive")
        payment = ProviderPayment(
            id="pay_" + secrets.token_hex(8),
            amount=str(amount),
            currency=currency,
            reference=reference,
            status="processing",
            created=time.time(),
        )
        self.payments[payment.id] = payment
        task = asyncio.create_task(self._settle(payment, card, webhook_url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 201, orjson.dumps(asdict(payment))

    # -- settling, and telling the merchant -------------------------------------------------

    async def _settle(self, payment: ProviderPayment, card: str, webhook_url: str) -> None:
        await asyncio.sleep(self.delay)
        if card == DECLINED_CARD:
            payment.status, payment.failure_reason = "failed", "card_declined"
        else:
            payment.status = "succeeded"
        body = orjson.dumps(
            {
                "type": f"payment.{payment.status}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "data": {
                    "id": payment.id,
                    "amount": payment.amount,
                    "currency": payment.currency,
                    "reference": payment.reference,
                    "status": payment.status,
                    "failure_reason": payment.failure_reason,
                },
            }
        )
        message_id = "msg_" + secrets.token_hex(12)  # stable across this webhook's retries
        for wait in (0.0, *self.retry_delays):
            await asyncio.sleep(wait)
            payment.webhook_attempts += 1
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header([self._key], message_id, timestamp, body),
            }
            try:
                status, _ = await post(webhook_url, body, headers, within=self.timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                log.info("payment webhook %s to %s failed: %s", message_id, webhook_url, exc)
                continue
            payment.webhook_status = status
            if 200 <= status < 300:
                return
            log.info("payment webhook %s answered %d; will retry", message_id, status)
        log.warning("payment webhook %s for %s was given up", message_id, payment.id)


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def post(
    url: str, body: bytes, headers: dict[str, str], *, within: float = 10.0
) -> tuple[int, bytes]:
    """POST ``body`` to an ``http://`` URL: the answer's status and body (``within`` s)."""
    return await request("POST", url, body, headers, within=within)


async def request(
    method: str, url: str, body: bytes, headers: dict[str, str], *, within: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP/1.1 request to an ``http://`` URL: the answer's status and body (``within`` s)."""
    target = urllib.parse.urlsplit(url)
    if target.scheme != "http" or not target.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    path = target.path or "/"
    if target.query:
        path += "?" + target.query
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(target.hostname, target.port or 80)
        try:
            head = [f"{method} {path} HTTP/1.1", f"host: {target.netloc}", "connection: close"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            head.append(f"content-length: {len(body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            status_line = await reader.readline()
            status = int(status_line.split(b" ", 2)[1])
            length = None
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            answer = await (reader.readexactly(length) if length is not None else reader.read())
            return status, answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


__all__ = ["DECLINED_CARD", "PaymentProvider", "ProviderPayment", "post", "request"]
