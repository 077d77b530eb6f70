"""The HTTP adapter: ``/metrics``, ``/healthz`` and ``/readyz`` on one small server."""
