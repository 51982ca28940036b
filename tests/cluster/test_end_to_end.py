"""One end-to-end suite, run on PostgreSQL, Redis and NATS: three nodes behind HAProxy act as one.

Every push pattern — SSE, WebSocket, GraphQL subscriptions, the gRPC event
stream, long polling and polling — gets what every node writes, in log
order, on every node, and resumes on every node from an id another node gave;
jobs submitted through the proxy run once; an inbound webhook delivered twice
through the proxy, to two nodes, is handled once. A node killed behind the
proxy is ``test_failover.py``.

One cluster per engine serves every test here (the ``cluster`` fixture); each
test writes on channels of its own. Clients go through HAProxy, which names
the node that answered each request (``X-Served-By``), except gRPC, which the
balancer does not carry: its clients dial each node directly.
"""

from __future__ import annotations

import time
import uuid
from functools import partial

import httpx
import pytest
from tests.cluster.balancer import LABELS, SERVED_BY, Cluster, client
from tests.cluster.clusternode import HOOK_SECRET
from tests.cluster.patterns import (
    PATTERNS,
    STREAMS,
    follow,
    in_thread,
    now,
    on_every_node,
    read_log,
)

from polyport.webhooks.signing import secret_key, signature_header

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


def emit(url: str, tag: str, n: int) -> list[str]:
    """Publish ``n`` ticks tagged ``tag`` through ``url``: their ids."""
    with client() as http:
        answer = http.post(f"{url}/v1/emit", json={"tag": tag, "n": n})
    assert answer.status_code == 200, answer.text
    ids: list[str] = answer.json()
    return ids


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_on_every_node_gets_every_nodes_writes_in_log_order(
    cluster: Cluster, pattern: str
) -> None:
    """Three subscribers, one on each node; the three nodes write at once, twice; every
    subscriber gets every event, in the log's order (offsets 1, 2, 3, … of the channel)."""
    tag = f"live-{pattern}"
    channel = f"ticks/{tag}"
    start = now(cluster, channel)
    subscribers = on_every_node(pattern, cluster, channel, start, 24)
    written: list[str] = []
    for _ in range(2):
        writers = [in_thread(partial(emit, url, tag, 4)) for url in cluster.nodes.values()]
        for writer in writers:
            written += writer.result(15)
    log = read_log(cluster, channel, start)
    assert [event["offset"] for event in log] == list(range(1, 25))
    ids = [event["id"] for event in log]
    assert sorted(ids) == sorted(written)
    got = [subscriber.result(30) for subscriber in subscribers]
    for followed in got:
        assert (followed.ids, followed.lost) == (ids, 0)
    if pattern in STREAMS:
        assert sorted(followed.served[0] for followed in got) == LABELS


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_resumes_on_every_node_from_an_id_another_node_gave(
    cluster: Cluster, pattern: str
) -> None:
    """Each node writes two events; the first id, from node a's answer, resumes on every
    node with exactly the five that followed."""
    tag = f"resume-{pattern}"
    channel = f"ticks/{tag}"
    written = [i for url in cluster.nodes.values() for i in emit(url, tag, 2)]
    resumed = [
        follow(pattern, cluster, channel, written[0], len(written) - 1, node=node)
        for node in LABELS
    ]
    for followed in resumed:
        assert (followed.ids, followed.lost) == (written[1:], 0)
    # Through the proxy, three connections (or first polls) in a row: one on each node.
    assert sorted(followed.served[0] for followed in resumed) == LABELS


def served(answer: httpx.Response) -> str:
    """The node that answered through the proxy."""
    node: str = answer.headers[SERVED_BY]
    return node


def test_jobs_submitted_through_the_proxy_run_once_and_answer_from_another_node(
    cluster: Cluster,
) -> None:
    """Nine jobs submitted through the proxy (three to each node), each waited for through
    the proxy on another node than took it: complete, at the first attempt, run once (its
    run recorded as an event on ``runs/{token}``)."""
    tokens = [uuid.uuid4().hex[:12] for _ in range(9)]
    with client(30) as http:
        submitted = []
        for token in tokens:
            answer = http.post(f"{cluster.url}/v1/jobs/run_once", json={"token": token})
            assert answer.status_code == 202, answer.text
            submitted.append((answer.headers["location"], served(answer)))
        assert sorted(node for _, node in submitted) == sorted(LABELS * 3)
        # One request more, so that round robin asks each job of the node after its own.
        http.get(f"{cluster.url}/healthz")
        for location, taken_by in submitted:
            answer = http.get(f"{cluster.url}{location}", params={"wait": 20})
            assert answer.status_code == 200, answer.text
            assert served(answer) != taken_by
            job = answer.json()
            assert (job["status"], job["attempts"]) == ("complete", 1), job
            assert job["result"] in LABELS
    for token in tokens:
        assert len(read_log(cluster, f"runs/{token}", "earliest")) == 1, token


def test_an_inbound_webhook_posted_twice_through_the_proxy_is_handled_once(
    cluster: Cluster,
) -> None:
    """Six deliveries, each POSTed twice in a row through the proxy (a sender's retry), so
    on two nodes: both answered 200, each delivery handled once (``hooked/{id}``)."""
    key = secret_key(HOOK_SECRET)
    ids = [f"msg_{uuid.uuid4().hex[:16]}" for _ in range(6)]
    body = b'{"type": "thing.happened", "data": {}}'
    with client() as http:
        for delivery_id in ids:
            at = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": delivery_id,
                "webhook-timestamp": str(at),
                "webhook-signature": signature_header([key], delivery_id, at, body),
            }
            answers = [
                http.post(f"{cluster.url}/hooks/inbound", content=body, headers=headers)
                for _ in range(2)
            ]
            assert [answer.status_code for answer in answers] == [200, 200]
            assert served(answers[0]) != served(answers[1])
    deadline = time.monotonic() + 20
    while not all(read_log(cluster, f"hooked/{i}", "earliest") for i in ids):
        assert time.monotonic() < deadline, "not every delivery was handled within 20 s"
        time.sleep(0.1)
    time.sleep(1)  # a second handling, if there were one, would show by now
    for delivery_id in ids:
        assert len(read_log(cluster, f"hooked/{delivery_id}", "earliest")) == 1, delivery_id
