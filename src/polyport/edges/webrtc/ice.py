"""ICE candidates on loopback: the one place polyport reaches into aioice.

aioice (aiortc's ICE agent) gathers a host candidate for every address of
every interface *except* 127.0.0.1 (``aioice.ice.get_host_addresses``
filters it out). On one machine — tests, the bench, a developer's laptop —
we want the opposite: a 127.0.0.1 candidate and nothing else, never the
machine's interface addresses.

:func:`loopback_only` does that narrowly: it replaces
``aioice.ice.get_host_addresses`` (looked up by ``Connection.gather_candidates``
at each call) with a function that answers ``["127.0.0.1"]`` for gathering
started *inside the block* — a context variable, which the tasks aiortc
starts to gather inherit — and the original answer everywhere else. Other
users of aioice in the process gather as before. With no ICE servers given
(``RTCConfiguration(iceServers=[])``), no STUN request leaves the machine
either (aiortc's default is Google's STUN server).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from aioice import ice

_original = ice.get_host_addresses
#: The host addresses to gather in this context, when not the interfaces'.
_HOSTS: ContextVar[tuple[str, ...] | None] = ContextVar("polyport_ice_hosts", default=None)
LOOPBACK = ("127.0.0.1",)


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    hosts = _HOSTS.get()
    if hosts is None:
        return _original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [host for host in hosts if use_ipv4 or ":" in host]


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """ICE gathering started in this block offers 127.0.0.1 only."""
    if ice.get_host_addresses is not _host_addresses:
        ice.get_host_addresses = _host_addresses
    token = _HOSTS.set(LOOPBACK)
    try:
        yield
    finally:
        _HOSTS.reset(token)
