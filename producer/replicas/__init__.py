"""Several replicas share the subscribers, coordinated through RabbitMQ (no consensus).

* :mod:`.membership` — pure: the live replicas, rendezvous ranking, this replica's roles;
* :mod:`.standby` — pure: the window a standby keeps of what it receives;
* :mod:`.presence` — adapter: heartbeats on a fanout exchange, one exclusive queue each;
* :mod:`.coordinator` — adapter: roles → sockets held, frames published or kept, takeovers.
"""
