"""``cryptolens-bridge dev``: web, worker and sandbox in one command, on local defaults.

Each part runs as its own child process (``python -m bridge serve|worker|sandbox``), the
way production runs them, with the environment filled in: a SQLite file, Redis (a private
``redis-server`` child when none answers), the sandbox, a generated webhook secret, a
config with a default template, and the admin page on with a generated token (printed in
the banner, like the generated secrets: dev-only values). The children get their own
sessions, so a Ctrl-C reaches only this process, which then stops them in order: web and
worker, sandbox, Redis.

``--demo`` posts a signed one-off purchase once everything is up, waits for the license
key to appear in the sandbox, prints it and stops. It always runs on its own SQLite file,
the built-in sandbox and a generated secret, so it never touches a real Cryptolens
account or a database a real worker reads; only ``BRIDGE_REDIS_URL`` is taken as given.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import click
import httpx
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from bridge.config import BridgeConfig
from bridge.core.errors import ConfigError
from bridge.core.settings import Settings
from bridge.store.db import migrate
from devtools.dev_setup import DEMO_SAMPLE, Setup, banner, make_setup
from devtools.procs import REDIS_HINT, Relay, Supervisor, redis_answers, redis_server_binary
from devtools.send import fresh_id, load_event, post, shift_to

_START = 30.0  # seconds each part has to answer
# Longer than the worker's default BRIDGE_WORKER_SHUTDOWN_WAIT, so that it finishes or
# cancels its own jobs before it is killed.
_STOP_TIMEOUT = 15.0
_STOP_ORDER = (("web", "worker"), ("sandbox", "crm"), ("redis",))


class _Stopped(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: stop everything.

    SIGINT is handled here too, not left to KeyboardInterrupt: a shell starts background
    jobs with SIGINT ignored, and ``kill -INT`` should still stop a backgrounded dev.
    """


def _on_signal(signum: int, _: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _require_free(port: int, option: str) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise click.ClickException(
                f"port {port} on 127.0.0.1 is in use (another dev run?); pass {option}"
            ) from None


def _start_redis(stack: Supervisor, output: Relay) -> str:
    if redis_server_binary() is None:
        raise click.ClickException(
            "no Redis answers at BRIDGE_REDIS_URL and no redis-server is installed: "
            f"{REDIS_HINT}; or point BRIDGE_REDIS_URL at one"
        )
    url = stack.start_redis()
    where = url.removeprefix("redis://")
    output.say(f"started redis-server on {where} (pid {stack.find('redis').pid})")
    return f"{url}/0"


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"bad setting in the environment or .env: {exc}") from None


def _demo(
    stack: Supervisor, output: Relay, setup: Setup, web: str, timeout: float
) -> tuple[str, str]:
    """Post a fresh one-off purchase; return (key, email) once the sandbox has the key."""
    assert setup.sandbox_root is not None
    event = shift_to(load_event(DEMO_SAMPLE), int(time.time()))
    # Fresh payment ids too: the same purchase twice is, rightly, one key.
    tag = secrets.token_hex(6)
    session = event["data"]["object"]
    session["id"] = f"cs_test_demo_{tag}"
    session["payment_intent"] = f"pi_demo_{tag}"
    event["id"] = fresh_id()
    email = str(session["customer_details"]["email"])
    state_url = f"{setup.sandbox_root}/sandbox/state"
    before = {k["key"] for k in httpx.get(state_url, timeout=5).json()["keys"]}

    secret = setup.env["STRIPE_WEBHOOK_SECRET"].split(",")[0].strip()
    with httpx.Client(timeout=10) as client:
        response = post(client, f"{web}/webhooks/stripe", event, secret)
    output.say(
        f"demo: posted {event['type']} {event['id']} ({email}): "
        f"{response.status_code} {response.text}"
    )
    if response.status_code != 200:
        raise click.ClickException("the bridge refused the demo event (see above)")
    if response.json().get("intents") == 0:
        raise click.ClickException("the bridge recorded the demo event but planned no effect")

    found: dict[str, Any] = {}

    def key_created() -> bool:
        state = httpx.get(state_url, timeout=5).json()
        new = [k for k in state["keys"] if k["key"] not in before]
        customers = {c["id"]: c for c in state["customers"]}
        for key in new:
            if customers.get(key.get("customer_id"), {}).get("email") == email:
                found.update(key)
                return True
        return False

    try:
        stack.wait_until(key_created, "the license key in the sandbox", timeout=timeout)
    except click.ClickException:
        raise click.ClickException(
            f"no license key appeared in the sandbox within {timeout:.0f}s; the worker's "
            "output above says why"
        ) from None
    return str(found["key"]), email


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    wanted = [signal.SIGINT, signal.SIGTERM]
    # Under nohup SIGHUP is ignored on purpose; keep it so.
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        wanted.append(signal.SIGHUP)
    previous = {s: signal.signal(s, _on_signal) for s in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@click.command("dev")
@click.option("--port", default=8000, show_default=True, type=int, help="The bridge's port.")
@click.option("--sandbox-port", default=8790, show_default=True, type=int)
@click.option(
    "--crm-port",
    default=8791,
    show_default=True,
    type=int,
    help="The HubSpot/Pipedrive stand-in's port.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Post a sample purchase, wait for its key in the sandbox, print it and stop.",
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds --demo waits for the key.",
)
def command(port: int, sandbox_port: int, crm_port: int, demo: bool, timeout: float) -> None:
    """Web + worker + sandbox on 127.0.0.1, on local defaults (Ctrl-C stops all)."""
    output = Relay()
    settings = _settings()
    # Children in sessions of their own: a Ctrl-C reaches only us, and we stop them in order.
    stack = Supervisor(relay=output, own_sessions=True, stop_timeout=_STOP_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="bridge-dev-") as config_dir, _signals():
        try:
            setup = make_setup(
                settings,
                demo=demo,
                sandbox_port=sandbox_port,
                config_dir=Path(config_dir),
                crm_port=crm_port,
                web_port=port,
            )
            _require_free(port, "--port")
            if setup.sandbox_root is not None:
                _require_free(sandbox_port, "--sandbox-port")
            if setup.crm_root is not None:
                _require_free(crm_port, "--crm-port")
            try:
                BridgeConfig.load(Path(setup.env["BRIDGE_CONFIG"]))
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            migrate(setup.env["BRIDGE_DATABASE_URL"])

            redis_url = settings.redis_url
            if not redis_answers(redis_url):
                output.say(f"no Redis answers at {redis_url}; starting a private redis-server")
                redis_url = _start_redis(stack, output)
            setup.env["BRIDGE_REDIS_URL"] = redis_url

            bridge = [sys.executable, "-m", "bridge"]
            if setup.sandbox_root is not None:
                sandbox = [*bridge, "sandbox", "--host", "127.0.0.1", "--port", str(sandbox_port)]
                if setup.sandbox_db is not None:
                    sandbox += ["--db", str(setup.sandbox_db)]
                stack.start("sandbox", sandbox, setup.env)
            if setup.crm_root is not None:
                standin = [sys.executable, "-m", "devtools.crm_standin"]
                stack.start("crm", [*standin, "--port", str(crm_port)], setup.env)
            stack.start(
                "web", [*bridge, "serve", "--host", "127.0.0.1", "--port", str(port)], setup.env
            )
            stack.start("worker", [*bridge, "worker"], setup.env)

            web = f"http://127.0.0.1:{port}"
            stack.wait_until(lambda: _get_ok(f"{web}/readyz"), f"{web}/readyz", timeout=_START)
            if setup.sandbox_root is not None:
                root = setup.sandbox_root
                stack.wait_until(
                    lambda: _get_ok(f"{root}/sandbox/state"), "the sandbox", timeout=_START
                )
            if setup.crm_root is not None:
                crm = setup.crm_root
                stack.wait_until(
                    lambda: _get_ok(f"{crm}/standin/state"), "the CRM stand-in", timeout=_START
                )
            output.say(banner(setup, web, redis_url))

            if demo:
                key, email = _demo(stack, output, setup, web, timeout)
                output.say(_demo_report(setup, key, email))
                return
            while True:
                stack.check()
                time.sleep(0.5)
        except _Stopped:
            output.say("stopping")
        finally:
            # A second Ctrl-C must not cut the shutdown short: the children have their own
            # sessions and would outlive us.
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            stack.stop_all(_STOP_ORDER)  # the handlers come back as _signals() exits


def _demo_report(setup: Setup, key: str, email: str) -> str:
    url = make_url(setup.env["BRIDGE_DATABASE_URL"])
    look = f"sqlite3 {url.database}" if url.get_backend_name() == "sqlite" else url.database
    return "\n".join(
        [
            "",
            f"license key created in the sandbox: {key} for {email}",
            "  where to look:",
            f"    the bridge's records: {look}  (tables webhook_event, intent, license)",
            "    run `cryptolens-bridge dev` and send events yourself "
            "(`cryptolens-bridge send stripe --help`);",
            "    the sandbox shows every key, customer and call at /sandbox/state",
            "",
        ]
    )
