"""``cryptolens-bridge dev``: the whole stack as child processes, started and stopped."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from bridge.core.settings import Settings
from devtools.dev_setup import banner, make_setup
from tests.fixtures.stack import free_port

KEY = r"[A-Z]{5}(?:-[A-Z]{5}){3}"


def command() -> list[str]:
    script = Path(sys.executable).with_name("cryptolens-bridge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bridge"]


def clean_env(**values: str) -> dict[str, str]:
    """The test process's environment without the bridge's own settings, plus ``values``."""
    prefixes = ("BRIDGE_", "CRYPTOLENS_", "STRIPE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    # The operator port on one the system picks: tests (and a developer's own `dev`)
    # run side by side.
    return {**env, "BRIDGE_METRICS_ADDRESS": "127.0.0.1:0", **values}


def start(cwd: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], int, int]:
    web, sandbox = free_port(), free_port()
    argv = [*command(), "dev", "--port", str(web), "--sandbox-port", str(sandbox), *args]
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return proc, web, sandbox


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # dev stops its children; a kill would orphan them
        output, _ = proc.communicate(timeout=15)
        raise AssertionError(f"dev did not finish in {timeout}s:\n{output}") from None
    return output


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_demo_creates_a_key_in_the_sandbox_and_stops_everything(
    tmp_path: Path, redis_url: str
) -> None:
    proc, web, sandbox = start(tmp_path, clean_env(BRIDGE_REDIS_URL=redis_url), "--demo")
    output = finish(proc, timeout=45)

    assert proc.returncode == 0, output
    assert re.search(rf"license key created in the sandbox: {KEY} for example@example.com", output)
    assert f"redis: {redis_url}" in output
    assert (tmp_path / "bridge-dev.db").exists()
    assert port_is_free(web) and port_is_free(sandbox), output


def test_sigterm_stops_web_worker_sandbox_and_the_redis_it_started(tmp_path: Path) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    proc, web, sandbox = start(tmp_path, clean_env(BRIDGE_REDIS_URL=nobody))
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        # Read until the banner: everything is up once dev says so.
        for line in proc.stdout:
            lines.append(line)
            if "cryptolens-bridge dev is up" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
    output = "".join(lines) + finish(proc, timeout=30)

    assert proc.returncode == 0, output
    assert "cryptolens-bridge dev is up" in output
    assert "stopping" in output
    started = re.search(r"started redis-server on 127\.0\.0\.1:(\d+)", output)
    assert started, output
    for port in (web, sandbox, int(started.group(1))):
        assert port_is_free(port), output


def test_the_admin_page_is_on_with_the_token_printed_in_the_banner(
    tmp_path: Path, redis_url: str
) -> None:
    proc, web, _ = start(tmp_path, clean_env(BRIDGE_REDIS_URL=redis_url))
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        banner = "".join(lines)
        shown = re.search(r"admin page: (\S+) \(token: (\S+), made for this run\)", banner)
        assert shown, banner
        assert shown.group(1) == f"http://127.0.0.1:{web}/admin/"
        with httpx.Client(base_url=shown.group(1)) as http:
            csrf = re.search(r'name="csrf" value="([^"]+)"', http.get("login").text)
            assert csrf, banner
            answer = http.post("login", data={"csrf": csrf.group(1), "token": shown.group(2)})
            assert answer.status_code == 303, banner
            assert http.get("").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
    output = "".join(lines) + finish(proc, timeout=30)
    assert proc.returncode == 0, output


def test_an_empty_admin_token_given_on_purpose_keeps_the_page_off(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, BRIDGE_ADMIN_TOKEN="")
    setup = make_setup(settings, demo=False, sandbox_port=1, config_dir=tmp_path)
    assert setup.admin_token is None
    assert not setup.env.get("BRIDGE_ADMIN_TOKEN")
    assert "admin page: off (empty token)" in setup.notes
    assert "/admin/" not in banner(setup, "http://127.0.0.1:1", "redis://x")
