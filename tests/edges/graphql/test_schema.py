"""The schema written from the type graph: names, nullability, scalars, descriptions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from graphql import GraphQLSchema, print_type
from pydantic import BaseModel, Field

from polyport import Service, Settings
from polyport.edges.graphql.binding import GraphQLEdge
from polyport.node import Node


class Point(BaseModel):
    """A point on the grid."""

    x_pos: Annotated[int, Field(ge=0, le=1000, description="From the left.")]
    y_pos: int
    label: str | None = None
    shape: Literal["dot", "cross"] = "dot"
    blob: bytes = b""
    extra: dict[str, Any] = {}
    either: int | str = 0


class PageInfo(BaseModel):
    """Named like the connections' PageInfo."""

    total: int


def schema_of(service: Service) -> GraphQLSchema:
    node = Node(service, Settings(dev=True, database=":memory:"), edges=["graphql"])
    (edge,) = node.edges
    assert isinstance(edge, GraphQLEdge)
    return edge.schema


def test_models_fields_and_scalars() -> None:
    """camelCase fields; Int only within 32-bit bounds; Optional is nullable; unions are JSON."""
    svc = Service("grid")

    @svc.method(public=True)
    async def move(point: Point, by: Annotated[int, Field(ge=-5, le=5)] = 1) -> Point:
        """Move a point.

        Args:
            point: Where it is.
            by: How far.
        """
        return point

    schema = schema_of(svc)
    point = print_type(schema.get_type("Point"))  # type: ignore[arg-type]
    assert '"""A point on the grid."""' in point
    assert '"""From the left."""\n  xPos: Int!' in point
    assert "yPos: Long!" in point
    assert "label: String\n" in point
    assert "shape: DotCross!" in point
    assert "blob: Bytes!" in point and "extra: JSON!" in point and "either: JSON!" in point
    mutation = print_type(schema.mutation_type)  # type: ignore[arg-type]
    assert '"""Where it is."""\n    point: PointInput!' in mutation
    assert '"""How far."""\n    by: Int = 1' in mutation
    assert "): Point" in mutation
    assert "DotCross" in print_type(schema.get_type("DotCross"))  # type: ignore[arg-type]


def test_names_that_collide_are_made_unique() -> None:
    """A model named like a root or a generated type gets a number; methods keep theirs."""
    svc = Service("clash")

    @svc.method(public=True)
    async def page_info() -> PageInfo:
        return PageInfo(total=1)

    schema = schema_of(svc)
    assert schema.get_type("PageInfo2") is not None
    assert "pageInfo" in schema.mutation_type.fields  # type: ignore[union-attr]
    assert schema.subscription_type is None
    assert list(schema.query_type.fields) == ["_service"]  # type: ignore[union-attr]
