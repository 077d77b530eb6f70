"""phonet-producer: Phonet cloud PBX call events into a RabbitMQ topic exchange."""

__version__ = "0.1.0"
