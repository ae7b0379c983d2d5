"""``cryptolens-bridge send stripe <fixture>``: sign a Stripe event and post it to the bridge
(``send hubspot|pipedrive|crm``: ``devtools.send_crm``).

The bundled samples (``bridge/stripe/samples/*.json``) are copies of the vendor fixtures in
``tests/fixtures/stripe``: Stripe's own published objects in 2024-06-20 event envelopes.
They are dated 2023-2024, and a subscription timeline in the past would mean expired
keys, so by default the timestamps are shifted to start now and the event gets a fresh
id (a resend with the same id is, correctly, a duplicate the bridge ignores).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

import bridge
from bridge.core.signing import sign
from bridge.ops.terminal import say
from devtools import send_crm

SAMPLES = Path(bridge.__file__).parent / "stripe" / "samples"
DEFAULT_URL = "http://127.0.0.1:8000/webhooks/stripe"

# Unix times a payload may plausibly carry (2017-07 .. 2033-05). Stripe-mock's placeholder
# 1234567890 and amounts below 1.5 billion cents stay as they are.
_EARLIEST = 1_500_000_000
_LATEST = 2_000_000_000


class SampleError(click.ClickException):
    """The fixture is neither a readable JSON event nor a bundled sample."""


def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.json"))


def load_event(fixture: str) -> dict[str, Any]:
    """The event in the file at ``fixture``, or in the bundled sample of that name."""
    path = Path(fixture)
    if not path.is_file():
        path = SAMPLES / f"{fixture.removesuffix('.json')}.json"
        if "/" in fixture or not path.is_file():
            raise SampleError(
                f"no file or bundled sample named {fixture!r}; the samples are:\n  "
                + "\n  ".join(sample_names())
            )
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SampleError(f"{path} is not a readable JSON file: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise SampleError(f"{path} is not a Stripe event (no 'type')")
    return event


def _is_time(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _EARLIEST <= value < _LATEST


def _times(value: Any) -> Iterator[int]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _times(item)
    elif isinstance(value, list):
        for item in value:
            yield from _times(item)
    elif _is_time(value):
        yield value


def _moved(value: Any, delta: int) -> Any:
    if isinstance(value, dict):
        return {k: _moved(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, delta) for v in value]
    return value + delta if _is_time(value) else value


def shift_to(event: dict[str, Any], now: int) -> dict[str, Any]:
    """The event with its earliest timestamp at ``now`` and every other one moved alike.

    The subscription samples all start at the same instant, so each one sent this way
    lands on one timeline starting now. A placeholder envelope ``created`` becomes ``now``.
    """
    earliest = min(_times(event), default=now)
    moved: dict[str, Any] = _moved(event, now - earliest)
    if not _is_time(moved.get("created")):
        moved["created"] = now
    return moved


def fresh_id() -> str:
    return f"evt_send_{secrets.token_hex(8)}"


def post(client: httpx.Client, url: str, event: dict[str, Any], secret: str) -> httpx.Response:
    """POST ``event`` as Stripe would: the exact bytes signed, the signature in a header."""
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)}
    return client.post(url, content=body, headers=headers)


@click.group("send")
def command() -> None:
    """Sign a webhook payload and post it to the bridge."""


@command.command("stripe", epilog="Bundled samples: " + ", ".join(sample_names()))
@click.argument("fixture")
@click.option("--url", default=DEFAULT_URL, show_default=True, help="The bridge's endpoint.")
@click.option(
    "--secret",
    envvar="STRIPE_WEBHOOK_SECRET",
    help="Signing secret (default: STRIPE_WEBHOOK_SECRET; the first of a comma list).",
)
@click.option(
    "--now/--keep-times",
    default=True,
    show_default=True,
    help="Shift the timestamps so the timeline starts now, or send them as they are.",
)
@click.option("--same-id", is_flag=True, help="Keep the event id (a resend is a duplicate).")
@click.option(
    "--times",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Send N copies, each with its own id unless --same-id.",
)
def stripe_command(
    fixture: str, url: str, secret: str | None, now: bool, same_id: bool, times: int
) -> None:
    """Post FIXTURE (a JSON file or a bundled sample name) as a signed Stripe event."""
    signing = next((s.strip() for s in (secret or "").split(",") if s.strip()), None)
    if signing is None:
        raise click.UsageError(
            "no signing secret: pass --secret or set STRIPE_WEBHOOK_SECRET "
            "(`cryptolens-bridge dev` prints the one it uses)"
        )
    event = load_event(fixture)
    if now:
        event = shift_to(event, int(time.time()))
    failed = 0
    with httpx.Client(timeout=10) as client:
        for _ in range(times):
            sent = event if same_id else {**event, "id": fresh_id()}
            try:
                response = post(client, url, sent, signing)
            except httpx.ConnectError:
                raise click.ClickException(
                    f"cannot connect to {url}: is the bridge running? "
                    "(`cryptolens-bridge dev` or `cryptolens-bridge serve`)"
                ) from None
            except httpx.HTTPError as exc:
                raise click.ClickException(f"posting to {url} failed: {exc!r}") from None
            # The answer is whatever the URL's server says: escaped for the terminal.
            say(f"{sent['type']} {sent['id']}: {response.status_code} {response.text}")
            failed += not response.is_success
    if failed:
        raise SystemExit(1)


for _crm in (send_crm.hubspot_command, send_crm.pipedrive_command, send_crm.crm_command):
    command.add_command(_crm)
