"""The at-least-once publish path: every event is confirmed by the broker or counted.

* :mod:`~producer.publish.pipeline` — pure: what to send, what is done, what is dropped or
  poisoned (the state machine, model-tested);
* :mod:`~producer.publish.returns` — pure: returned messages matched by message id;
* :mod:`~producer.broker.wire` — pure: ``basic.publish`` bytes;
* :mod:`~producer.publish.spool_format` — pure: the spool's record format;
* :mod:`~producer.broker.fastpath` — the one seam over aiormq's internals (fails safe);
* :mod:`~producer.publish.publisher` — the adapter that drives the pipeline on a channel;
* :mod:`~producer.publish.spool` — the disk journal that makes the pipeline survive a crash.
"""
