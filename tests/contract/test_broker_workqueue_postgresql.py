"""The message broker contract over PostgreSQL's work queue (``--engine postgresql://…``
without a broker of its own): each node a pool of its own on the test's schema."""

from __future__ import annotations

import pytest
from tests.contract.broker_contract import BrokerContract, BrokerFactory
from tests.contract.postgres_schemas import URL, new_schema

from polyport.backends.postgresql import PostgresDatabase, PostgresWorkQueue
from polyport.core.broker import Broker
from polyport.core.queuebroker import WorkQueueBroker

pytestmark = [pytest.mark.services, pytest.mark.timeout(90)]


class TestPostgresWorkQueueBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, schemas: list[str]) -> BrokerFactory:
        schema = new_schema(schemas, "broker")

        def make() -> Broker:
            queue = PostgresWorkQueue(PostgresDatabase(URL, schema=schema, max_size=4))
            return WorkQueueBroker(queue, kind="postgresql", poll_interval=0.2)

        return make
