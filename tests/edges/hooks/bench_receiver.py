"""Receiver acknowledgements per second: wrk posting signed webhooks to ``/hooks/bench``.

    .venv/bin/python tests/edges/hooks/bench_receiver.py [--seconds 5] [--connections 32]

Not a test (pytest does not collect it). A node serves one Standard Webhooks
receiver with a no-op handler on a fresh SQLite file; ``wrk`` (one thread)
sends pre-signed requests, each with a new delivery id — every answer is a
verified, validated, committed ``200 accepted`` — then the same requests again,
which are all ``200 duplicate``. Handlers run meanwhile from the inbox, as they
would in production; the figures are the HTTP acknowledgements.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from polyport import Service, Settings
from polyport.testing import serve_in_thread
from polyport.webhooks import StandardWebhooks, secret_key, sign

SECRET = "whsec_" + base64.b64encode(b"bench-secret-of-thirty-two-bytes").decode()
BODY = b'{"type":"payment.succeeded","data":{"id":"pay_1","amount":"19.00"}}'

service = Service("hookbench")
handled = 0


@service.webhook_receiver("bench", verify=StandardWebhooks(SECRET), max_attempts=1)
async def bench_hook(body: dict[str, Any]) -> None:
    global handled
    handled += 1


LUA = """
local requests = {}
local i = 0
init = function(args)
  for line in io.lines("%(path)s") do
    local id, ts, sig = line:match("([^\\t]+)\\t([^\\t]+)\\t([^\\t]+)")
    requests[#requests + 1] = wrk.format("POST", "/hooks/bench", {
      ["content-type"] = "application/json",
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
    }, '%(body)s')
  end
end
request = function()
  i = i + 1
  if i > #requests then i = 1 end
  return requests[i]
end
"""


def wrk(url: str, script: Path, seconds: float, connections: int) -> dict[str, float]:
    duration = f"-d{max(1, round(seconds))}s"
    command = ["wrk", "-t1", f"-c{connections}", duration, "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr or done.stdout}")
    out = done.stdout
    if "Non-2xx" in out:
        raise SystemExit("some answers were not 2xx:\n" + out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    found = {
        "requests_per_s": float(rate.group(1)) if rate else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
    }
    for label in ("50", "99"):
        match = re.search(rf"\s{label}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out)
        if match:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
            found[f"p{label}_ms"] = float(match.group(1)) * scale
    return found


def _received(metrics: str, outcome: str) -> int:
    pattern = rf'polyport_hooks_received_total{{outcome="{outcome}",[^}}]*}} ([\d.]+)'
    found = re.search(pattern, metrics)
    return int(float(found.group(1))) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200_000, help="distinct ids prepared")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = secret_key(SECRET)
        now = int(time.time())
        lines = (
            f"msg_{n}\t{now}\t{sign(key, f'msg_{n}', now, BODY)}\n" for n in range(args.requests)
        )
        (folder / "requests.tsv").write_text("".join(lines))
        script = folder / "requests.lua"
        script.write_text(LUA % {"path": folder / "requests.tsv", "body": BODY.decode()})
        settings = Settings.model_validate(
            {
                "dev": True,
                "database": str(folder / "node.sqlite3"),
                "rate_limit": {"enabled": False},
                "log": {"access": False},
            }
        )
        with serve_in_thread(service, settings, edges=["hooks"]) as node:
            accepted = wrk(node.url, script, args.seconds, args.connections)
            # The handlers fall behind under load (they share the event loop with
            # the acknowledgements, which come first); time the rest of the queue.
            received = _received(node.node.runtime.metrics.render().decode(), "accepted")
            started, left = time.perf_counter(), received - handled
            while handled < received and time.perf_counter() - started < 120:
                time.sleep(0.01)
            drain = {
                "handled_during_load": received - left,
                "left_after_load": left,
                "drained_per_s": round(left / (time.perf_counter() - started), 1),
            }
            # Only ids already accepted, round and round: every answer a duplicate.
            seen = (folder / "requests.tsv").read_text().splitlines(keepends=True)[:received]
            (folder / "seen.tsv").write_text("".join(seen))
            again = folder / "seen.lua"
            again.write_text(LUA % {"path": folder / "seen.tsv", "body": BODY.decode()})
            duplicate = wrk(node.url, again, args.seconds, args.connections)
            counts = node.node.runtime.metrics.render().decode()
        report = {"accepted": accepted, "processing": drain, "duplicate": duplicate}
        print(json.dumps(report, indent=2))
        for line in counts.splitlines():
            if line.startswith("polyport_hooks_received_total"):
                print(line)


if __name__ == "__main__":
    main()
