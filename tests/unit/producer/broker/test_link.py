"""The broker link (:mod:`producer.broker.link`) without a broker: what a failed connect
was, told from the exception alone. (Connecting for real: ``tests/e2e/test_first_run.py``.)"""

from __future__ import annotations

from producer.broker.link import connect_problem


def test_connect_problems_are_told_apart_by_the_exception_alone() -> None:
    import socket

    from aiormq.exceptions import AMQPConnectionError

    assert connect_problem(TimeoutError()).kind == "timeout"
    assert connect_problem(socket.gaierror(socket.EAI_NONAME, "x")).kind == "dns"
    assert connect_problem(AMQPConnectionError(111, "Connect call failed")).kind == "refused"
    assert connect_problem(RuntimeError("odd")).kind == "other"
