"""The message broker contract over Redis's work queue (``--engine redis://…`` without a
broker of its own): each node a client of its own on the test's key prefix."""

from __future__ import annotations

import pytest
from tests.contract.broker_contract import BrokerContract, BrokerFactory
from tests.contract.test_workqueue_redis import URL, prefix

from polyport.backends.redis import RedisWorkQueue
from polyport.core.broker import Broker
from polyport.core.queuebroker import WorkQueueBroker

pytestmark = [pytest.mark.services, pytest.mark.timeout(90)]
__all__ = ["prefix"]  # the fixture: a key prefix of the test's own, deleted after it


class TestRedisWorkQueueBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, prefix: str) -> BrokerFactory:
        def make() -> Broker:
            queue = RedisWorkQueue(URL, prefix=f"{prefix}-broker")
            return WorkQueueBroker(queue, kind="redis", poll_interval=0.2)

        return make
