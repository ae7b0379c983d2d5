"""REGISTER_EVENT: analytics with the intent id in the Metadata GetEvents finds it by."""

from __future__ import annotations

import json
from typing import Any

from bridge.cryptolens.models import TimeRange
from jobs import store
from jobs.effects.run import READ_BACK_SLACK, Run, mutate, unix


def event_metadata(intent: store.Claimed) -> str:
    """The exact Metadata string sent, also the GetEvents filter that finds it again."""
    metadata = dict(intent.params.get("metadata") or {})
    metadata["intent"] = intent.id
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


async def register_event(run: Run, license_: store.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt, intent = run.rt, run.intent
    product_id, key = license_.product_id, license_.key
    metadata = event_metadata(intent)
    method = "ai/RegisterEvent"
    pending = intent.open_attempts.get(method)
    if pending is not None:
        found = await rt.client.get_events(
            product_id=product_id,
            key=key,
            metadata=metadata,
            time=TimeRange(gte=unix(pending.sent_at) - READ_BACK_SLACK),
            limit=10,
        )
        if found:
            run.outcome.attempts[pending.id] = "applied"
            return {"event_id": found[0].id, "recovered": True}
        run.not_yet(pending, method)  # GetEvents cannot see a RegisterEvent in flight
    p = intent.params
    await mutate(
        run,
        method,
        {},
        lambda: rt.client.register_event(
            product_id=product_id,
            key=key,
            event_name=str(p["event_name"]),
            value=int(p["value"]) if p.get("value") is not None else None,
            currency=p.get("currency"),
            metadata=metadata,
        ),
        supersedes=pending.id if pending else None,
    )
    return {"registered": True}
