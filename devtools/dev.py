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
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from bridge.sandbox.config import DEFAULT_TOKEN
from bridge.store.db import migrate
from devtools.procs import REDIS_HINT, Relay, Supervisor, redis_answers, redis_server_binary
from devtools.send import fresh_id, load_event, post, shift_to

DEMO_SAMPLE = "checkout.session.completed.payment"
DEV_CONFIG = """[stripe]
default_template_id = 1
license_lookup = true

[hubspot]
default_template_id = 1
lost_policy = "block"

[pipedrive]
default_template_id = 1
key_field = "license_key"
lost_policy = "block"

[crm.demo]
default_template_id = 1
lost_policy = "block"
"""
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


@dataclass(frozen=True)
class _Setup:
    """What the children get, and what to tell the user about it."""

    env: dict[str, str]
    notes: list[str]
    sandbox_root: str | None  # None: CRYPTOLENS_API_URL names a service we don't run
    sandbox_db: Path | None  # kept beside bridge-dev.db, so both remember the same keys
    generated_secret: str | None  # None: the user's STRIPE_WEBHOOK_SECRET, not printed
    crm_root: str | None = None  # the HubSpot/Pipedrive stand-in, when no API URL is given
    # CRM endpoints' secrets generated for this run (printed); the user's are not.
    crm_secrets: dict[str, str] | None = None
    # BRIDGE_ADMIN_TOKEN generated for this run (printed); None: the user's, or off.
    admin_token: str | None = None


def _setup_crms(
    settings: Settings,
    env: dict[str, str],
    notes: list[str],
    ports: tuple[int, int],
    made: dict[str, str],
) -> str | None:
    """CRM endpoints on, with secrets generated for this run where none is given (they
    are printed: dev-only values), and the APIs of a local stand-in unless given. HubSpot
    signs the URL it calls: the bridge's own here, unless BRIDGE_PUBLIC_URL is given."""
    crm_port, web_port = ports
    given = settings.model_fields_set
    if "public_url" not in given:
        env["BRIDGE_PUBLIC_URL"] = f"http://127.0.0.1:{web_port}"
    generated = {
        "hubspot_client_secret": ("HUBSPOT_CLIENT_SECRET", f"hubspot-dev-{secrets.token_hex(12)}"),
        "pipedrive_webhook_user": ("PIPEDRIVE_WEBHOOK_USER", "bridge-dev"),
        "pipedrive_webhook_password": (
            "PIPEDRIVE_WEBHOOK_PASSWORD",
            f"pipedrive-dev-{secrets.token_hex(12)}",
        ),
    }
    for field_name, (name, value) in generated.items():
        if field_name not in given:
            env[name] = made[name] = value
    if not os.environ.get("CRM_SECRET_DEMO"):
        env["CRM_SECRET_DEMO"] = made["CRM_SECRET_DEMO"] = f"crm-dev-{secrets.token_hex(12)}"
    if {"hubspot_api_url", "pipedrive_api_url"} & given:
        notes.append("crm APIs: HUBSPOT_API_URL / PIPEDRIVE_API_URL as given")
        return None
    root = f"http://127.0.0.1:{crm_port}"
    env["HUBSPOT_API_URL"] = env["PIPEDRIVE_API_URL"] = root
    env.setdefault("HUBSPOT_TOKEN", "dev-standin")
    env.setdefault("PIPEDRIVE_API_TOKEN", "dev-standin")
    notes.append(f"crm APIs: the HubSpot/Pipedrive stand-in at {root} (writes: /standin/state)")
    return root


def _setup(
    settings: Settings,
    *,
    demo: bool,
    sandbox_port: int,
    config_dir: Path,
    crm_port: int = 8791,
    web_port: int = 8000,
) -> _Setup:
    given = settings.model_fields_set
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    notes: list[str] = []
    if demo:
        ignored = given & {"database_url", "config_path", "cryptolens_api_url", "stripe_api_key"}
        if ignored:
            names = ", ".join(sorted(Settings.model_fields[n].alias or n for n in ignored))
            notes.append(f"demo: not using {names}: the demo runs on local defaults only")
        given = given - ignored - {"cryptolens_token", "stripe_webhook_secret"}
        env["STRIPE_API_KEY"] = ""  # never call Stripe for a made-up checkout session

    database_url = settings.database_url
    if "database_url" not in given:
        database_url = f"sqlite:///{Path.cwd() / 'bridge-dev.db'}"
    env["BRIDGE_DATABASE_URL"] = database_url
    notes.append(f"database: {make_url(database_url).render_as_string()}")

    if "config_path" in given and settings.config_path is not None:
        env["BRIDGE_CONFIG"] = str(settings.config_path)
        notes.append(f"config: {settings.config_path}")
    else:
        path = config_dir / "bridge-dev.toml"
        path.write_text(DEV_CONFIG, encoding="utf-8")
        env["BRIDGE_CONFIG"] = str(path)
        notes.append("config: default_template_id = 1 (set BRIDGE_CONFIG for your own)")

    sandbox_root: str | None = None
    sandbox_db: Path | None = None
    if "cryptolens_api_url" in given:
        _refuse(settings.token)  # the worker would stop on it; say so before starting
        env["CRYPTOLENS_API_URL"] = settings.cryptolens_api_url
        notes.append(f"cryptolens: {settings.cryptolens_api_url}")
    else:
        sandbox_root = f"http://127.0.0.1:{sandbox_port}"
        env["CRYPTOLENS_API_URL"] = f"{sandbox_root}/api/"
        env["CRYPTOLENS_TOKEN"] = DEFAULT_TOKEN
        if "database_url" in given:
            notes.append(f"cryptolens: the sandbox at {sandbox_root}/api/ (in memory)")
        else:
            # The bridge's file outlives this run; the sandbox's keys must too, or the
            # licenses it remembers would point at keys that no longer exist.
            sandbox_db = Path.cwd() / "bridge-dev-sandbox.db"
            notes.append(f"cryptolens: the sandbox at {sandbox_root}/api/ (state: {sandbox_db})")

    generated: str | None = None
    if "stripe_webhook_secret" in given:
        _refuse(settings.webhook_secrets)
        env["STRIPE_WEBHOOK_SECRET"] = settings.stripe_webhook_secret.get_secret_value()
        notes.append("webhook secret: STRIPE_WEBHOOK_SECRET")
    else:
        generated = f"whsec_dev_{secrets.token_hex(16)}"
        env["STRIPE_WEBHOOK_SECRET"] = generated
        notes.append(f"webhook secret: {generated} (generated for this run)")
    made: dict[str, str] = {}
    crm_root = None if demo else _setup_crms(settings, env, notes, (crm_port, web_port), made)
    crm_secrets = None if demo else made
    admin_token = _setup_admin(settings, env, notes)
    return _Setup(
        env, notes, sandbox_root, sandbox_db, generated, crm_root, crm_secrets, admin_token
    )


def _setup_admin(settings: Settings, env: dict[str, str], notes: list[str]) -> str | None:
    """The admin page on: with the user's BRIDGE_ADMIN_TOKEN, else one made for this run
    (returned, to be printed); an empty BRIDGE_ADMIN_TOKEN given on purpose keeps it off."""
    if "admin_token" in settings.model_fields_set:
        _refuse(settings.admin_token_value)  # the web would refuse it; say so first
        given = env["BRIDGE_ADMIN_TOKEN"] = settings.admin_token.get_secret_value()
        on = bool(given.strip())
        notes.append(
            "admin page: /admin/, BRIDGE_ADMIN_TOKEN" if on else "admin page: off (empty token)"
        )
        return None
    token = env["BRIDGE_ADMIN_TOKEN"] = f"admin-dev-{secrets.token_urlsafe(18)}"
    return token


def _refuse(check: Callable[[], object]) -> None:
    try:
        check()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"bad setting in the environment or .env: {exc}") from None


def _demo(
    stack: Supervisor, output: Relay, setup: _Setup, web: str, timeout: float
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
            setup = _setup(
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
            output.say(_banner(setup, web, redis_url))

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


def _banner(setup: _Setup, web: str, redis_url: str) -> str:
    secret = setup.generated_secret or '"$STRIPE_WEBHOOK_SECRET"'
    lines = [
        "",
        f"cryptolens-bridge dev is up: webhooks at {web}/webhooks/stripe",
        *(f"  {note}" for note in setup.notes),
        f"  redis: {redis_url}",
    ]
    if setup.sandbox_root is not None:
        lines.append(f"  sandbox state: {setup.sandbox_root}/sandbox/state")
    if setup.admin_token is not None:
        lines.append(f"  admin page: {web}/admin/ (token: {setup.admin_token}, made for this run)")
    lines += [
        "  try:",
        f"    cryptolens-bridge send stripe {DEMO_SAMPLE} --url {web}/webhooks/stripe \\",
        f"      --secret {secret}",
        "    then the buyer's success page (the sample's Checkout Session):",
        f"      {web}/checkout/{load_event(DEMO_SAMPLE)['data']['object']['id']}/license",
    ]
    if setup.crm_secrets is not None:
        made = setup.crm_secrets

        def value(name: str) -> str:
            return made.get(name, f'"${name}"')

        lines += [
            f"  CRM webhooks: {web}/webhooks/hubspot, {web}/webhooks/pipedrive,"
            f" {web}/webhooks/crm/demo",
            f"    HUBSPOT_CLIENT_SECRET={value('HUBSPOT_CLIENT_SECRET')} \\",
            "      cryptolens-bridge send hubspot deal.propertyChange.dealstage_closedwon"
            f" --url {web}/webhooks/hubspot",
            f"    PIPEDRIVE_WEBHOOK_USER={value('PIPEDRIVE_WEBHOOK_USER')}"
            f" PIPEDRIVE_WEBHOOK_PASSWORD={value('PIPEDRIVE_WEBHOOK_PASSWORD')} \\",
            "      cryptolens-bridge send pipedrive deal.change.won.v2"
            f" --url {web}/webhooks/pipedrive",
            f"    CRM_SECRET_DEMO={value('CRM_SECRET_DEMO')} cryptolens-bridge send crm deal.won"
            f" --url {web}/webhooks/crm/demo",
        ]
    lines += ["  Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def _demo_report(setup: _Setup, key: str, email: str) -> str:
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
