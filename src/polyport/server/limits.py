"""What one connection of polyport's own server may cost: sizes, counts and timeouts.

The defaults follow the mature servers (nginx, uvicorn, Node's http): a
client is given time and room to be slow, never to make the server hold its
work in memory. ``docs/server.md`` explains each limit and what it answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyport.core.config import ServerConfig

#: Connections served when the open-file limit cannot be read (not a POSIX system).
FALLBACK_CONNECTIONS = 10_000
#: File descriptors kept for everything else the node opens — the database, gRPC
#: and its clients, log files, outbound webhooks: a tenth of the limit, at least this.
MIN_RESERVED_FDS = 64


def connection_limit() -> int:
    """Connections the open-file limit (``RLIMIT_NOFILE``) leaves room for.

    A connection costs one descriptor, and so does every file and socket the
    rest of the node opens. Serving up to the limit itself would make
    ``accept`` fail with EMFILE before the server's own 503 could fire, and
    starve the database and gRPC of descriptors; so a reserve is kept.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows has no rlimits
        return FALLBACK_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = hard if hard != resource.RLIM_INFINITY else 1 << 20
    reserve = max(MIN_RESERVED_FDS, soft // 10)
    return max(1, soft - reserve)


class Limits:
    """Per-connection limits and timeouts of one server (see ``ServerConfig``)."""

    __slots__ = (
        "body_timeout",
        "header_timeout",
        "keep_alive",
        "max_connections",
        "max_header_bytes",
        "max_headers",
        "max_pipelined",
        "max_url",
        "send_timeout",
        "stream_buffer",
    )

    def __init__(
        self,
        *,
        keep_alive: float = 5.0,
        header_timeout: float = 30.0,
        body_timeout: float = 60.0,
        send_timeout: float = 60.0,
        max_url: int = 32 * 1024,
        max_headers: int = 100,
        max_header_bytes: int = 64 * 1024,
        max_pipelined: int = 16,
        max_connections: int | None = None,
        stream_buffer: int = 256 * 1024,
    ) -> None:
        self.keep_alive = keep_alive
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        #: A peer that takes none of our bytes for this long is aborted (nginx's send_timeout).
        self.send_timeout = send_timeout
        self.max_url = max_url
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_pipelined = max_pipelined
        self.max_connections = connection_limit() if max_connections is None else max_connections
        self.stream_buffer = stream_buffer

    @classmethod
    def from_config(cls, config: ServerConfig) -> Limits:
        """The limits a node's ``server`` settings section asks for."""
        return cls(
            keep_alive=config.keep_alive,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            send_timeout=config.send_timeout,
            max_url=config.max_url,
            max_headers=config.max_headers,
            max_header_bytes=config.max_header_bytes,
            max_pipelined=config.max_pipelined,
            max_connections=config.max_connections,
        )


__all__ = ["Limits", "connection_limit"]
