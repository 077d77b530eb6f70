"""The pure core: the event model, envelopes, routing keys, errors, pacing and the clock.

Nothing here does I/O or imports another layer of the service; every layer above builds
on it (see ARCHITECTURE.md).
"""
