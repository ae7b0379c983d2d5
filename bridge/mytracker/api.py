"""myTracker's S2S import calls the worker makes: customRevenueBatch, customEventBatch.

    POST {MYTRACKER_API_URL}/v1/customRevenueBatch/?idApp=<app_id>   [item, ...]
    POST {MYTRACKER_API_URL}/v1/customEventBatch/?idApp=<app_id>     [item, ...]
    Authorization: <MYTRACKER_API_KEY>

A batch holds at most 20 items and 10 KB, and one item that breaks a validation rule
fails the whole batch (nothing of it is imported). Replies, as the reference lists them,
and what they raise:

    TrackerError
    ├── TrackerConfigError (Permanent)  403 (the key is not valid for the app), 404 (no
    │                                   such method), a missing key: a person fixes the
    │                                   configuration, then replays
    ├── TrackerRefused (Permanent)      400: bad data, empty body, bad json, bad API
    │                                   version; the reason is myTracker's ``error``
    ├── TrackerTransient (Retryable)    nothing was sent (a refused connection), 429
    └── TrackerUnknown (Unknown)        sent without a complete reply, or a 5xx: maybe
                                        imported. A revenue is sent again (myTracker keeps
                                        one per idTransaction); a custom event is not
                                        deduped, so it goes to a person

One httpx client per worker process (``jobs.runtime.Runtime.tracker``); the key is in
its default headers, never in a log line, a stored error or an attempt row.
"""

from __future__ import annotations

import json
from decimal import Decimal
from enum import StrEnum
from typing import Any

import httpx

from bridge.core.errors import BridgeError, Permanent, Retryable, Unknown
from bridge.core.settings import Settings

MAX_ITEMS = 20
MAX_BYTES = 10 * 1024
_REASON_LIMIT = 200  # of myTracker's error text kept in a message


class Kind(StrEnum):
    REVENUE = "customRevenueBatch"
    EVENT = "customEventBatch"


class TrackerError(BridgeError):
    """A myTracker import call failed; the subclasses say what to do."""


class TrackerConfigError(TrackerError, Permanent):
    pass


class TrackerRefused(TrackerError, Permanent):
    pass


class TrackerTransient(TrackerError, Retryable):
    pass


class TrackerUnknown(TrackerError, Unknown):
    pass


def make_client(settings: Settings) -> httpx.AsyncClient:
    """The worker's one client. Its timeouts are the Cryptolens client's, so a call is
    cut off within the bound a run's lease is confirmed for (``Run.send``)."""
    key = settings.mytracker_key()
    if key is None:
        raise TrackerConfigError(
            "configuration: [mytracker] app_id is set but MYTRACKER_API_KEY is not"
        )
    return httpx.AsyncClient(
        base_url=settings.mytracker_api_url.rstrip("/"),
        headers={"Authorization": key},
        timeout=httpx.Timeout(
            settings.cryptolens_read_timeout, connect=settings.cryptolens_connect_timeout
        ),
        limits=httpx.Limits(max_connections=20),
        follow_redirects=False,
    )


def _number(value: Any) -> Any:
    # "total": a JSON number; the item keeps it as a decimal string.
    return float(Decimal(value)) if isinstance(value, str) else value


def wire(item: dict[str, Any]) -> dict[str, Any]:
    """An item as sent: ``total`` as a number, unset fields left out."""
    return {k: _number(v) if k == "total" else v for k, v in item.items() if v is not None}


def encode(items: list[dict[str, Any]]) -> bytes:
    return json.dumps([wire(i) for i in items], separators=(",", ":")).encode()


def fits(items: list[dict[str, Any]]) -> bool:
    """Within one batch's limits: 20 items, 10 KB."""
    return len(items) <= MAX_ITEMS and len(encode(items)) <= MAX_BYTES


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return error[:_REASON_LIMIT]
    return response.reason_phrase or f"HTTP {response.status_code}"


async def send(
    client: httpx.AsyncClient, app_id: int, kind: Kind, items: list[dict[str, Any]]
) -> None:
    """Import ``items`` in one batch call; raises the tree above."""
    if not fits(items):  # the caller splits; this is its check
        raise ValueError(f"a batch of {len(items)} items over myTracker's limits")
    what = f"myTracker {kind.value}"
    try:
        response = await client.post(
            f"/v1/{kind.value}/",
            params={"idApp": str(app_id)},
            content=encode(items),
            headers={"Content-Type": "application/json"},
        )
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TrackerTransient(f"{what}: {type(exc).__name__}, nothing sent") from None
    except httpx.HTTPError as exc:
        raise TrackerUnknown(f"{what}: no complete reply ({type(exc).__name__})") from None
    status = response.status_code
    if status == 200:
        return
    reason = _reason(response)
    if status == 403:
        raise TrackerConfigError(
            f"configuration: myTracker refused MYTRACKER_API_KEY for app {app_id} "
            f"(403 {reason}): check the key and [mytracker] app_id, then replay"
        )
    if status == 404:
        raise TrackerConfigError(f"configuration: {what}: 404 {reason} (MYTRACKER_API_URL?)")
    if status == 429:
        raise TrackerTransient(f"{what}: 429 {reason}")
    if status >= 500:
        raise TrackerUnknown(f"{what}: {status} {reason}")
    raise TrackerRefused(f"{what}: {status} {reason}")
