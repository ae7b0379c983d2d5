"""What ``cryptolens-bridge dev`` (``devtools.dev``) gives its children and tells the
user: the environment filled in on local defaults (a SQLite file, the sandbox, generated
secrets, a default config, the CRM stand-in, the admin page's token), and the banner that
says what was chosen and how to try it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from bridge.core.errors import ConfigError
from bridge.core.settings import Settings
from bridge.sandbox.config import DEFAULT_TOKEN
from devtools.send import load_event

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


@dataclass(frozen=True)
class Setup:
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


def make_setup(
    settings: Settings,
    *,
    demo: bool,
    sandbox_port: int,
    config_dir: Path,
    crm_port: int = 8791,
    web_port: int = 8000,
) -> Setup:
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
        refuse(settings.token)  # the worker would stop on it; say so before starting
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
        refuse(settings.webhook_secrets)
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
    return Setup(
        env, notes, sandbox_root, sandbox_db, generated, crm_root, crm_secrets, admin_token
    )


def _setup_admin(settings: Settings, env: dict[str, str], notes: list[str]) -> str | None:
    """The admin page on: with the user's BRIDGE_ADMIN_TOKEN, else one made for this run
    (returned, to be printed); an empty BRIDGE_ADMIN_TOKEN given on purpose keeps it off."""
    if "admin_token" in settings.model_fields_set:
        refuse(settings.admin_token_value)  # the web would refuse it; say so first
        given = env["BRIDGE_ADMIN_TOKEN"] = settings.admin_token.get_secret_value()
        on = bool(given.strip())
        notes.append(
            "admin page: /admin/, BRIDGE_ADMIN_TOKEN" if on else "admin page: off (empty token)"
        )
        return None
    token = env["BRIDGE_ADMIN_TOKEN"] = f"admin-dev-{secrets.token_urlsafe(18)}"
    return token


def refuse(check: Callable[[], object]) -> None:
    try:
        check()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def banner(setup: Setup, web: str, redis_url: str) -> str:
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
