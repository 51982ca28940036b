"""GraphQL names for contract names: camelCase fields, valid and unique type names.

GraphQL names match ``[_A-Za-z][_0-9A-Za-z]*`` and may not start with ``__``
(reserved for introspection). Python names mostly fit already; aliases and
generic model names (``Page[User]``) are made to fit.
"""

from __future__ import annotations

import re

_INVALID = re.compile(r"[^_0-9A-Za-z]")


def valid_name(text: str) -> str:
    """``text`` with every character GraphQL does not allow replaced by ``_``."""
    name = _INVALID.sub("_", text) or "_"
    if name[0].isdigit():
        name = "_" + name
    while name.startswith("__"):
        name = name[1:]
    return name


def camel(name: str) -> str:
    """``created_at`` → ``createdAt``; leading underscores and existing capitals are kept."""
    stripped = name.lstrip("_")
    if "_" not in stripped:
        return name
    head, *rest = stripped.split("_")
    prefix = name[: len(name) - len(stripped)]
    return prefix + head + "".join(part[:1].upper() + part[1:] for part in rest if part)


def lower_first(name: str) -> str:
    """``OrderItem`` → ``orderItem`` (the name of a query for one item)."""
    return name[:1].lower() + name[1:]


def upper_first(name: str) -> str:
    return name[:1].upper() + name[1:]


class NameRegistry:
    """Hands out unique names: the preferred one, or it with a number appended."""

    def __init__(self, reserved: set[str] | None = None) -> None:
        self.taken: set[str] = set(reserved or ())

    def claim(self, preferred: str) -> str:
        name = valid_name(preferred)
        candidate, number = name, 2
        while candidate in self.taken:
            candidate = f"{name}{number}"
            number += 1
        self.taken.add(candidate)
        return candidate
