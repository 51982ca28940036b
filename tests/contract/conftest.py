"""Fixtures the engines' contract tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.conftest import require_service
from tests.contract.postgres_schemas import drop_schemas


@pytest.fixture
async def schemas() -> AsyncIterator[list[str]]:
    """Schema names to use, made up by ``new_schema``; each created one is dropped after."""
    require_service("PostgreSQL", 5432)
    made: list[str] = []
    yield made
    await drop_schemas(made)
