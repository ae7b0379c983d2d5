"""A Pipedrive webhooks v2 delivery: ``meta`` (action, entity, entity_id, the delivery's
``id``, timestamp, attempt), ``data`` (the object now; null on delete) and ``previous``
(the fields that changed, as they were)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Webhooks v1 named the actions added/updated/deleted; v2 create/change/delete.
_ACTIONS = {
    "create": "create",
    "added": "create",
    "change": "change",
    "updated": "change",
    "delete": "delete",
    "deleted": "delete",
}


class NotADelivery(ValueError):
    """The body is not a Pipedrive webhook delivery at all (400)."""


@dataclass(frozen=True)
class Delivery:
    id: str
    action: str
    entity: str
    entity_id: str
    occurred_at_ms: int
    data: dict[str, Any] | None
    previous: dict[str, Any] | None

    @property
    def type(self) -> str:
        return f"{self.entity}.{self.action}"


def _millis(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(at.timestamp() * 1000) if at.tzinfo is not None else None


def read(body: Any) -> Delivery:
    if not isinstance(body, dict) or not isinstance(body.get("meta"), dict):
        raise NotADelivery("a Pipedrive delivery is an object with meta, data and previous")
    meta = body["meta"]
    delivery_id = meta.get("id")
    if not isinstance(delivery_id, str) or not 0 < len(delivery_id) <= 200:
        raise NotADelivery("meta.id (the delivery's id) must be a string")
    data = body.get("data") if isinstance(body.get("data"), dict) else None
    previous = body.get("previous") if isinstance(body.get("previous"), dict) else None
    entity_id = meta.get("entity_id", (data or {}).get("id"))
    at = _millis(meta.get("timestamp")) or _millis((data or {}).get("update_time")) or 0
    return Delivery(
        id=delivery_id,
        action=_ACTIONS.get(str(meta.get("action")), str(meta.get("action"))),
        entity=str(meta.get("entity", "")),
        entity_id=str(entity_id) if entity_id is not None else "",
        occurred_at_ms=at,
        data=data,
        previous=previous,
    )
