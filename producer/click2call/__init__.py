"""click2call: commands from a queue are dialed on the right socket and answered.

* :mod:`~producer.click2call.commands` — pure: validation, staleness, reply shapes;
* :mod:`~producer.click2call.switchboard` — pure: the per-socket command lines (the state
  machine, model-tested);
* :mod:`~producer.click2call.service` — the adapter between the queue, the sockets and the
  switchboard.
"""
