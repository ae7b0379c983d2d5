"""What each admin page shows: the store's reads (``bridge.store.pages``), with what is
presentation added here (plain functions: run in a thread).

Reads only. A row that does not exist is ``None`` (the route answers 404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge import registry
from bridge.store import pages
from bridge.store.db import Engine
from bridge.store.pages import Deliveries, IntentLine, LicenseDetail
from bridge.store.tables import Attempt, Intent, WebhookEvent

PAGE = pages.PAGE
# A Cryptolens key as the service writes it: four groups of five capitals.
KEY = re.compile(r"\b[A-Z]{5}(?:-[A-Z]{5}){3}\b")


@dataclass(frozen=True)
class IntentPage:
    intent: Intent
    params: dict[str, Any]
    result: Any
    attempts: list[Attempt]
    event: WebhookEvent | None
    license_ref: str  # aliases resolved
    occurred: datetime | None  # occurred_at read in its provider's unit


@dataclass(frozen=True)
class ReviewRow:
    intent: Intent
    candidates: list[str]


def status_counts(engine: Engine) -> dict[str, int]:
    return pages.status_counts(engine)


def deliveries(engine: Engine, provider: str | None, limit: int = PAGE) -> Deliveries:
    return pages.deliveries(engine, provider, limit)


def delivery(engine: Engine, event_id: int) -> tuple[WebhookEvent, list[IntentLine]] | None:
    return pages.delivery(engine, event_id)


def intents(engine: Engine, status: str | None, limit: int = PAGE) -> list[IntentLine]:
    return pages.intents(engine, status, limit)


def intent(engine: Engine, intent_id: str) -> IntentPage | None:
    found = pages.intent(engine, intent_id)
    if found is None:
        return None
    row = found.intent
    return IntentPage(
        intent=row,
        params=found.params,
        result=found.result,
        attempts=found.attempts,
        event=found.event,
        license_ref=found.license_ref,
        occurred=registry.occurred_time(row.license_ref, row.occurred_at),
    )


def license_page(engine: Engine, ref: str) -> LicenseDetail | None:
    return pages.license_detail(engine, ref)


def review(engine: Engine) -> list[ReviewRow]:
    """The needs_review queue; for a key creation, the keys its read-back named."""
    return [
        ReviewRow(i, list(dict.fromkeys(KEY.findall(i.last_error or ""))))
        for i in pages.needs_review(engine)
    ]
