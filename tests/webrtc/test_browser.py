"""Two Chromium pages connect peer to peer through /webrtc/signal and talk over a data channel.

Loopback only, as far as signaling goes: Chromium runs with
--allow-loopback-in-peer-connection, no STUN server is given, and the pages
pass on only their 127.0.0.1 candidates (trickled, and stripped from the
descriptions). Chromium still gathers on the machine's interfaces itself and
may pair such a socket with the other page's 127.0.0.1 candidate (Linux
carries that over the loopback device); docs/webrtc.md says so.

Neither page hangs up until both have their message: RTCPeerConnection.close()
aborts the SCTP association, and a page that closed as soon as its own message
came lost the other's, still in flight (one run in six or so; the other page
then waited for ICE to give up, 15 s, and failed with "connection failed").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, _browser_missing

from polyport.testing import RunningNode

WEBRTC_ARGS = [
    *CHROMIUM_ARGS,
    "--allow-loopback-in-peer-connection",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]

#: One peer of the room: joins, makes (or answers) the offer, trickles its loopback
#: candidates, and resolves with the first message the other peer sends it. It
#: stays connected: the test calls hangUp() once both pages have their message.
PEER_JS = r"""
async ({signal, room, name, text}) => {
  const ws = new WebSocket(signal, ["polyport.signal.v1"]);
  let nextId = 0;
  const pending = new Map();
  const request = (frame) => new Promise((resolve) => {
    const id = ++nextId;
    pending.set(id, resolve);
    ws.send(JSON.stringify({id, ...frame}));
  });
  const pc = new RTCPeerConnection({iceServers: []});
  let other = null;
  const received = new Promise((resolve, reject) => {
    const talk = (channel) => {
      channel.onopen = () => channel.send(text);
      channel.onmessage = (m) => resolve(m.data);
      // Say so at once, rather than when ICE gives up 15 s later.
      channel.onclose = () => reject(new Error("the data channel closed before a message came"));
    };
    pc.ondatachannel = (e) => talk(e.channel);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") reject(new Error("connection failed"));
    };
    window.makeChannel = () => talk(pc.createDataChannel("chat"));
  });
  const signaled = [];  // the address of every candidate this page passed on
  pc.onicecandidate = (e) => {
    // Loopback only: pass on 127.0.0.1 candidates and the end of candidates.
    if (other && (!e.candidate || e.candidate.candidate.includes(" 127.0.0.1 "))) {
      if (e.candidate) signaled.push(e.candidate.candidate.split(" ")[4]);
      request({type: "candidate", room, to: other, candidate: e.candidate});
    }
  };
  // Candidates already gathered into a description go too, unless on loopback.
  const loopbackOnly = (sdp) => sdp.split("\r\n").filter(
    (line) => !line.startsWith("a=candidate") || line.includes(" 127.0.0.1 ")).join("\r\n");
  let chain = Promise.resolve();
  const onFrame = async (frame) => {
    if (frame.type === "offer") {
      other = frame.from;
      await pc.setRemoteDescription({type: "offer", sdp: frame.sdp});
      await pc.setLocalDescription(await pc.createAnswer());
      await request({type: "answer", room, to: other, sdp: loopbackOnly(pc.localDescription.sdp)});
    } else if (frame.type === "answer") {
      await pc.setRemoteDescription({type: "answer", sdp: frame.sdp});
    } else if (frame.type === "candidate" && frame.candidate) {
      await pc.addIceCandidate(frame.candidate);
    }
  };
  ws.onmessage = (m) => {
    const frame = JSON.parse(m.data);
    if (frame.id != null && pending.has(frame.id)) {
      pending.get(frame.id)(frame);
      pending.delete(frame.id);
    } else {
      chain = chain.then(() => onFrame(frame));
    }
  };
  await new Promise((resolve) => { ws.onopen = resolve; });
  const joined = await request({type: "join", room, peer: name});
  if (joined.members.length) {       // the second to join makes the offer
    other = joined.members[0];
    window.makeChannel();
    await pc.setLocalDescription(await pc.createOffer());
    await request({type: "offer", room, to: other, sdp: loopbackOnly(pc.localDescription.sdp)});
  }
  const message = await received;
  // Not pc.close() here: the other page may not have our message yet.
  window.hangUp = () => { pc.close(); ws.close(); };
  return {message, signaled};
}
"""


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("POLYPORT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{missing} (POLYPORT_REQUIRE_SERVICES=1)")
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=WEBRTC_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_two_pages_talk_peer_to_peer(dev: RunningNode, chromium: Any) -> None:
    """Both pages join one room; the data channel carries a message each way over loopback."""
    signal = dev.url.replace("http://", "ws://") + "/webrtc/signal"
    pages = []
    errors: list[str] = []
    for _ in range(2):
        context = await chromium.new_context()
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{dev.url}/healthz")  # same origin as the signaling socket
        pages.append(page)
    alice = asyncio.ensure_future(
        pages[0].evaluate(
            PEER_JS, {"signal": signal, "room": "call", "name": "alice", "text": "hi bob"}
        )
    )
    await asyncio.sleep(0.3)  # alice is in the room before bob joins (bob makes the offer)
    bob = pages[1].evaluate(
        PEER_JS, {"signal": signal, "room": "call", "name": "bob", "text": "hi alice"}
    )
    async with asyncio.timeout(20):
        got_alice, got_bob = await asyncio.gather(alice, bob)
    for page in pages:  # both have their message: now either may hang up
        await page.evaluate("hangUp()")
    assert got_alice["message"] == "hi alice" and got_bob["message"] == "hi bob"
    # Only loopback candidates crossed the signaling socket (at least one each way).
    for got in (got_alice, got_bob):
        assert got["signaled"] and set(got["signaled"]) == {"127.0.0.1"}, got
    assert errors == []
