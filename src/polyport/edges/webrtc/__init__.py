"""The WebRTC edge: signaling rooms at /webrtc/signal and a server peer at /webrtc/offer.

The edge is :class:`~polyport.edges.webrtc.binding.WebRtcEdge` (importing it
without the 'webrtc' extra raises :class:`~polyport.core.errors.MissingExtra`,
which switches the edge off). Nothing is imported here, so that importing a
module of this package never loads the edge itself. See ``docs/webrtc.md``.
"""
