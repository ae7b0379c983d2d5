"""The generic signed contract: one deal event as JSON, for CRMs without a bridge of
their own (Salesforce flows, Zoho, Close, in-house CRMs). See docs/crm-contract.md.

    {"id": "evt-1", "occurred_at": "2026-12-01T10:00:00+01:00",
     "type": "deal.won" | "deal.lost" | "deal.customer_changed",
     "deal": {"id": "D-42", "amount": 25.30, "currency": "EUR",
              "product": "pro" | "template_id": 3},
     "customer": {"email": "buyer@example.com", "name": "Ada", "company": "ACME"}}
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.core.money import currency_code
from bridge.core.providers import Buyer
from bridge.crm.config import CrmSourceConfig
from bridge.crm.deals import DealEvent, Kind

TYPES = {
    "deal.won": Kind.WON,
    "deal.lost": Kind.LOST,
    "deal.customer_changed": Kind.CUSTOMER_CHANGED,
}
_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces: it goes into ids
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}")
# Unix milliseconds a deal event may carry (2000 .. 2100).
_EARLIEST_MS, _LATEST_MS = 946_684_800_000, 4_102_444_800_000


class ContractError(ValueError):
    """The body is signed but is not a deal event of the contract (400, nothing stored)."""


def _text(
    obj: dict[str, Any], name: str, *, required: bool = False, limit: int = 200
) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        if required:
            raise ContractError(f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ContractError(f"{name} must be a string of at most {limit} characters")
    return value


def _deal_id(deal: dict[str, Any]) -> str:
    raw = deal.get("id")
    value = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ContractError("deal.id must be a string (or integer) of printable characters")
    return value


def _amount(deal: dict[str, Any]) -> tuple[Decimal | None, str | None]:
    raw = deal.get("amount")
    if raw is None:
        return None, None
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal | str):
        raise ContractError("deal.amount must be a number or a decimal string (25.30)")
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ContractError(f"deal.amount {raw!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal(10) ** 15:
        raise ContractError(f"deal.amount {raw!r} is out of range")
    try:
        currency = currency_code(deal.get("currency"))
    except ValueError:
        raise ContractError("deal.currency must be an ISO 4217 code (EUR)") from None
    return amount, currency


def _occurred_at_ms(value: Any, latest_ms: int) -> int:
    if not isinstance(value, str):
        raise ContractError("occurred_at must be an ISO 8601 time with a zone")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ContractError(f"occurred_at {value!r} is not ISO 8601") from None
    if at.tzinfo is None:
        raise ContractError("occurred_at needs a zone (Z or +01:00): without one it is ambiguous")
    try:
        ms = int(at.timestamp() * 1000)
    except (OverflowError, ValueError):  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ContractError(f"occurred_at {value!r} is out of range") from None
    if not _EARLIEST_MS <= ms < _LATEST_MS:
        raise ContractError(f"occurred_at {value!r} is out of range")
    if ms > latest_ms:
        # A deal's changes are ordered by it: a time ahead of ours would win for ever.
        raise ContractError(f"occurred_at {value!r} is in the future")
    return ms


def _buyer(body: dict[str, Any], kind: Kind) -> Buyer | None:
    customer = body.get("customer")
    if customer is None:
        if kind is Kind.CUSTOMER_CHANGED:
            raise ContractError("deal.customer_changed needs customer.email")
        return None
    if not isinstance(customer, dict):
        raise ContractError("customer must be an object")
    email = _text(customer, "email", required=kind is Kind.CUSTOMER_CHANGED, limit=254)
    if email is not None and not _EMAIL.fullmatch(email):
        raise ContractError("customer.email is not an email address")
    return Buyer(email=email, name=_text(customer, "name"), company=_text(customer, "company"))


def read(
    body: Any, source: str, config: CrmSourceConfig, *, latest_ms: int
) -> tuple[str, str, DealEvent]:
    """The delivery id, the type and the deal event in a contract body; an event dated
    after ``latest_ms`` (our clock plus the signature tolerance) is refused."""
    if not isinstance(body, dict):
        raise ContractError("the body must be a JSON object")
    event_id = body.get("id")
    if not isinstance(event_id, str) or not _ID.fullmatch(event_id):
        raise ContractError("id must be a string of 1-200 printable characters")
    type_ = body.get("type")
    kind = TYPES.get(type_) if isinstance(type_, str) else None
    if kind is None or not isinstance(type_, str):
        raise ContractError(f"type must be one of {', '.join(TYPES)}")
    deal = body.get("deal")
    if not isinstance(deal, dict):
        raise ContractError("deal must be an object")
    template_raw = deal.get("template_id")
    if template_raw is not None and (
        isinstance(template_raw, bool) or not isinstance(template_raw, int) or template_raw <= 0
    ):
        raise ContractError("deal.template_id must be a positive integer")
    amount, currency = _amount(deal)
    event = DealEvent(
        source=f"crm:{source}",
        deal_id=_deal_id(deal),
        kind=kind,
        occurred_at_ms=_occurred_at_ms(body.get("occurred_at"), latest_ms),
        lost_policy=config.lost_policy,
        template=config.template_for(template_raw, _text(deal, "product")),
        amount=amount,
        currency=currency,
        buyer=_buyer(body, kind),
    )
    return event_id, type_, event
