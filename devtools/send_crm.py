"""``cryptolens-bridge send hubspot|pipedrive|crm <fixture>``: sign a CRM webhook the way
its sender does and post it to the bridge.

The bundled samples are the vendors' published payloads (``bridge/hubspot/samples``,
``bridge/pipedrive/samples``) and the generic contract's (``bridge/crm/samples``). By
default each is sent as a new delivery, dated now: fresh event ids (a resend with the
same id is, rightly, a duplicate) and the change's time set to now, so that a later
change you send is newer than an earlier one.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

import bridge
from bridge.core.signing import sign
from bridge.hubspot.signature import sign_v3
from bridge.ops.terminal import say

_ROOT = Path(bridge.__file__).parent
SAMPLES = {
    "hubspot": _ROOT / "hubspot" / "samples",
    "pipedrive": _ROOT / "pipedrive" / "samples",
    "crm": _ROOT / "crm" / "samples",
}
BASE_URL = "http://127.0.0.1:8000"


def sample_names(source: str) -> list[str]:
    return sorted(p.stem for p in SAMPLES[source].glob("*.json"))


def load(source: str, fixture: str) -> Any:
    path = Path(fixture)
    if not path.is_file():
        path = SAMPLES[source] / f"{fixture.removesuffix('.json')}.json"
        if "/" in fixture or not path.is_file():
            raise click.ClickException(
                f"no file or bundled {source} sample named {fixture!r}; the samples are:\n  "
                + "\n  ".join(sample_names(source))
            )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise click.ClickException(f"{path} is not a readable JSON file: {exc}") from None


def _first_secret(value: str | None, name: str) -> str:
    found = next((s.strip() for s in (value or "").split(",") if s.strip()), None)
    if found is None:
        raise click.UsageError(
            f"no secret: pass --secret or set {name} (`cryptolens-bridge dev` prints it)"
        )
    return found


def _send(url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10)
    except httpx.ConnectError:
        raise click.ClickException(
            f"cannot connect to {url}: is the bridge running? (`cryptolens-bridge dev`)"
        ) from None
    except httpx.HTTPError as exc:
        raise click.ClickException(f"posting to {url} failed: {exc!r}") from None
    say(f"{response.status_code} {response.text}")  # the server's words, escaped
    if not response.is_success:
        raise SystemExit(1)


_KEEP = click.option(
    "--keep/--now",
    default=False,
    help="Send the sample's ids and times as they are, or as a new delivery dated now.",
)


@click.command("hubspot", epilog="Bundled samples: " + ", ".join(sample_names("hubspot")))
@click.argument("fixture")
@click.option("--url", default=f"{BASE_URL}/webhooks/hubspot", show_default=True)
@click.option("--secret", envvar="HUBSPOT_CLIENT_SECRET", help="Default: HUBSPOT_CLIENT_SECRET.")
@click.option(
    "--signed-url",
    help="The URL to sign. Default: BRIDGE_PUBLIC_URL + /webhooks/hubspot, else --url.",
)
@_KEEP
def hubspot_command(
    fixture: str, url: str, secret: str | None, signed_url: str | None, keep: bool
) -> None:
    """Post FIXTURE (a JSON array of events) signed with HubSpot's v3 signature."""
    client_secret = _first_secret(secret, "HUBSPOT_CLIENT_SECRET")
    events = load("hubspot", fixture)
    if not isinstance(events, list):
        raise click.ClickException("a HubSpot webhook body is a JSON array of events")
    now_ms = int(time.time() * 1000)
    if not keep:
        for i, event in enumerate(events):
            if isinstance(event, dict):
                event["eventId"] = secrets.randbelow(10**12) + 1
                event["occurredAt"] = now_ms + i
    body = json.dumps(events).encode()
    public = os.environ.get("BRIDGE_PUBLIC_URL", "").strip().rstrip("/")
    signed = signed_url or (f"{public}/webhooks/hubspot" if public else url)
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": str(now_ms),
        "X-HubSpot-Signature-v3": sign_v3(client_secret, "POST", signed, body, now_ms),
    }
    _send(url, body, headers)


@click.command("pipedrive", epilog="Bundled samples: " + ", ".join(sample_names("pipedrive")))
@click.argument("fixture")
@click.option("--url", default=f"{BASE_URL}/webhooks/pipedrive", show_default=True)
@click.option("--user", envvar="PIPEDRIVE_WEBHOOK_USER", help="Default: PIPEDRIVE_WEBHOOK_USER.")
@click.option(
    "--password", envvar="PIPEDRIVE_WEBHOOK_PASSWORD", help="Default: PIPEDRIVE_WEBHOOK_PASSWORD."
)
@_KEEP
def pipedrive_command(
    fixture: str, url: str, user: str | None, password: str | None, keep: bool
) -> None:
    """Post FIXTURE (a webhooks v2 delivery) with the webhook's HTTP Basic credentials."""
    if not user or not password:
        raise click.UsageError("set PIPEDRIVE_WEBHOOK_USER and PIPEDRIVE_WEBHOOK_PASSWORD")
    delivery = load("pipedrive", fixture)
    if not isinstance(delivery, dict) or not isinstance(delivery.get("meta"), dict):
        raise click.ClickException("a Pipedrive delivery is an object with meta and data")
    if not keep:
        delivery["meta"]["id"] = str(uuid.uuid4())
        delivery["meta"]["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {token}"}
    _send(url, json.dumps(delivery).encode(), headers)


@click.command("crm", epilog="Bundled samples: " + ", ".join(sample_names("crm")))
@click.argument("fixture")
@click.option("--source", default="demo", show_default=True, help="The [crm.<source>] name.")
@click.option("--url", help=f"Default: {BASE_URL}/webhooks/crm/<source>.")
@click.option("--secret", help="Default: CRM_SECRET_<SOURCE>.")
@_KEEP
def crm_command(fixture: str, source: str, url: str | None, secret: str | None, keep: bool) -> None:
    """Post FIXTURE (a deal event of the generic contract) with X-Bridge-Signature."""
    name = f"CRM_SECRET_{source.upper()}"
    signing = _first_secret(secret or os.environ.get(name), name)
    event = load("crm", fixture)
    if not isinstance(event, dict):
        raise click.ClickException("a contract body is a JSON object")
    if not keep:
        event["id"] = f"evt-send-{secrets.token_hex(8)}"
        event["occurred_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "X-Bridge-Signature": sign(body, signing)}
    _send(url or f"{BASE_URL}/webhooks/crm/{source}", body, headers)
