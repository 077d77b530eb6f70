"""What the service says about itself: log records (masked, bounded) and Prometheus metrics.

Every layer above may count and log through it; it knows nothing of sockets or brokers.
"""
