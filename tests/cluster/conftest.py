"""The cluster tests' ``engine`` fixture: each test once per engine, in a namespace of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.cluster.engines import ENGINES, shared_engine


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """A shared engine URL with a namespace of this test's own (:mod:`tests.cluster.engines`)."""
    with shared_engine(request.param) as url:
        yield url
