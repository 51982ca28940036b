"""Connection set-up time of the WebRTC server peer on loopback (docs/webrtc.md).

    .venv/bin/python scripts/webrtc-setup-time.py [ROUNDS]

Serves the demo shop on a free port of 127.0.0.1 (development mode,
``webrtc.loopback = true``), then, ROUNDS times, an aiortc client creates a
``polyport.v1`` data channel, gathers (127.0.0.1 only), POSTs its offer to
``/webrtc/offer``, applies the answer and waits for the session's ``welcome``
frame: that whole span is one set-up. Prints the median, the 90th percentile
and the extremes, in milliseconds.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from polyport import Settings
from polyport.demo.shop import shop
from polyport.edges.webrtc.ice import loopback_only
from polyport.testing import serve_in_thread


async def one_setup(url: str, http: httpx.AsyncClient) -> float:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    welcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    try:
        start = time.perf_counter()
        channel = pc.createDataChannel("polyport.v1")
        channel.on("message", lambda m: welcome.done() or welcome.set_result(m))
        with loopback_only():
            await pc.setLocalDescription(await pc.createOffer())
        local = pc.localDescription
        answer = await http.post(f"{url}/webrtc/offer", json={"sdp": local.sdp, "type": local.type})
        answer.raise_for_status()
        await pc.setRemoteDescription(RTCSessionDescription(**answer.json()))
        async with asyncio.timeout(10):
            first = await welcome
        elapsed = time.perf_counter() - start
        assert '"welcome"' in first, first
        return elapsed
    finally:
        await pc.close()


async def measure(url: str, rounds: int) -> list[float]:
    async with httpx.AsyncClient() as http:
        await one_setup(url, http)  # warm-up: imports, the first DTLS certificate
        return [await one_setup(url, http) for _ in range(rounds)]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.model_validate(
            {
                "dev": True,
                "database": str(Path(folder) / "db.sqlite3"),
                "webrtc": {"loopback": True},
                "log": {"access": False},
            }
        )
        with serve_in_thread(shop, settings, edges=["rest", "webrtc"]) as node:
            times = sorted(t * 1000 for t in asyncio.run(measure(node.url, rounds)))
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    print(
        f"WebRTC server peer set-up on loopback, {rounds} rounds: "
        f"median {statistics.median(times):.0f} ms, p90 {p90:.0f} ms, "
        f"min {times[0]:.0f} ms, max {times[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
