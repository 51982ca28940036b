"""The polling edge: polling and long polling on the event log, and jobs.

The edge is :class:`~polyport.edges.poll.binding.PollEdge`. Nothing is imported
here, so that importing a module of this package never loads the edge itself.
"""
