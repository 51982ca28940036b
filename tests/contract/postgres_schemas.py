"""Schemas of a test's own on the PostgreSQL the engine tests share.

The ``schemas`` fixture (``conftest.py``) collects the names :func:`new_schema`
makes up; every one that was created is dropped after the test. Names are
random, so nothing dropped was made by anyone else.
"""

from __future__ import annotations

import os
import secrets

URL = os.environ.get("POLYPORT_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")


def new_schema(schemas: list[str], name: str) -> str:
    schema = f"polyport_test_{secrets.token_hex(5)}_{name}"
    schemas.append(schema)
    return schema


async def drop_schemas(schemas: list[str]) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
