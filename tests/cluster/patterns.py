"""Every push pattern as a client that follows one channel of a cluster, and resumes when cut off.

A *session* is one connection of one pattern (one SSE stream, one WebSocket,
one ``graphql-transport-ws`` operation, one gRPC ``Events/Subscribe`` call, or
a run of polls), opened from a cursor: it calls ``live`` with the node that
serves it once it is live (for polls, with each node that answers), yields
each event id as it comes, and raises :class:`Lost` when the connection goes
away — a node killed, the proxy answering 502/503 while it has no node to
offer. :func:`follow` runs sessions until it has the ids it wants, opening the
next from the last id it got: what every client of docs/scale-out.md does.

A session that waits too long for an event fails the test instead (a read
timeout is not a lost connection): a reconnect would resume from history and
hide a live delivery that never came. Clients are real and not polyport's:
httpx, websockets, gql (``graphql-transport-ws``), grpcio with reflection.
Every proxied one connects to HAProxy from :data:`~tests.cluster.balancer.CLIENT`;
gRPC dials a node directly (the balancer carries HTTP and WebSocket only).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import grpc
import httpx
import orjson
from google.protobuf import descriptor_pool, message_factory
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportClosed, TransportConnectionFailed
from gql.transport.websockets import WebsocketsTransport
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tests.cluster.balancer import CLIENT, LABELS, SERVED_BY, Cluster, client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

#: How long a session waits for its next event, or to connect, before the test fails.
READ = 10.0
#: The deadline of a gRPC stream: it bounds the whole call.
GRPC_DEADLINE = 40.0
#: How long a long poll is held.
WAIT = 5
#: The answers of a proxy with no node to reach (or one that went away mid-request).
PROXY_FAILED = frozenset({502, 503, 504})

T = TypeVar("T")


class Lost(Exception):
    """The connection went away, or the proxy had no node for it: reconnect and resume."""


class Session(Protocol):
    """One connection of one pattern to ``channel``, from ``after``; see the module."""

    def __call__(
        self, cluster: Cluster, channel: str, after: str, node: str, live: Callable[[str], None]
    ) -> Iterator[str]: ...


def _answered(answer: httpx.Response) -> None:
    if answer.status_code in PROXY_FAILED:
        raise Lost(f"the proxy answered {answer.status_code}")
    assert answer.status_code == 200, answer.text


def sse(
    cluster: Cluster, channel: str, after: str, node: str, live: Callable[[str], None]
) -> Iterator[str]:
    """An SSE stream through the proxy, resumed with ``Last-Event-ID``."""
    headers = {"last-event-id": after}
    url = f"{cluster.url}/v1/events/stream"
    try:
        with (
            client(READ) as http,
            http.stream("GET", url, params={"channel": channel}, headers=headers) as answer,
        ):
            if answer.status_code != 200:
                answer.read()
            _answered(answer)
            live(answer.headers[SERVED_BY])
            fields: dict[str, str] = {}
            for line in answer.iter_lines():
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if fields.get("event") == "recovery-failed":
                    raise AssertionError(f"recovery failed on {channel}: {fields}")
                if "id" in fields:
                    yield fields["id"]
                fields = {}
    except httpx.TimeoutException as exc:
        raise AssertionError(f"no SSE event within {READ} s") from exc
    except httpx.TransportError as exc:
        raise Lost(repr(exc)) from exc
    raise Lost("the stream ended")


def _frame(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(ws.recv(timeout=READ))
    return frame


def websocket(
    cluster: Cluster, channel: str, after: str, node: str, live: Callable[[str], None]
) -> Iterator[str]:
    """A WebSocket session (``/ws``) through the proxy, resumed with ``subscribe`` ``after``."""
    url = cluster.url.replace("http://", "ws://") + "/ws"
    try:
        with connect(url, proxy=None, source_address=(CLIENT, 0), open_timeout=READ) as ws:
            assert _frame(ws)["type"] == "welcome"
            ws.send(
                orjson.dumps({"id": 1, "type": "subscribe", "channels": [channel], "after": after})
            )
            answer = _frame(ws)
            assert (answer["type"], answer["recovered"]) == ("subscribed", True), answer
            live(ws.response.headers[SERVED_BY])
            while True:
                frame = _frame(ws)
                assert frame["type"] == "event", frame
                yield frame["event"]["id"]
    except TimeoutError as exc:  # before OSError: it is one
        raise AssertionError(f"no WebSocket frame within {READ} s") from exc
    except InvalidStatus as exc:
        if exc.response.status_code in PROXY_FAILED:
            raise Lost(repr(exc)) from exc
        raise
    except (ConnectionClosed, OSError) as exc:
        raise Lost(repr(exc)) from exc


#: The subscription field of the ticks' event type, as docs/graphql.md derives it.
TICKS = """
subscription Ticks($channel: String, $after: String) {
  ticksCreated(channel: $channel, after: $after) { id channel offset }
}
"""


def graphql(
    cluster: Cluster, channel: str, after: str, node: str, live: Callable[[str], None]
) -> Iterator[str]:
    """A GraphQL subscription over ``graphql-transport-ws`` (gql) through the proxy."""
    loop = asyncio.new_event_loop()
    # The thread's loop: gql's transport takes it (with none it would make one and leak it).
    asyncio.set_event_loop(loop)
    transport = WebsocketsTransport(
        url=cluster.url.replace("http://", "ws://") + "/graphql",
        connect_timeout=READ,
        ack_timeout=READ,
        close_timeout=1,
        connect_args={"local_addr": (CLIENT, 0)},
        # gql finds the server's choice under "Sec-WebSocket-Protocol" only, and HAProxy
        # lowercases header names: offered both, gql would speak Apollo's old protocol.
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    gql_client = Client(transport=transport)
    results: Any = None

    def run(step: Any) -> Any:
        return loop.run_until_complete(asyncio.wait_for(step, READ))

    try:
        session = run(gql_client.connect_async())
        live(transport.response_headers[SERVED_BY])
        request = GraphQLRequest(TICKS, variable_values={"channel": channel, "after": after})
        results = session.subscribe(request)
        while True:
            yield run(anext(results))["ticksCreated"]["id"]
    except TimeoutError as exc:  # before OSError: it is one
        raise AssertionError(f"no GraphQL result within {READ} s") from exc
    except (TransportClosed, TransportConnectionFailed, ConnectionClosed, OSError) as exc:
        raise Lost(repr(exc)) from exc
    except InvalidStatus as exc:
        if exc.response.status_code in PROXY_FAILED:
            raise Lost(repr(exc)) from exc
        raise
    finally:
        with contextlib.suppress(Exception):
            if results is not None:
                loop.run_until_complete(results.aclose())
        with contextlib.suppress(Exception):
            loop.run_until_complete(gql_client.close_async())
        asyncio.set_event_loop(None)
        loop.close()


EVENTS = "polyport.events.v1.Events"


def grpc_events(
    cluster: Cluster, channel: str, after: str, node: str, live: Callable[[str], None]
) -> Iterator[str]:
    """The gRPC event stream of node ``node``, dialled directly, described by its reflection."""
    # A subchannel of its own: grpcio would otherwise share one between channels to one address.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(cluster.grpc[node], options=options) as channel_to_node:
        stream: Any = None
        try:
            pool = descriptor_pool.DescriptorPool(
                ProtoReflectionDescriptorDatabase(channel_to_node)
            )
            method = pool.FindServiceByName(EVENTS).methods_by_name["Subscribe"]
            request = message_factory.GetMessageClass(method.input_type)
            batch = message_factory.GetMessageClass(method.output_type)
            subscribe = channel_to_node.unary_stream(
                f"/{EVENTS}/Subscribe",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=batch.FromString,
            )
            stream = subscribe(request(channels=[channel], after=after), timeout=GRPC_DEADLINE)
            assert not next(stream).events  # the first batch: live from here
            live(node)
            for answer in stream:
                for event in answer.events:
                    yield event.id
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise Lost(repr(exc)) from exc
            raise
        except KeyError as exc:  # the reflection client's answer to a node it cannot reach
            raise Lost(repr(exc)) from exc
        finally:
            if stream is not None:
                stream.cancel()
    raise Lost("the stream ended")


def _polls(
    cluster: Cluster, channel: str, after: str, live: Callable[[str], None], wait: int | None
) -> Iterator[str]:
    cursor = after
    # The first poll answers at once, so the follower is live; long polls are held after it.
    params: dict[str, Any] = {"channel": channel}
    with client(READ + (wait or 0)) as http:
        while True:
            try:
                answer = http.get(f"{cluster.url}/v1/events", params={**params, "after": cursor})
            except httpx.TimeoutException as exc:
                raise AssertionError(f"no answer to a poll within {READ} s") from exc
            except httpx.TransportError as exc:
                raise Lost(repr(exc)) from exc
            _answered(answer)
            live(answer.headers[SERVED_BY])
            page = answer.json()
            for event in page["events"]:
                yield event["id"]
            cursor = page["next"]
            if wait is not None:
                params["wait"] = wait
            elif not page["events"]:
                time.sleep(0.05)


def long_polling(
    cluster: Cluster, channel: str, after: str, node: str, live: Callable[[str], None]
) -> Iterator[str]:
    """Long polls through the proxy (``wait``), each from the last one's ``next``."""
    return _polls(cluster, channel, after, live, WAIT)


def polling(
    cluster: Cluster, channel: str, after: str, node: str, live: Callable[[str], None]
) -> Iterator[str]:
    """Polls through the proxy every 50 ms while there is nothing new."""
    return _polls(cluster, channel, after, live, None)


#: Every push pattern, by name.
PATTERNS: dict[str, Session] = {
    "sse": sse,
    "websocket": websocket,
    "graphql": graphql,
    "grpc": grpc_events,
    "long-polling": long_polling,
    "polling": polling,
}
#: The patterns whose session is one connection, so it has one node.
STREAMS = frozenset({"sse", "websocket", "graphql", "grpc"})


@dataclass
class Followed:
    """What a follower got: the ids, each connection's node (each poll's), the connections lost."""

    ids: list[str] = field(default_factory=list)
    served: list[str] = field(default_factory=list)
    lost: int = 0


def follow(
    pattern: str,
    cluster: Cluster,
    channel: str,
    after: str,
    count: int,
    *,
    node: str = "a",
    live: threading.Event | None = None,
    seconds: float = 30,
) -> Followed:
    """The first ``count`` event ids of ``channel`` after ``after``, over ``pattern``.

    When a connection is lost, the next resumes from the last id received
    (gRPC dials the next node); past ``seconds`` of that, the test fails.
    ``live`` is set when the first connection is live.
    """
    session = PATTERNS[pattern]
    followed = Followed()
    deadline = time.monotonic() + seconds
    cursor = after

    def on_live(served: str) -> None:
        followed.served.append(served)
        if live is not None:
            live.set()

    while len(followed.ids) < count:
        events = session(cluster, channel, cursor, node, on_live)
        try:
            with contextlib.closing(events):
                for event_id in events:
                    followed.ids.append(event_id)
                    cursor = event_id
                    if len(followed.ids) == count:
                        break
        except Lost as exc:
            followed.lost += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern}: no connection for {seconds} s") from exc
            node = LABELS[(LABELS.index(node) + 1) % len(LABELS)]
            time.sleep(0.1)
    return followed


def on_every_node(
    pattern: str, cluster: Cluster, channel: str, after: str, count: int, seconds: float = 30
) -> list[Future[Followed]]:
    """Three followers (:func:`follow`) over ``pattern``, one per node, each live on return.

    Proxied ones connect at once, so the proxy gives each a node of its own;
    gRPC's dial one node each.
    """
    lives = {node: threading.Event() for node in LABELS}
    run = partial(follow, pattern, cluster, channel, after, count, seconds=seconds)
    started = [in_thread(partial(run, node=node, live=live)) for node, live in lives.items()]
    for live, follower in zip(lives.values(), started, strict=True):
        if not live.wait(READ):
            follower.result(0)  # its error, if it failed
            raise AssertionError(f"{pattern}: no subscription live within {READ} s")
    return started


def in_thread(work: Callable[[], T]) -> Future[T]:
    """``work()`` in a daemon thread: its result or exception, when it ends."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def read_log(cluster: Cluster, channel: str, after: str) -> list[dict[str, Any]]:
    """Every event of ``channel`` after ``after``, polled through the proxy: the truth."""
    found: list[dict[str, Any]] = []
    with client() as http:
        while True:
            params = {"channel": channel, "after": after, "limit": 1000}
            answer = http.get(f"{cluster.url}/v1/events", params=params)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            if not page["events"]:
                return found
            found += page["events"]
            after = page["next"]


def now(cluster: Cluster, channel: str) -> str:
    """The cursor of the end of the log, as a poll through the proxy answers it."""
    with client() as http:
        answer = http.get(f"{cluster.url}/v1/events", params={"channel": channel, "after": "now"})
    assert answer.status_code == 200, answer.text
    cursor: str = answer.json()["next"]
    return cursor
