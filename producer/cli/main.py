"""Command line: ``phonet-producer`` (the service), ``demo`` and ``simulator``.

Thin by design: parse arguments, load settings, set up logging, hand over to
:mod:`producer.app.service`, :mod:`producer.cli.demo` or :mod:`phonet_simulator`. Exit codes:
0 clean stop, 1 the demo found no broker, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import resource
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from producer import __version__
from producer.app.settings import Settings, load_settings, retired_in_environment
from producer.core.errors import ConfigError, SpoolError
from producer.core.rules import mask_url
from producer.telemetry.logs import setup_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phonet-producer",
        description="Phonet PBX call events into a RabbitMQ topic exchange. Without a "
        "command it runs the service, configured by environment variables.",
        epilog="Settings: `phonet-producer settings` lists every environment variable with "
        "its default; the README's Configuration section explains them (PHONET_DOMAIN, "
        "PHONET_API_KEY and PHONET_SUBSCRIBERS are required).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")

    demo = commands.add_parser("demo", help="simulator + producer + printing consumer")
    demo.add_argument("--amqp-url", help="broker (default: AMQP_URL or local guest)")
    demo.add_argument("--seconds", type=float, help="stop after this long")
    demo.add_argument("--events", type=int, help="stop after printing this many events")
    demo.add_argument("--calls-per-second", type=float, default=1.0)
    demo.add_argument("--exchange", default="phonet.events")
    demo.add_argument("--click2call-queue", default="phonet.click2call")

    commands.add_parser("settings", help="list every setting (environment variable)")

    sim = commands.add_parser("simulator", help="run the Phonet simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--api-key", default="demo-key", help="key clients must present")
    sim.add_argument("--domain", default="demo.phonet.com.ua")
    sim.add_argument(
        "--subscribers",
        default="001,002,ivan.petrov@example.com",
        help="comma-separated; calls are generated for these (any subscriber may connect)",
    )
    sim.add_argument("--calls-per-second", type=float, default=1.0, help="0: no calls")
    sim.add_argument("--seed", type=int, help="repeatable traffic")
    sim.add_argument("--verbose", action="store_true", help="log every socket and handshake")
    return parser


async def _run_simulator(args: argparse.Namespace) -> int:
    from phonet_simulator import PhonetSimulator

    subscribers = [s.strip() for s in args.subscribers.split(",") if s.strip()]
    sim = PhonetSimulator(
        api_key=args.api_key,
        domain=args.domain,
        host=args.host,
        port=args.port,
        seed=args.seed,
        record=False,
    )
    sim.traffic_for = subscribers  # any subscriber may connect; calls go to these
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if args.calls_per_second > 0:
        sim.start_traffic(args.calls_per_second)
    print(
        f"Phonet simulator on {sim.url}\n"
        f"  PHONET_URL={sim.url} PHONET_REST_URL={sim.rest_url} PHONET_DOMAIN={sim.domain} "
        f"PHONET_API_KEY={args.api_key} PHONET_SUBSCRIBERS={','.join(subscribers)}",
        flush=True,
    )
    await stop.wait()
    await sim.close()
    return 0


def _runner(choice: str) -> Callable[[Coroutine[Any, Any, int]], int] | None:
    """``asyncio.run`` or ``uvloop.run`` (measured: ~10% less CPU per event); None when
    uvloop was asked for and is missing."""
    if choice == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        return None if choice == "uvloop" else asyncio.run
    run: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    return run


FD_SPARE = 256
"""File descriptors the producer needs beside its sockets (broker, spool, ops, logs)."""


def _raise_fd_limit() -> int:
    """Each subscriber socket is a file descriptor: lift the soft limit to the hard one
    (2,000 subscribers exceed the common default of 1,024). Returns the limit now."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fd_limit_problem(limit: int, subscribers: int) -> str | None:
    """Why the open-files limit is too low for ``subscribers`` sockets, or None."""
    needed = subscribers + FD_SPARE
    if limit == resource.RLIM_INFINITY or limit >= needed:
        return None
    return (
        f"the open-files limit is {limit}, below the {needed} that {subscribers} subscribers"
        " need: some sockets will fail with 'Too many open files'. Raise it: ulimit -n,"
        " LimitNOFILE= in a systemd unit, or the container runtime's nofile limit"
    )


def settings_text() -> str:
    """Every setting, group by group: its variable, its default and what it is."""
    lines: list[str] = []
    for group in dict.fromkeys(Settings.field_names().values()):
        lines.append(f"{(group.__doc__ or group.__name__).strip().splitlines()[0]}")
        for name, field in group.model_fields.items():
            default = "required" if field.is_required() else _plain(field.default)
            lines.append(f"  {name.upper():<38} {default:<32} {field.description or ''}")
    return "\n".join(lines)


def _plain(value: object) -> str:
    """A default as a user writes it (a URL's password masked)."""
    if value is None:
        return "(unset)"
    if isinstance(value, SecretStr):
        return mask_url(value.get_secret_value())
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    return str(value) if value != "" else "(empty)"


def _simulator_missing() -> bool:
    """True when the simulator is not installed: the image leaves it out (it is a fake PBX
    for the demo and the tests, not part of the service)."""
    if importlib.util.find_spec("phonet_simulator") is not None:
        return False
    print(
        "phonet-producer: the demo and the simulator come with a source checkout"
        " (pip install -e .), not with the service's image",
        file=sys.stderr,
    )
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("demo", "simulator") and _simulator_missing():
        return 2
    if args.command == "settings":
        print(settings_text())
        return 0
    if args.command == "demo":
        from producer.cli.demo import run_demo

        setup_logging("WARNING", "text")
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(
                run_demo(
                    amqp_url=args.amqp_url,
                    seconds=args.seconds,
                    max_events=args.events,
                    calls_per_second=args.calls_per_second,
                    exchange=args.exchange,
                    click2call_queue=args.click2call_queue,
                )
            )
        return 0
    if args.command == "simulator":
        setup_logging("DEBUG" if args.verbose else "INFO", "text")
        # One line per socket is noise with thousands of them: only with --verbose.
        level = logging.DEBUG if args.verbose else logging.WARNING
        logging.getLogger("phonet_simulator.ws").setLevel(level)
        return asyncio.run(_run_simulator(args))

    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"phonet-producer: config error: {line}", file=sys.stderr)
        return 2
    amqp_password = urlsplit(settings.amqp_url.get_secret_value()).password or ""
    setup_logging(
        settings.log_level, settings.log_format, secrets=(settings.api_key, amqp_password)
    )
    from producer.app.run import serve

    problem = fd_limit_problem(_raise_fd_limit(), len(settings.subscribers))
    if problem:
        logging.getLogger("producer").error(problem)
    for line in retired_in_environment():
        logging.getLogger("producer").warning(line)
    run = _runner(settings.phonet_event_loop)
    if run is None:
        print(
            "phonet-producer: config error: PHONET_EVENT_LOOP: uvloop is not installed"
            " (pip install 'phonet-producer[uvloop]')",
            file=sys.stderr,
        )
        return 2
    try:
        return run(serve(settings))
    except ConfigError as exc:
        print(f"phonet-producer: config error: {exc}", file=sys.stderr)
        return 2
    except SpoolError as exc:
        print(f"phonet-producer: {exc}", file=sys.stderr)
        return 2
    except Exception:
        logging.getLogger("producer").exception("fatal error")
        return 1
