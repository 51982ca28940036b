"""Inbound webhook receivers: ``POST /hooks/{name}``, verified, deduplicated, queued.

The edge is :class:`~polyport.edges.hooks.binding.HooksEdge`; its settings
section, :class:`~polyport.edges.hooks.config.HooksConfig`, imports without
anything the edge needs. Nothing is imported here, so that importing a module
of this package never loads the edge itself.
"""
