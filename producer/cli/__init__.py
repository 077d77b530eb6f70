"""The command line: ``phonet-producer`` (the service), ``demo`` and ``simulator``."""
