"""The polling edge: polling and long polling on the event log, and jobs."""

from polyport.edges.poll.binding import PollEdge

__all__ = ["PollEdge"]
