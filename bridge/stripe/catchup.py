"""Catch up from Stripe's Events API: record the events the webhook never delivered.

Stripe retries a delivery for about three days; a longer outage, or an endpoint Stripe
disabled, loses those events for good. This lists them instead (``GET /v1/events``,
filtered by ``created[gte]`` and by the types the bridge handles, paged with
``starting_after`` and ``has_more``; Stripe keeps 30 days) and records each through the
same inbox as a delivery (``bridge.store.inbox.record_many``): an event already stored is
a duplicate, as a redelivery is, and one recorded here that Stripe delivers late is a
duplicate then. Nothing here decides an effect: the planner and the worker do, as for a
delivery, so a caught-up event and a delivered one are indistinguishable afterwards.

An event the planner does not understand is not stored (the webhook answers it 400 so
Stripe retries it; here the next catch-up tries it again) and is counted as refused.

Run by ``cryptolens-bridge catch-up`` (``bridge.ops.catchup``) and, with ``[stripe]
catch_up_interval_minutes``, by the worker over the last ``catch_up_hours``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import stripe
from arq.connections import ArqRedis

from bridge.core.logs import get_logger
from bridge.core.queue import enqueue
from bridge.core.settings import ConfigTables
from bridge.mytracker.config import TrackerConfig
from bridge.store import inbox, payloads
from bridge.store.db import Engine
from bridge.stripe.api import _client, _translate
from bridge.stripe.config import StripeConfig
from bridge.stripe.plan import HANDLED_TYPES, PayloadError, plan

log = get_logger(__name__)

PAGE = 100  # Stripe's largest page
#: How far back Stripe's Events API reaches.
RETENTION_DAYS = 30


@dataclass
class Summary:
    """What one catch-up found: ``recorded`` new events that implied intents,
    ``ignored`` new ones stored as implying nothing, ``duplicates`` already stored,
    ``refused`` not understood (not stored), ``intents`` the intents the new ones stored."""

    listed: int = 0
    recorded: int = 0
    ignored: int = 0
    duplicates: int = 0
    refused: int = 0
    intents: int = 0
    pages: int = 0
    new_events: list[str] = field(default_factory=list)
    enqueue_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "recorded": self.recorded,
            "ignored": self.ignored,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "intents": self.intents,
            "pages": self.pages,
            "new_events": self.new_events,
        }


def _delivery(event: dict[str, Any], config: ConfigTables) -> inbox.Delivery:
    """The event as its webhook delivery would have stored it; raises PayloadError."""
    implied = plan(event, StripeConfig.of(config), TrackerConfig.of(config))
    api_version = event.get("api_version")
    return inbox.Delivery(
        provider="stripe",
        external_id=str(event["id"]),
        event_type=str(event["type"]),
        api_version=api_version if isinstance(api_version, str) else None,
        livemode=bool(event.get("livemode")),
        payload=payloads.stored_payload(event),
        plan=implied,
    )


def _record(engine: Engine, deliveries: list[inbox.Delivery]) -> list[inbox.Recorded]:
    return inbox.record_many(engine, deliveries) if deliveries else []


async def catch_up(
    engine: Engine,
    config: ConfigTables,
    *,
    since: datetime,
    api_key: str,
    api_base: str | None,
    http_client: stripe.HTTPClient | None,
    redis: ArqRedis | None = None,
    progress: Callable[[int], None] | None = None,
    page_size: int = PAGE,
) -> Summary:
    """List Stripe's handled events created at or after ``since`` and record those not
    stored yet, page by page (each page one transaction); their new intents are queued
    on ``redis`` (when given and reachable: else the worker's relay queues them).
    ``progress(n)`` is told each page's count of events. Raises ``StripeApiError``."""
    client = _client(api_key, api_base, http_client)
    summary = Summary()
    params: dict[str, Any] = {
        "created": {"gte": int(since.timestamp())},
        "types": sorted(HANDLED_TYPES),
        "limit": page_size,
    }
    while True:
        try:
            page = await client.v1.events.list_async(params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            _translate(exc, api_key)
        # for_json: the library's Decimals (``*_decimal`` fields) back to Stripe's strings.
        listing = page.to_dict(for_json=True)
        events = [e for e in listing.get("data") or [] if isinstance(e, dict)]
        summary.pages += 1
        summary.listed += len(events)
        deliveries: list[inbox.Delivery] = []
        for event in events:
            if event.get("type") not in HANDLED_TYPES:
                continue  # the filter is Stripe's; this is ours
            try:
                deliveries.append(_delivery(event, config))
            except PayloadError as exc:
                summary.refused += 1
                log.warning("stripe event not understood", event_id=event.get("id"), error=str(exc))
        recorded = await asyncio.to_thread(_record, engine, deliveries)
        wake: list[str] = []
        for delivery, outcome in zip(deliveries, recorded, strict=True):
            if outcome.duplicate:
                summary.duplicates += 1
                continue
            summary.new_events.append(delivery.external_id)
            if delivery.plan.ignored is not None:
                summary.ignored += 1
            else:
                summary.recorded += 1
            summary.intents += len(outcome.new_intents)
            wake += [*outcome.new_intents, *outcome.hinted]
        if wake and redis is not None:
            await _enqueue(redis, wake, summary)
        if progress is not None:
            progress(len(events))
        if not listing.get("has_more") or not events:
            return summary
        params = {**params, "starting_after": events[-1]["id"]}


async def _enqueue(redis: ArqRedis, intent_ids: list[str], summary: Summary) -> None:
    try:
        await asyncio.wait_for(enqueue(redis, intent_ids), 5)
    except Exception as exc:  # stored: the worker's relay queues pending intents anyway
        summary.enqueue_error = type(exc).__name__
        log.warning("catch-up could not queue its intents: the relay will", error=repr(exc))
