"""The core: contract, type graph, dispatch pipeline, errors, event log, jobs.

Nothing here imports an edge or a protocol library.
"""
