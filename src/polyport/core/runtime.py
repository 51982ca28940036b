"""What a running node hands to its edges: the contract and the core services.

Edges receive a :class:`Runtime` and nothing else from the node; the node (in
:mod:`polyport.node`) builds it from settings and chooses the backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from polyport.core.config import CoreSettings
from polyport.core.contract import EventMessage
from polyport.core.dispatch import Dispatcher
from polyport.core.hub import EventHub
from polyport.core.inbox import ReceiverInbox
from polyport.core.jobs import JobRunner
from polyport.core.metrics import Metrics
from polyport.core.queuerunner import QueueRunner
from polyport.core.records import RecordStore
from polyport.core.spec import ServiceSpec
from polyport.core.webhookstore import WebhookStore


class EventCodec:
    """Encodes typed events to JSON once at publish time, with one adapter per type."""

    def __init__(self, spec: ServiceSpec) -> None:
        self._adapters: dict[str, TypeAdapter[Any]] = {
            name: TypeAdapter(event.annotation) for name, event in spec.events.items()
        }
        # The pydantic-core validator and serializer themselves: one call each.
        self._encoders = {
            name: _encoder(
                adapter.validator.validate_python,
                adapter.serializer.to_json,
                _as_is(spec.events[name].annotation),
            )
            for name, adapter in self._adapters.items()
        }

    def adapter(self, event_type: str) -> TypeAdapter[Any]:
        return self._adapters[event_type]

    def encode(self, message: EventMessage) -> bytes:
        return self._encoders[message.type.name](message.data)

    def encoder(self, event_type: str) -> Callable[[Any], bytes]:
        """``data`` → its JSON for one event type: what :meth:`encode` does to a message's data."""
        return self._encoders[event_type]


def _as_is(annotation: Any) -> type[BaseModel] | None:
    """The model whose own instances validate as themselves, unchanged; else None."""
    if (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and annotation.model_config.get("revalidate_instances", "never") == "never"
    ):
        return annotation
    return None


def _encoder(
    validate: Callable[[Any], Any], to_json: Callable[..., bytes], model: type[BaseModel] | None
) -> Callable[[Any], bytes]:
    if model is None:

        def encode(data: Any) -> bytes:
            return to_json(validate(data), by_alias=True)

        return encode

    def encode_model(data: Any) -> bytes:
        # An instance of the model itself (not of a subclass) is valid as it is.
        if type(data) is model:
            return to_json(data, by_alias=True)
        return to_json(validate(data), by_alias=True)

    return encode_model


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one method, event or document is served by one pattern."""

    pattern: str  # "REST", "polling", "long polling", "jobs", ...
    target: str  # method, event type or document name
    kind: Literal["method", "event", "document"]
    address: str  # "GET /v1/users/{id}"


@dataclass(slots=True)
class Runtime:
    """The contract and the core services, each behind its port, as the node chose them."""

    spec: ServiceSpec
    #: The node's settings; an edge reads its own section with ``settings.section(…)``.
    settings: CoreSettings
    dispatcher: Dispatcher
    hub: EventHub
    jobs: JobRunner
    metrics: Metrics
    codec: EventCodec
    #: Webhook endpoints, outbox, leases and delivery log (the webhooks edge opens it).
    webhook_store: WebhookStore
    #: The receivers' inbox (the hooks edge opens it, when the service has receivers).
    receiver_inbox: ReceiverInbox
    #: The service's message queues on the node's broker (started with the core).
    queues: QueueRunner
    #: Small keyed records beside the work queue (the SQLite file's, or the shared
    #: engine's): an edge that keeps state there (MQTT sessions) opens and closes it.
    records: RecordStore | None = None
