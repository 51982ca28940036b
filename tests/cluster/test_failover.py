"""A node killed behind HAProxy, on PostgreSQL, Redis and NATS: its clients resume on the others.

Three followers of every push pattern, one on each node, follow one channel
while writes go through the proxy; node b is killed (SIGKILL) between two
writes. Its followers' connections end; each reconnects through the proxy
(gRPC: dials the next node) and resumes from the last id it got. Writes go on
through the proxy, none refused: HAProxy sends what it would have sent to the
dead node to another at once (``option redispatch``, docs/scale-out.md). At
the end every follower has exactly the log: every acknowledged write, in
order, none twice, no gap. The other nodes' followers are not disturbed.

Each engine gets a cluster of its own (``balancer.py``): this one loses a node.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cluster.balancer import LABELS, SERVED_BY, Cluster, behind_haproxy, client
from tests.cluster.patterns import PATTERNS, STREAMS, now, on_every_node, read_log

pytestmark = [pytest.mark.services, pytest.mark.timeout(90)]
VICTIM = "b"
BEFORE, AFTER = 10, 20  # writes before the kill, and after


def write(cluster: Cluster, tag: str) -> tuple[str, str]:
    """One tick tagged ``tag``, written through the proxy: the node that took it, and its id."""
    with client() as http:
        answer = http.post(f"{cluster.url}/v1/emit_at", json={"tag": tag, "n": 1})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["node"] == answer.headers[SERVED_BY]
    return body["node"], body["ids"][0]


def test_a_killed_nodes_clients_resume_on_the_others_and_writes_go_on(
    engine: str, tmp_path: Path
) -> None:
    """Every pattern's followers end with exactly the log after node b is SIGKILLed mid-run;
    b's reconnected elsewhere through the proxy, the others never reconnected."""
    with behind_haproxy(tmp_path, engine) as cluster:
        channel = "ticks/failover"
        start = now(cluster, channel)
        total = BEFORE + AFTER
        followers = {
            pattern: on_every_node(pattern, cluster, channel, start, total, seconds=40)
            for pattern in PATTERNS
        }
        written = [write(cluster, "failover") for _ in range(BEFORE)]
        cluster.kill(VICTIM)
        after_kill = [write(cluster, "failover") for _ in range(AFTER)]
        assert {node for node, _ in written} == set(LABELS)
        assert {node for node, _ in after_kill} == set(LABELS) - {VICTIM}
        log = read_log(cluster, channel, start)
        ids = [event["id"] for event in log]
        assert ids == [event_id for _, event_id in written + after_kill]
        assert [event["offset"] for event in log] == list(range(1, total + 1))
        for pattern, started in followers.items():
            got = [follower.result(45) for follower in started]
            if pattern in STREAMS:
                assert sorted(followed.served[0] for followed in got) == LABELS, pattern
            for followed in got:
                assert followed.ids == ids, pattern
                if pattern not in STREAMS:
                    continue
                first, *then = followed.served
                if first == VICTIM:
                    assert followed.lost >= 1 and then, (pattern, followed)
                    assert VICTIM not in then, (pattern, followed)
                else:
                    assert (followed.lost, then) == (0, []), (pattern, followed)
