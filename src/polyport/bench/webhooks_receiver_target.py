"""What the receiver bench drives: a node with one receiver, and pre-signed requests for it.

    python -m polyport.bench.webhooks_receiver_target polyport

binds an ephemeral port of 127.0.0.1, writes ``port N`` and serves,
until SIGTERM, a node (REST and the hooks edge, its SQLite database in a
temporary directory) with one Standard Webhooks receiver, ``bench``, whose
handler only counts; ``POST /v1/tally`` answers how many it handled and when
the last one ran. The second is the built-in load generator
(:mod:`polyport.bench.pyload`) sending the NUL-separated requests of a file
in turn instead of one request over and over.

Every request is ``POST /hooks/bench`` with the same body and its own
``webhook-id``, signed beforehand (:func:`signed_ids`): the generators only
send bytes. :class:`SignedLoad` wraps a generator of
:mod:`polyport.bench.loadgen` (wrk with a Lua script going round the ids,
or the Python one) so :func:`~polyport.bench.loadgen.run_load` runs it as
any other.
"""

from __future__ import annotations

import base64
import socket
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from polyport.bench.apps import serve_target
from polyport.bench.loadgen import HttpCall, LoadGenerator, LoadResult, Wrk
from polyport.bench.targets import TargetServer
from polyport.core.contract import Service
from polyport.webhooks import StandardWebhooks, secret_key, sign

HOST = "127.0.0.1"
RECEIVER = "bench"
PATH = f"/hooks/{RECEIVER}"
SECRET = "whsec_" + base64.b64encode(b"bench-secret-of-thirty-two-bytes").decode()
BODY = b'{"type":"payment.succeeded","data":{"id":"pay_1","amount":"19.00"}}'
#: The request every id is sent in; :func:`signed_call` adds the id's three headers.
CALL = HttpCall("POST", PATH, BODY, {"content-type": "application/json"})

#: One pre-signed delivery: its id, its timestamp and its ``webhook-signature``.
Signed = tuple[str, int, str]


def signed_ids(count: int, now: int | None = None) -> list[Signed]:
    """``count`` fresh delivery ids (``msg_0``…), each signed over :data:`BODY` at ``now``."""
    key = secret_key(SECRET)
    now = int(time.time()) if now is None else now
    return [(f"msg_{n}", now, sign(key, f"msg_{n}", now, BODY)) for n in range(count)]


def signed_call(signed: Signed) -> HttpCall:
    """:data:`CALL` with the Standard Webhooks headers of one pre-signed delivery."""
    msg_id, timestamp, signature = signed
    headers = {
        **CALL.headers,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
    return HttpCall(CALL.method, CALL.path, CALL.body, headers)


# -- the node --------------------------------------------------------------------------------


class Tally(BaseModel):
    """What the handler did: deliveries handled, and the time of the last (``time.time()``)."""

    handled: int
    last: float


def receiver_service() -> Service:
    """The bench service: the ``bench`` receiver (a counting handler) and ``tally``."""
    service = Service("hookbench", description="One webhook receiver, for the receiver bench.")
    tally = Tally(handled=0, last=0.0)

    @service.webhook_receiver(RECEIVER, verify=StandardWebhooks(SECRET), max_attempts=1)
    async def bench(body: dict[str, Any]) -> None:
        tally.handled += 1
        tally.last = time.time()

    @service.method(name="tally")
    async def read_tally() -> Tally:
        """How many deliveries the handler has run, and when it ran the last."""
        return tally

    return service


async def _serve_receiver(sock: socket.socket) -> None:
    from polyport import Settings
    from polyport.core.logs import configure_logging
    from polyport.node import Node

    with tempfile.TemporaryDirectory(prefix="polyport-hookbench-") as folder:
        settings = Settings.model_validate(
            {
                "dev": True,
                "database": str(Path(folder) / "node.sqlite3"),
                "rate_limit": {"enabled": False},
                "log": {"level": "warning", "access": False},
            }
        )
        configure_logging(settings.log.level, settings.log.format)
        await Node(receiver_service(), settings, edges=["rest", "hooks"]).serve(sock)


def serve_receiver(sock: socket.socket) -> Coroutine[Any, Any, None]:
    """The receiver node on ``sock``, served when awaited (until SIGTERM)."""
    return _serve_receiver(sock)


class ReceiverNode(TargetServer):
    """The receiver node in a process of its own (its CPU read from ``/proc``)."""

    module = "polyport.bench.webhooks_receiver_target"
    targets = {"polyport": "the receiver node"}
    ready_path = "/healthz"


# -- the generators ----------------------------------------------------------------------------


_LUA = """\
local requests = {}
local i = 0
local checked = false
init = function(args)
  for line in io.lines([==[%(ids)s]==]) do
    local id, ts, sig = line:match("([^\\t]+)\\t([^\\t]+)\\t([^\\t]+)")
    requests[#requests + 1] = wrk.format([==[%(method)s]==], [==[%(path)s]==], {
%(headers)s
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
    }, [==[%(body)s]==])
  end
end
request = function()
  -- wrk calls this once before connecting, to check the script, and never sends
  -- what it returns: that call must not use up an id.
  if not checked then
    checked = true
    return requests[1]
  end
  i = i + 1
  if i > #requests then i = 1 end
  return requests[i]
end
"""


def wrk_signed_script(ids_file: Path) -> str:
    """A wrk Lua script sending :data:`CALL` once per line (id, ts, sig) of ``ids_file``."""
    headers = "\n".join(f"      [ [==[{k}]==] ] = [==[{v}]==]," for k, v in CALL.headers.items())
    return _LUA % {
        "ids": ids_file,
        "method": CALL.method,
        "path": CALL.path,
        "headers": headers,
        "body": CALL.body.decode(),
    }


class SignedLoad:
    """A generator of :mod:`polyport.bench.loadgen` sending each of ``ids`` in turn.

    The ids go round when the run outlasts them, and are then duplicates: the
    lab prepares more than it can send and checks the inbox afterwards.
    """

    def __init__(self, base: LoadGenerator, ids: Sequence[Signed]) -> None:
        if not ids:
            raise ValueError("no signed ids to send")
        self.base = base
        self.ids = ids
        self.name = base.name
        self.version = base.version

    def seconds(self, wanted: float) -> float:
        return self.base.seconds(wanted)

    def parse(self, stdout: str) -> LoadResult:
        return self.base.parse(stdout)

    def command(
        self, host: str, port: int, call: HttpCall, connections: int, seconds: float, scratch: Path
    ) -> list[str]:
        if isinstance(self.base, Wrk):
            ids = scratch / "ids.tsv"
            ids.write_text("".join(f"{i}\t{ts}\t{sig}\n" for i, ts, sig in self.ids))
            script = scratch / "signed.lua"
            script.write_text(wrk_signed_script(ids), encoding="utf-8")
            # wrk's own command for a plain GET of the path, with the script before the URL.
            plain = self.base.command(
                host, port, HttpCall("GET", call.path), connections, seconds, scratch
            )
            return [*plain[:-1], "-s", str(script), plain[-1]]
        requests = scratch / "requests.bin"
        requests.write_bytes(b"\0".join(signed_call(s).raw(host, port) for s in self.ids))
        return [
            sys.executable,
            "-m",
            "polyport.bench.pyload",
            host,
            str(port),
            str(requests),
            str(connections),
            repr(float(self.base.seconds(seconds))),
        ]


if __name__ == "__main__":
    serve_target(
        "polyport.bench.webhooks_receiver_target", {"polyport": serve_receiver}, sys.argv[1:]
    )
