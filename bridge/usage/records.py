"""One usage record as the vendor's backend posts it, and what became of it.

A record is checked on its own: a bad one is refused with its reason and never stops
the good ones of its batch. What it must be::

    key              the license key, 1-100 printable characters without spaces
    product_id       a product configured in [[usage.product]]
    quantity         a positive integer (at most 2**31 - 1: RecordUsage's Amount)
    idempotency_key  1-255 printable characters: the same key is the same record, forever
                     (reused for another product, key, meter or quantity: a conflict)
    timestamp        ISO 8601 with a zone ("2026-12-01T14:00:00Z"): when it was used
    meter            optional: a name of 1-64 letters, digits, ``_ . -``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.usage.config import METER, UsageConfig

MAX_QUANTITY = 2**31 - 1
_KEY = re.compile(r"[\x21-\x7e]{1,100}")
_IDEMPOTENCY = re.compile(r"[\x20-\x7e]{1,255}")
FIELDS = frozenset({"key", "product_id", "quantity", "idempotency_key", "timestamp", "meter"})

Outcome = Literal["accepted", "duplicate", "conflict", "refused"]


@dataclass(frozen=True, slots=True)
class UsageIn:
    """A record that passed every check, ready for the ledger."""

    idempotency_key: str
    product_id: int
    key: str
    meter: str  # "" when none was given
    quantity: int
    occurred_at: datetime
    source: str = "api"


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one posted record (the 202's ``results``, in the posted order)."""

    index: int
    outcome: Outcome
    idempotency_key: str | None = None
    aggregate: str | None = None
    reason: str | None = None

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"index": self.index, "outcome": self.outcome}
        if self.idempotency_key is not None:
            body["idempotency_key"] = self.idempotency_key
        if self.aggregate is not None:
            body["aggregate"] = self.aggregate
        if self.reason is not None:
            body["reason"] = self.reason
        return body


class Bad(ValueError):
    """A record's reason to be refused, phrased for the sender."""


def _int(value: Any, name: str) -> int:
    # JSON true is an int in Python, and 3.0 is not a count of units.
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(f"{name} must be an integer")
    return value


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise Bad("timestamp must be an ISO 8601 string with a zone")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Bad("timestamp is not ISO 8601 (e.g. 2026-12-01T14:00:00Z)") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise Bad("timestamp has no zone (add Z or +hh:mm)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise Bad("timestamp is out of range") from None


def parse(raw: Any, config: UsageConfig) -> UsageIn:
    """The record, checked; raises :class:`Bad` with the first reason it is refused."""
    if not isinstance(raw, dict):
        raise Bad("a record must be a JSON object")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise Bad(f"unknown field(s): {', '.join(unknown)}")
    for name in ("key", "product_id", "quantity", "idempotency_key", "timestamp"):
        if raw.get(name) is None:
            raise Bad(f"{name} is required")
    idempotency_key = raw["idempotency_key"]
    if not isinstance(idempotency_key, str) or not _IDEMPOTENCY.fullmatch(idempotency_key):
        raise Bad("idempotency_key must be 1-255 printable ASCII characters")
    key = raw["key"]
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise Bad("key must be 1-100 printable ASCII characters without spaces")
    product_id = _int(raw["product_id"], "product_id")
    product = config.product_for(product_id)
    if product is None:
        raise Bad(f"product {product_id} bills no usage here (no [[usage.product]])")
    quantity = _int(raw["quantity"], "quantity")
    if not 0 < quantity <= MAX_QUANTITY:
        raise Bad(f"quantity must be a positive integer up to {MAX_QUANTITY}")
    meter = raw.get("meter") or ""
    if not isinstance(meter, str) or (meter and not METER.fullmatch(meter)):
        raise Bad("meter must be 1-64 letters, digits, '_', '.' or '-'")
    if product.sink == "stripe_meter" and product.event_name(meter) is None:
        raise Bad(f"product {product_id} has no Stripe meter event name for meter {meter!r}")
    return UsageIn(idempotency_key, product_id, key, meter, quantity, _timestamp(raw["timestamp"]))
