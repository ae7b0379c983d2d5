"""A HubSpot webhook body: a JSON array of up to 100 events, each read on its own.

An event that is not what HubSpot sends is set aside with its reason, so one bad event
never costs the good ones of its batch. HubSpot's docs name the type ``eventType``, its
deliveries ``subscriptionType``: both are read. Unknown keys are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_EVENTS = 100
_INT64 = 2**63 - 1


class BatchError(ValueError):
    """The body is not a batch of events at all (400)."""


@dataclass(frozen=True)
class HubSpotEvent:
    event_id: str
    type: str
    object_id: str
    occurred_at_ms: int
    raw: dict[str, Any]
    property_name: str | None = None
    property_value: str | None = None
    from_object_id: str | None = None
    to_object_id: str | None = None
    association_type: str | None = None


@dataclass(frozen=True)
class BadEvent:
    index: int
    reason: str


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _INT64:
        return None
    return str(value)


def _event(raw: Any, latest_ms: int) -> HubSpotEvent | str:
    if not isinstance(raw, dict):
        return "an event must be an object"
    event_id = _id(raw.get("eventId"))
    type_ = raw.get("subscriptionType", raw.get("eventType"))
    occurred = raw.get("occurredAt")
    if event_id is None:
        return "eventId must be a positive integer"
    if not isinstance(type_, str) or not 0 < len(type_) <= 100:
        return "subscriptionType (or eventType) must be a string"
    if isinstance(occurred, bool) or not isinstance(occurred, int) or not 0 < occurred <= _INT64:
        return "occurredAt must be unix milliseconds"
    if occurred > latest_ms:
        # A deal's changes are ordered by it: a time ahead of ours would win for ever.
        return "occurredAt is in the future"
    object_id = _id(raw.get("objectId")) or _id(raw.get("fromObjectId"))
    if object_id is None:
        return "objectId must be a positive integer"
    value = raw.get("propertyValue")
    name = raw.get("propertyName")
    association = raw.get("associationType")
    return HubSpotEvent(
        event_id=event_id,
        type=type_,
        object_id=object_id,
        occurred_at_ms=occurred,
        raw=raw,
        property_name=name if isinstance(name, str) else None,
        property_value=value if isinstance(value, str) else None,
        from_object_id=_id(raw.get("fromObjectId")),
        to_object_id=_id(raw.get("toObjectId")),
        association_type=association if isinstance(association, str) else None,
    )


def read_batch(body: Any, *, latest_ms: int) -> list[HubSpotEvent | BadEvent]:
    """The batch's events; one dated (``occurredAt``) after ``latest_ms`` is refused."""
    if not isinstance(body, list):
        raise BatchError("HubSpot sends a JSON array of events")
    if len(body) > MAX_EVENTS:
        raise BatchError(f"HubSpot sends at most {MAX_EVENTS} events a request")
    read: list[HubSpotEvent | BadEvent] = []
    for index, raw in enumerate(body):
        event = _event(raw, latest_ms)
        read.append(BadEvent(index, event) if isinstance(event, str) else event)
    return read
