"""The guide's Multiply over gRPC: a product beyond int64 is OUT_OF_RANGE, never INTERNAL.

The ``.proto`` declares ``int64 value`` for the result; protobuf cannot write a
larger number, and before, the failed encoding was an internal error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from polyport.testing import serve_in_thread

pytestmark = pytest.mark.timeout(60)

INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def multiply(tmp_path_factory: pytest.TempPathFactory, usersvc: Any) -> Iterator[Any]:
    from polyport.demo.shop import shop

    database = str(tmp_path_factory.mktemp("ranges") / "shop.sqlite3")
    with serve_in_thread(shop, usersvc.settings(database=database)) as node:
        target = f"127.0.0.1:{usersvc.grpc_edge(node).port}"
        with grpc.insecure_channel(target) as channel:
            yield usersvc.Reflected(channel, "polyport.shop.v1.ShopService")


def test_an_overflowing_product_is_out_of_range(multiply: Any) -> None:
    """Multiply(2**63 - 1, 2**63 - 1): status OUT_OF_RANGE, ErrorInfo reason OUT_OF_RANGE."""
    with pytest.raises(grpc.RpcError) as failed:
        multiply("Multiply", {"a": INT64_MAX, "b": INT64_MAX}, timeout=10)
    assert failed.value.code() is grpc.StatusCode.OUT_OF_RANGE
    status = rpc_status.from_call(failed.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "OUT_OF_RANGE"


def test_products_up_to_the_bounds_are_answered(multiply: Any) -> None:
    """The int64 bounds themselves fit."""
    assert multiply("Multiply", {"a": INT64_MAX, "b": 1}, timeout=10).value == INT64_MAX
    assert multiply("Multiply", {"a": -(2**62), "b": 2}, timeout=10).value == -(2**63)
