"""The dependency rules of DESIGN.md, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import polyport

ROOT = Path(polyport.__file__).parent

# Libraries that speak a protocol (or serve one): never imported by the core.
PROTOCOL_LIBRARIES = {
    "uvicorn",
    "starlette",
    "fastapi",
    "httpx",
    "httptools",
    "websockets",
    "grpc",
    "graphql",
    "strawberry",
    "zeep",
    "spyne",
    "lxml",
    "aiortc",
    "paho",
    "amqtt",
    "gmqtt",
    "aio_pika",
    "pika",
    "redis",
    "nats",
    "asyncpg",
    "psycopg",
    "aiohttp",
    "xmlrpc",
    "http",
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def package_of(path: Path) -> str:
    """The package a module of polyport is in (``polyport.edges.ws`` for its binding.py)."""
    return ".".join(("polyport", *path.relative_to(ROOT).parent.parts))


def modules_imported(path: Path, package: str) -> set[str]:
    """Every module ``path`` (in ``package``) may import, however it is spelled.

    Unlike :func:`imports_of`, relative imports are resolved, ``from polyport
    import server`` counts as ``polyport.server``, and so does a literal name
    given to ``importlib.import_module`` or ``__import__``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0]
                module = f"{base}.{module}" if module else base
            names.add(module)
            # The imported names may be modules themselves.
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                names.add(first.value)
    return names


def importers(folder: str, forbidden: str) -> list[str]:
    """Each import of ``forbidden`` (or a module inside it) by a module under ``folder``."""
    found = []
    for module in modules_under(ROOT / folder):
        names = modules_imported(module, package_of(module))
        for name in sorted(names):
            # "from a.b import C" gives a.b and a.b.C: name the module once.
            if name.startswith(forbidden + ".") and name.rsplit(".", 1)[0] in names:
                continue
            if name == forbidden or name.startswith(forbidden + "."):
                found.append(f"{module.relative_to(ROOT)} imports {name}")
    return found


#: What every edge may import from outside its own package under polyport.edges:
#: the declaration of the edge kinds, which imports no edge itself.
SHARED_BY_EDGES = {"polyport.edges.kinds"}


def test_edges_do_not_import_other_edges() -> None:
    """An edge imports the core (and the shared HTTP layer, the edge kinds), never another edge."""
    edges = [p for p in (ROOT / "edges").iterdir() if p.is_dir() and not p.name.startswith("_")]
    assert {e.name for e in edges} >= {"rest", "poll"}
    for edge in edges:
        for module in modules_under(edge):
            for name in imports_of(module):
                if name.startswith("polyport.edges.") and name not in SHARED_BY_EDGES:
                    assert name.split(".")[2] == edge.name, f"{module} imports {name}"


def test_what_edges_share_imports_no_edge() -> None:
    """The modules every edge may import (the kinds) import no edge, however spelled."""
    for shared in SHARED_BY_EDGES:
        path = ROOT.joinpath(*shared.split(".")[1:]).with_suffix(".py")
        imported = modules_imported(path, package_of(path))
        assert not [
            name for name in imported if name.startswith("polyport.edges.") and name != shared
        ], f"{shared} imports an edge"


def test_the_core_imports_no_edge_and_no_protocol_library() -> None:
    """polyport.core knows nothing of edges, the HTTP layer, nodes or wire libraries."""
    for module in modules_under(ROOT / "core"):
        for name in imports_of(module):
            top = name.split(".")[0]
            assert not name.startswith(
                (
                    "polyport.edges",
                    "polyport.http",
                    "polyport.node",
                    "polyport.backends",
                    "polyport.web",
                    "polyport.cli",
                    # The settings name every edge's section: the core reads CoreSettings.
                    "polyport.settings",
                )
            ), f"{module.relative_to(ROOT)} imports {name}"
            assert top not in PROTOCOL_LIBRARIES, f"{module.relative_to(ROOT)} imports {name}"


def test_backends_implement_core_protocols_only() -> None:
    """Backends import the core, never an edge or the HTTP layer."""
    for module in modules_under(ROOT / "backends"):
        for name in imports_of(module):
            assert not name.startswith(("polyport.edges", "polyport.http", "polyport.node")), (
                f"{module.relative_to(ROOT)} imports {name}"
            )


def test_edges_do_not_import_the_server() -> None:
    """Edges reach a WebSocket through polyport.http.websocket, so any server can carry them.

    polyport's own server (polyport.server) is one implementation; an ASGI
    adapter is another. An edge importing the server would tie it to one.
    """
    assert (ROOT / "http" / "websocket.py").is_file()
    assert importers("edges", "polyport.server") == []


def test_backends_import_no_edge_and_not_the_server() -> None:
    """A backend implements core ports: no edge, no server, however the import is spelled."""
    assert importers("backends", "polyport.edges") == []
    assert importers("backends", "polyport.server") == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import scan itself works: a planted cross-edge import is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from polyport.edges.rest import RestEdge\nimport uvicorn\n")
    assert imports_of(bad) == {"polyport.edges.rest", "uvicorn"}


def test_the_checker_sees_the_server_however_it_is_imported(tmp_path: Path) -> None:
    """Relative imports, ``from polyport import server`` and import_module() are all found."""
    spellings = [
        "from ...server.websocket import WebSocket",
        "from ... import server",
        "from polyport import server",
        "import polyport.server",
        "import importlib\nimportlib.import_module('polyport.server.websocket')",
        "__import__('polyport.server')",
    ]
    for spelling in spellings:
        bad = tmp_path / "bad.py"
        bad.write_text(spelling + "\n")
        found = modules_imported(bad, "polyport.edges.ws")
        assert {"polyport.server", "polyport.server.websocket"} & found, spelling
    fine = tmp_path / "fine.py"
    fine.write_text("from ..graphql import x\nfrom polyport.http.websocket import WebSocket\n")
    assert not any(
        name.startswith("polyport.server") for name in modules_imported(fine, "polyport.edges.ws")
    )


def backend_imports(folder: str) -> list[str]:
    """Each import of ``polyport.backends`` (or a module in it) by a module under ``folder``."""
    return [
        f"{module.relative_to(ROOT)} imports {name}"
        for module in modules_under(ROOT / folder)
        for name in sorted(imports_of(module))
        if name == "polyport.backends" or name.startswith("polyport.backends.")
    ]


def test_edges_import_no_backend() -> None:
    """Edges talk to the core's ports (the Runtime's stores, the hub's log), never a backend.

    The node chooses each backend and hands it over: an edge that named one
    would work on that backend only (the webhooks edge once built its SQLite
    store itself).
    """
    assert (ROOT / "core" / "webhookstore.py").is_file()
    assert backend_imports("edges") == []


def test_the_core_imports_no_backend() -> None:
    """The core declares the ports; which backend implements one is the node's choice."""
    assert (ROOT / "core" / "inbox.py").is_file()
    assert backend_imports("core") == []


def test_every_edge_declares_its_kinds() -> None:
    """Each edge of the node's registry names as bases exactly the kinds whose members it has.

    The node composes edges with isinstance on the kinds; an edge that had
    ``websocket_routes`` without declaring WebSocketEdge would be taken for
    one only by accident of its attribute names.
    """
    from polyport.core.errors import MissingExtra
    from polyport.edges.kinds import ChannelEdge, Edge, HttpEdge, ListenerEdge, WebSocketEdge
    from polyport.node import EDGES, EdgeNotInstalled, load_edge

    members = {
        HttpEdge: "routes",
        WebSocketEdge: "websocket_routes",
        ListenerEdge: "address",
        ChannelEdge: "describe_channels",
    }
    checked = 0
    for name, path in EDGES.items():
        try:
            edge_class = load_edge(path)
        except (MissingExtra, EdgeNotInstalled):
            continue
        assert isinstance(edge_class, type)
        mro = edge_class.__mro__
        assert Edge in mro, f"{name} declares no kind"
        own = [c for c in mro if c not in (*members, Edge, object)]
        for kind, member in members.items():
            has = any(member in vars(c) for c in own)
            assert has == (kind in mro), f"{name}: {member} without {kind.__name__}, or not"
        checked += 1
    assert checked >= 6  # the edges without optional dependencies at least


def test_edges_read_their_section_not_the_composed_settings() -> None:
    """An edge imports its own section, never polyport.settings (which names every edge)."""
    assert importers("edges", "polyport.settings") == []


def imports_on_loading(path: Path) -> set[str]:
    """What importing ``path`` imports: module-level statements, not function bodies.

    (``polyport.xmlsafe`` imports lxml in the function that first parses.)
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.If | ast.Try):
            pending.extend(ast.iter_child_nodes(node))
    return names


#: The settings sections that live outside the core: each edge's own, and the two shared.
SECTION_MODULES = [
    *sorted((ROOT / "edges").glob("*/config.py")),
    ROOT / "http" / "websocket_config.py",
    ROOT / "xmlsafe.py",
]


def test_settings_sections_import_nothing_an_edge_needs() -> None:
    """A section module imports the core and pydantic only: no edge code, no optional library.

    ``polyport.settings`` imports every section, and it must import on a bare
    install; a section that imported its edge's binding (or grpcio) would load
    it, and fail, before the node could switch the edge off.
    """
    assert len(SECTION_MODULES) >= 8
    for module in SECTION_MODULES:
        for name in imports_on_loading(module):
            top = name.split(".")[0]
            where = module.relative_to(ROOT)
            if top == "polyport":
                assert name.startswith("polyport.core."), f"{where} imports {name}"
            else:
                assert top not in PROTOCOL_LIBRARIES, f"{where} imports {name}"
