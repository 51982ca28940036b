"""The cluster tests' fixtures: each test once per engine, in a namespace of its own.

``engine`` gives a test an engine URL of its own; ``cluster`` gives every test
of a module three nodes behind HAProxy on one engine (``balancer.py``), each
engine in turn: its tests write on channels of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.cluster.balancer import Cluster, behind_haproxy
from tests.cluster.engines import ENGINES, shared_engine


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """A shared engine URL with a namespace of this test's own (:mod:`tests.cluster.engines`)."""
    with shared_engine(request.param) as url:
        yield url


@pytest.fixture(scope="module", params=ENGINES)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three nodes on one engine behind HAProxy, for every test of the module and engine."""
    tmp = tmp_path_factory.mktemp(f"cluster-{request.param}")
    with shared_engine(request.param) as url, behind_haproxy(tmp, url) as started:
        yield started
