"""CRM REST calls on one shared httpx client, with errors translated at this edge."""

from __future__ import annotations

from typing import Any

import httpx

from bridge.crm.errors import (
    CrmRateLimited,
    PermanentCrmError,
    TransientCrmError,
    UnknownCrmError,
)

_SAFE = frozenset({"GET", "HEAD"})


def make_client(*, base_url: str, headers: dict[str, str], timeout: float) -> httpx.AsyncClient:
    """One client per worker process and CRM: its pool is shared by every job."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        limits=httpx.Limits(max_connections=20),
        follow_redirects=False,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


async def call(
    client: httpx.AsyncClient, method: str, path: str, *, json: Any = None
) -> dict[str, Any]:
    """The JSON object the CRM answered; raises the tree in ``bridge.crm.errors``."""
    what = f"{method} {path}"
    try:
        response = await client.request(method, path, json=json)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientCrmError(f"{what}: {type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        # Sent, no complete reply: a read is simply read again, a write may have landed.
        kind = TransientCrmError if method in _SAFE else UnknownCrmError
        raise kind(f"{what}: {type(exc).__name__}") from None
    status = response.status_code
    if status == 429:
        raise CrmRateLimited(f"{what}: HTTP 429", _retry_after(response))
    if status >= 500:
        kind = TransientCrmError if method in _SAFE or status == 503 else UnknownCrmError
        raise kind(f"{what}: HTTP {status}")
    if status >= 400:
        raise PermanentCrmError(f"{what}: HTTP {status}")
    try:
        body = response.json()
    except ValueError:
        raise TransientCrmError(f"{what}: HTTP {status} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise PermanentCrmError(f"{what}: HTTP {status} with a body that is not an object")
    return body
