"""REGISTER_EVENT: what a RegisterEvent sends for an intent, its Metadata carrying the
intent id (the exact string GetEvents finds it again by)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    name: str
    value: int | None
    currency: str | None
    metadata: str


def metadata(intent_id: str, params: Mapping[str, Any]) -> str:
    """The exact Metadata string sent, also the GetEvents filter that finds it again."""
    found = dict(params.get("metadata") or {})
    found["intent"] = intent_id
    return json.dumps(found, sort_keys=True, separators=(",", ":"))


def event(intent_id: str, params: Mapping[str, Any]) -> Event:
    """The event an intent's params name (value in minor units, when there is one)."""
    value = params.get("value")
    return Event(
        name=str(params["event_name"]),
        value=int(value) if value is not None else None,
        currency=params.get("currency"),
        metadata=metadata(intent_id, params),
    )
