"""A segment-trie router: one dict lookup per path segment, no regular expressions.

``/v1/users/{id}`` matches ``/v1/users/42`` with ``{"id": "42"}``. A static
segment always wins over a parameter at the same depth, so ``/v1/events/stream``
and ``/v1/events/{id}`` can coexist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from polyport.http.request import Request, Response

Endpoint = Callable[["Request"], Awaitable["Response | None"]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    endpoint: Endpoint
    name: str = ""


class _Node:
    __slots__ = ("children", "handlers", "param", "param_name", "template")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name: str | None = None
        self.handlers: dict[str, Endpoint] = {}
        self.template = ""


class Match:
    """What a path matched: the handlers by verb, the path parameters, the template."""

    __slots__ = ("handlers", "params", "template")

    def __init__(self, handlers: dict[str, Endpoint], params: dict[str, str], template: str):
        self.handlers = handlers
        self.params = params
        self.template = template


class Router:
    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._root = _Node()
        self._static: dict[str, _Node] = {}  # whole-path cache for parameterless routes
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        if not route.path.startswith("/"):
            raise ValueError(f"route path must start with '/': {route.path}")
        node = self._root
        for segment in route.path.strip("/").split("/") if route.path != "/" else []:
            if segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1]
                if node.param is None:
                    node.param = _Node()
                    node.param_name = name
                elif node.param_name != name:
                    raise ValueError(f"conflicting parameter names at {route.path}")
                node = node.param
            else:
                node = node.children.setdefault(segment, _Node())
        method = route.method.upper()
        if method in node.handlers:
            raise ValueError(f"duplicate route {method} {route.path}")
        node.handlers[method] = route.endpoint
        node.template = route.path
        if "{" not in route.path:
            self._static[route.path.rstrip("/") or "/"] = node

    def paths(self) -> list[str]:
        """Every route template (for listings)."""
        out: list[str] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node.handlers:
                out.append(node.template)
            stack.extend(node.children.values())
            if node.param is not None:
                stack.append(node.param)
        return sorted(out)

    def match(self, path: str) -> Match | None:
        static = self._static.get(path)
        if static is not None:
            return Match(static.handlers, {}, static.template)
        params: dict[str, Any] = {}
        node = self._root
        for segment in path.strip("/").split("/"):
            child = node.children.get(segment)
            if child is None:
                if node.param is None or not segment:
                    return None
                params[node.param_name] = unquote(segment)  # type: ignore[index]
                child = node.param
            node = child
        if not node.handlers:
            return None
        return Match(node.handlers, params, node.template)
