"""The message broker contract over NATS's work queue (``--engine nats://…`` without a
broker of its own): each node a connection of its own to the test's bucket."""

from __future__ import annotations

import pytest
from tests.contract.broker_contract import BrokerContract, BrokerFactory
from tests.contract.test_workqueue_nats import URL, prefix

from polyport.backends.nats import NatsWorkQueue
from polyport.core.broker import Broker
from polyport.core.queuebroker import WorkQueueBroker

pytestmark = [pytest.mark.services, pytest.mark.timeout(90)]
__all__ = ["prefix"]  # the fixture: bucket names of the test's own, deleted after it


class TestNatsWorkQueueBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, prefix: str) -> BrokerFactory:
        def make() -> Broker:
            return WorkQueueBroker(
                NatsWorkQueue(URL, name=f"{prefix}-broker"), kind="nats", poll_interval=0.2
            )

        return make
