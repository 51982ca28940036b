"""The benchmark lab: the same handler served over each pattern, measured in one run.

Every bench serves one small handler (:mod:`polyport.bench.users`) through
polyport and through the bare libraries, each in its own server process, and
reports polyport's throughput as ratios against the bare libraries measured in
that same run — absolute figures on a shared machine are noise, ratios are
signal.

    polyport bench rest      GET /v1/users/{id}: polyport, plain FastAPI, plain Starlette
    polyport bench ws        WebSocket push: polyport, websockets.broadcast() (realtime.py)
    polyport bench sse       Server-Sent Events: polyport, plain sse-starlette (realtime.py)

Nothing here is imported by the rest of polyport; the bare libraries and the
chart need the ``bench`` extra.
"""
