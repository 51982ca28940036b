"""The message broker contract on RabbitMQ (``queues.broker = amqp://…``): each node a
connection of its own, on queues under the test's own prefix (deleted after it)."""

from __future__ import annotations

import pytest
from tests.contract.broker_contract import BrokerContract, BrokerFactory
from tests.contract.rabbitmq_names import Names, rabbit

from polyport.backends.rabbitmq.broker import build
from polyport.core.broker import Broker

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]
__all__ = ["rabbit"]  # the fixture: a prefix of the test's own, its queues deleted after


class TestRabbitBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, rabbit: Names) -> BrokerFactory:
        for queue in ("q", "other"):
            rabbit.made(queue)

        def make() -> Broker:
            return build(
                "amqp://guest:guest@127.0.0.1:5672/",
                {"prefix": rabbit.prefix},
                owner="contract",
                poll_interval=0.2,
            )

        return make
