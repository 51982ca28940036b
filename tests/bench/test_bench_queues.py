"""``polyport bench queues``: a tiny run measures every phase and loses nothing; bad options
are one line. (Figures are for the lab, never asserted here.)"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from tests.conftest import require_service

from polyport.bench.queues import run_queues_bench
from polyport.core.errors import ConfigError


def test_a_small_run_of_the_embedded_queue(tmp_path: Path) -> None:
    record = run_queues_bench(
        console=Console(file=io.StringIO()),
        messages=300,
        in_flight=32,
        rate=200,
        duration=0.5,
        repeats=1,
        output=tmp_path,
    )
    [target] = record["targets"]
    assert target["target"] == "sqlite" and target["lost"] == 0
    assert target["enqueue_per_second"] > 0 and target["consume_per_second"] > 0
    assert target["runs"][0]["latency_samples"] == 100
    written = orjson.loads((tmp_path / "queues.json").read_bytes())
    assert written["goal"]["no message lost"]["met"] is True


@pytest.mark.parametrize(
    "options",
    [{"targets": ["kafka"]}, {"messages": 10}, {"rate": 0}, {"repeats": 0}],
)
def test_bad_options_are_one_line(options: dict[str, object], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        run_queues_bench(console=Console(file=io.StringIO()), output=tmp_path, **options)  # type: ignore[arg-type]


@pytest.mark.services
@pytest.mark.timeout(120)
def test_jetstream_is_paired_with_both_bare_baselines(tmp_path: Path) -> None:
    """The JetStream broker's rounds are paired with bare nats-py and with bare nats-py
    confirming its sends' ids and its acks; only the first ratio is judged by the goal."""
    require_service("NATS", 4222)
    record = run_queues_bench(
        console=Console(file=io.StringIO()),
        targets=["nats-jetstream"],
        messages=100,
        in_flight=32,
        rate=100,
        duration=0.5,
        repeats=1,
        output=tmp_path,
    )
    polyport, bare, confirmed = record["targets"]
    assert bare["target"] == "nats-jetstream (bare nats-py)"
    assert confirmed["target"] == "nats-jetstream (bare nats-py, msg ids + ack_sync)"
    assert all(t["lost"] == 0 and t["consume_per_second"] > 0 for t in (polyport, bare, confirmed))
    assert set(polyport["ratios"]) == set(polyport["ratios_confirmed"]) == {"enqueue", "consume"}
    [judged] = [line for line in record["goal"] if "bare client" in line]
    assert "confirmed" not in record["goal"][judged]["measured"]


@pytest.mark.services
@pytest.mark.timeout(120)
def test_rabbitmq_is_paired_with_bare_aio_pika(tmp_path: Path) -> None:
    """The RabbitMQ broker's rounds are paired with bare aio-pika doing the same phases;
    both lose nothing, and the ratio is judged by the goal."""
    require_service("RabbitMQ", 5672)
    record = run_queues_bench(
        console=Console(file=io.StringIO()),
        targets=["rabbitmq"],
        messages=100,
        in_flight=32,
        rate=100,
        duration=0.5,
        repeats=1,
        output=tmp_path,
    )
    polyport, bare = record["targets"]
    assert bare["target"] == "rabbitmq (bare aio-pika)"
    for target in (polyport, bare):
        assert target["lost"] == 0 and target["consume_per_second"] > 0
        assert target["runs"][0]["latency_samples"] == 50
    assert set(polyport["ratios"]) == {"enqueue", "consume"}
    [judged] = [line for line in record["goal"] if "bare client" in line]
    assert "rabbitmq enqueue" in record["goal"][judged]["measured"]


@pytest.mark.services
@pytest.mark.timeout(60)
async def test_a_rabbitmq_round_keeps_the_urls_options_and_removes_its_queues() -> None:
    """The broker of a round reads the URL's options (here classic queues) under a prefix
    of its own, and what it declared is gone afterwards."""
    import aio_pika
    import aiormq

    from polyport.bench.queues import QUEUE, broker_of
    from polyport.core.broker import QueueOptions

    require_service("RabbitMQ", 5672)
    url = "amqp://guest:guest@127.0.0.1:5672/?queue_type=classic&prefix=not-this-one"
    async with broker_of("rabbitmq", url) as broker:
        await broker.open()
        try:
            await broker.declare(QueueOptions(QUEUE, dedup_window=60))
        finally:
            await broker.close()
        prefix = broker.prefix  # type: ignore[attr-defined]
        assert prefix.startswith("ppbench-") and broker.classic  # type: ignore[attr-defined]
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        assert connection.transport is not None
        for name in (f"{prefix}.{QUEUE}", f"{prefix}.{QUEUE}.ids", f"{prefix}.{QUEUE}.dead"):
            channel = await connection.transport.connection.channel()
            with pytest.raises(aiormq.ChannelNotFoundEntity):
                await channel.queue_declare(name, passive=True)
    finally:
        await connection.close()


def test_the_bare_client_reads_the_queue_kind_and_drops_polyports_options() -> None:
    """aio-pika gets the URL without polyport's options; the queue kind comes from it."""
    from polyport.bench.queues import with_query
    from polyport.bench.queues_bare import amqp_address

    url = "amqp://u:p@h:5672/vh?prefix=x&queue_type=classic&heartbeat=30&partitions=4"
    assert amqp_address(url) == ("amqp://u:p@h:5672/vh?heartbeat=30", "classic")
    assert amqp_address("amqp://u:p@h/") == ("amqp://u:p@h/", None)
    assert with_query(url, prefix="y") == (
        "amqp://u:p@h:5672/vh?queue_type=classic&heartbeat=30&partitions=4&prefix=y"
    )
