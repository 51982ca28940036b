"""A receiver's handler, read once at start-up: what it takes, and how to call it.

    @shop.webhook_receiver("payments", verify=StandardWebhooks(secret))
    async def payment_event(event: PaymentEvent, ctx: Context, delivery: WebhookDelivery) -> None:

The one parameter annotated with neither :class:`Context` nor
:class:`WebhookDelivery` receives the body, validated against its annotation
(a Pydantic model, a ``TypedDict``, ``dict[str, Any]``…; none means any JSON).
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from polyport.core.context import Context, Principal
from polyport.core.contract import Service, WebhookDelivery, WebhookReceiver
from polyport.core.errors import ConfigError, ContractError, InvalidArgument
from polyport.core.inbox import InboxEntry
from polyport.webhooks.verify import Verifier

EDGE = "hooks"


class ReceiverHandler:
    """One declared receiver: its verifier, its body validator, its function."""

    def __init__(self, receiver: WebhookReceiver, service: Service, secret: str | None) -> None:
        self.name = receiver.name
        self.max_attempts = receiver.max_attempts
        self.description = receiver.description
        self.fn = receiver.fn
        self.service = service
        self.verifier = _configured(receiver, secret)
        where = f"webhook receiver {receiver.name}"
        try:
            hints = typing.get_type_hints(receiver.fn, include_extras=True)
        except Exception as exc:
            raise ContractError(f"{where}: cannot resolve type hints: {exc}") from exc
        self.body_param: str | None = None
        self.context_param: str | None = None
        self.delivery_param: str | None = None
        body_annotation: Any = Any
        for pname, parameter in inspect.signature(receiver.fn).parameters.items():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ContractError(f"{where}: *args and **kwargs are not allowed")
            annotation = hints.get(pname, Any)
            if annotation is Context:
                self.context_param = pname
            elif annotation is WebhookDelivery:
                self.delivery_param = pname
            elif self.body_param is None:
                self.body_param, body_annotation = pname, annotation
            else:
                raise ContractError(
                    f"{where}: parameter {pname!r} is neither the body (that is "
                    f"{self.body_param!r}), a Context nor a WebhookDelivery"
                )
        try:
            self.adapter: TypeAdapter[Any] = TypeAdapter(body_annotation)
        except Exception as exc:
            raise ContractError(f"{where}: the body type cannot be validated: {exc}") from exc
        self.body_annotation = body_annotation
        self.is_async = inspect.iscoroutinefunction(receiver.fn)

    def validate(self, body: bytes) -> Any:
        """The body as the handler will get it; InvalidArgument (400 / 422) if it is not."""
        try:
            return self.adapter.validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if any(e["type"] == "json_invalid" for e in errors):
                raise InvalidArgument("the body is not valid JSON", unparseable=True) from None
            details = [
                {
                    "field": ".".join(str(p) for p in e["loc"]) or "body",
                    "message": e["msg"],
                    "type": e["type"],
                }
                for e in errors[:50]
            ]
            raise InvalidArgument(
                f"the body does not match what receiver {self.name} accepts", details=details
            ) from None

    async def run(self, delivery: InboxEntry, *, deadline: float | None = None) -> None:
        """Call the handler once for ``delivery``; whatever it raises is a failed attempt.

        ``deadline`` (a ``time.monotonic()`` value) is what the handler's
        ``Context.remaining()`` counts down to: the worker's timeout.
        """
        kwargs: dict[str, Any] = {}
        if self.body_param is not None:
            kwargs[self.body_param] = self.adapter.validate_json(delivery.body)
        if self.context_param is not None:
            kwargs[self.context_param] = Context(
                Principal(f"webhook:{self.name}"),
                EDGE,
                request_id=delivery.id,
                deadline=deadline,
                service=self.service,
            )
        if self.delivery_param is not None:
            kwargs[self.delivery_param] = WebhookDelivery(
                id=delivery.id,
                receiver=delivery.receiver,
                event_type=delivery.event_type,
                timestamp=delivery.signed_at,
                received=delivery.received,
                attempt=delivery.attempts,
                headers=dict(delivery.headers),
            )
        if self.is_async:
            await self.fn(**kwargs)
        else:
            await asyncio.to_thread(self.fn, **kwargs)


def _configured(receiver: WebhookReceiver, secret: str | None) -> Verifier:
    """The receiver's verifier, its secret taken from the settings if it was declared without."""
    verifier: Verifier = receiver.verify
    if getattr(verifier, "secret", True) is None:
        if secret is None:
            raise ConfigError(
                f"webhook receiver {receiver.name} has no secret: give its verifier one, "
                f"or set hooks.secrets.{receiver.name} "
                f"(POLYPORT_HOOKS__SECRETS__{receiver.name.upper()})"
            )
        with_secret = getattr(verifier, "with_secret", None)
        if with_secret is None:
            raise ConfigError(f"webhook receiver {receiver.name}: its verifier takes no secret")
        try:
            verifier = with_secret(secret)
        except ValueError as exc:
            raise ConfigError(f"hooks.secrets.{receiver.name}: {exc}") from None
    return verifier
