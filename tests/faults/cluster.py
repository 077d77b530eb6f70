"""A real RabbitMQ cluster for the fault suite: three nodes from the installed
``rabbitmq-server``, each with its own node name, ports, data and log directories, sharing
the Erlang cookie of the packaged broker (they run as the ``rabbitmq`` user, as the notes
in ``rabbitmq-notes.md`` describe), joined with ``join_cluster``.

The fault suite stops, kills (``kill -9`` of the node's VM) and restarts nodes; the cluster
is stopped and its directories removed afterwards, whatever happened. Every command has a
time bound; a node that will not start is an error naming it, with the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SERVER = "rabbitmq-server"
CTL = "rabbitmqctl"
START_TIMEOUT = 90.0
"""Seconds a node may take to boot (two shared cores: usually 5-10 s)."""


class ClusterError(RuntimeError):
    """A node would not start, stop or join; the message names it."""


def available() -> str | None:
    """Why a local cluster cannot be made here, or None when it can."""
    if shutil.which(SERVER) is None or shutil.which(CTL) is None:
        return "rabbitmq-server is not installed (CI installs it: apt-get install rabbitmq-server)"
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return "there is no 'rabbitmq' user (the Debian package creates it)"
    if os.geteuid() != 0:
        return "starting extra RabbitMQ nodes as the 'rabbitmq' user needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> str:
    """Run a command; its output, or ClusterError with the output when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ClusterError(f"{' '.join(args[:4])}: no answer in {timeout:.0f}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise ClusterError(f"{' '.join(args[:4])} exited {proc.returncode}: {text[-400:]}")
    return text


@dataclass
class Node:
    """One node of the cluster. ``port`` is its AMQP listener on 127.0.0.1."""

    name: str
    port: int
    dist_port: int
    directory: Path
    running: bool = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        d = self.directory
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        }

    def prepare(self) -> None:
        for sub in ("mnesia", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "log.file.level = warning\n"
            "log.console = false\n"
        )
        (self.directory / "enabled_plugins").write_text("[].\n")
        user = pwd.getpwnam("rabbitmq")
        for path in (self.directory, *self.directory.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)

    def pid(self) -> int | None:
        try:
            return int((self.directory / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    async def ctl(self, *args: str, timeout: float = 60.0) -> str:
        return await _run(CTL, "-n", self.name, "-q", *args, timeout=timeout)

    async def start(self) -> None:
        """Boot the node's VM and wait until RabbitMQ runs on it (ClusterError if not)."""
        await _run(SERVER, "-detached", env=self.env(), timeout=30)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            try:
                await self.ctl("await_startup", timeout=30)
                break
            except ClusterError:
                if loop.time() > deadline:
                    raise ClusterError(f"{self.name} did not start: {self.log_tail()}") from None
                await asyncio.sleep(0.5)
        self.running = True

    async def stop(self) -> None:
        """A clean stop (``rabbitmqctl stop``): clients see their connections closed."""
        self.running = False
        await self.ctl("stop", timeout=60)

    def kill(self) -> None:
        """``kill -9`` of the node's VM: a crash, its peers and clients see TCP resets."""
        self.running = False
        pid = self.pid()
        if pid is not None and _runs(pid, self.name):  # never a recycled pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, limit: int = 600) -> str:
        logs = sorted((self.directory / "log").glob("*.log"))
        text = "".join(p.read_text(errors="replace") for p in logs)
        return text[-limit:] or "(no log)"


@dataclass
class RabbitCluster:
    """``size`` nodes joined into one cluster; see the module docstring."""

    size: int = 3
    nodes: list[Node] = field(default_factory=list)
    base: Path | None = None

    async def start(self) -> RabbitCluster:
        reason = available()
        if reason is not None:
            raise ClusterError(reason)
        self.base = Path(tempfile.mkdtemp(prefix="phonet-cluster-"))
        os.chmod(self.base, 0o755)
        tag = secrets.token_hex(3)
        for i in range(1, self.size + 1):
            node = Node(f"pf{tag}n{i}@localhost", _free_port(), _free_port(), self.base / str(i))
            node.prepare()
            self.nodes.append(node)
        try:
            await asyncio.gather(*(node.start() for node in self.nodes))
            first = self.nodes[0]
            for node in self.nodes[1:]:
                await node.ctl("stop_app")
                await node.ctl("reset")
                await node.ctl("join_cluster", first.name)
                await node.ctl("start_app")
        except BaseException:
            await self.close()
            raise
        return self

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.running]

    def node_at(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    async def heal(self) -> None:
        """Start every node that was stopped or killed (it rejoins from its data directory)
        and wait until all run."""
        down = [node for node in self.nodes if not node.running]
        for node in down:
            # A killed node's VM may still be going down: wait until its pid is gone.
            pid = node.pid()
            for _ in range(100):
                if pid is None or not _runs(pid, node.name):
                    break
                await asyncio.sleep(0.1)
        await asyncio.gather(*(node.start() for node in down))
        if down:
            await self.nodes[0].ctl("await_online_nodes", str(self.size), timeout=60)

    async def close(self) -> None:
        """Stop every node (a kill when a stop does not answer) and remove the directories."""

        async def end(node: Node) -> None:
            try:
                await node.stop()
            except ClusterError:
                node.kill()

        await asyncio.gather(*(end(node) for node in self.nodes), return_exceptions=True)
        for node in self.nodes:
            node.kill()  # a VM that survived the stop
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


def _runs(pid: int, name: str) -> bool:
    """Whether ``pid`` is still the VM of node ``name``."""
    try:
        return name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
