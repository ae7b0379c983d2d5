"""Pipedrive deliveries as deal events (``bridge.crm.deals``), then intents.

    deal change, status becomes won (or a deal created won)   won
    deal change, status becomes lost                          lost
    deal delete                                               deleted
    deal change of person_id or org_id                        customer_changed
    anything else                                             stored, ignored

The pipeline (``data.pipeline_id``) names the template, the deal's value and currency
are the ``deal_won`` amount; the person and organization are fetched by the worker.
A delivery the bridge does not understand is still stored (ignored, with the reason):
Pipedrive disables a webhook that keeps failing, and a retry could not mend it.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.core.intents import Plan
from bridge.core.money import major_to_cryptolens_value
from bridge.crm.deals import DealEvent, Kind
from bridge.crm.deals import plan as plan_deal
from bridge.mytracker.config import OFF, TrackerConfig
from bridge.pipedrive.config import PipedriveConfig
from bridge.pipedrive.payload import Delivery

SOURCE = "pipedrive"
_DEAL_ID = re.compile(r"[0-9]{1,18}")


def deal_id_of(entity_id: str) -> str | None:
    """The deal id as Pipedrive's API reads it ("007" is deal 7), or None: the id names
    the license, so two spellings of one deal must not name two licenses."""
    if not _DEAL_ID.fullmatch(entity_id) or int(entity_id) == 0:
        return None
    return str(int(entity_id))


def _amount(data: dict[str, Any]) -> tuple[Decimal | None, str | None]:
    value, currency = data.get("value"), data.get("currency")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None, None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None, None
    try:
        major_to_cryptolens_value(amount, str(currency))  # a usable amount and code
    except ValueError:
        return None, None
    return amount, str(currency).upper()


def _kinds(delivery: Delivery) -> list[Kind]:
    if delivery.action == "delete":
        return [Kind.DELETED]
    data, previous = delivery.data or {}, delivery.previous or {}
    status = data.get("status")
    kinds: list[Kind] = []
    became = delivery.action == "create" or (
        "status" in previous and previous.get("status") != status
    )
    if became and status == "won":
        kinds.append(Kind.WON)
    elif became and status == "lost":
        kinds.append(Kind.LOST)
    if delivery.action == "change" and ("person_id" in previous or "org_id" in previous):
        kinds.append(Kind.CUSTOMER_CHANGED)
    return kinds


def plan(
    delivery: Delivery,
    config: PipedriveConfig,
    tracker: TrackerConfig = OFF,
    *,
    latest_ms: int | None = None,
) -> Plan:
    """The delivery's intents; one dated (``meta.timestamp``) after ``latest_ms`` (our
    clock plus the signature tolerance) is ignored: it would order after every real
    change of the deal, for ever."""
    if delivery.entity != "deal":
        return Plan(ignored=f"{delivery.type}: only deals concern keys")
    deal_id = deal_id_of(delivery.entity_id)
    if deal_id is None:
        return Plan(ignored=f"meta.entity_id {delivery.entity_id!r} is not a deal id")
    if delivery.occurred_at_ms <= 0:
        return Plan(ignored="no meta.timestamp to order the change by")
    if latest_ms is not None and delivery.occurred_at_ms > latest_ms:
        return Plan(ignored="meta.timestamp is in the future")
    kinds = _kinds(delivery)
    if not kinds:
        return Plan(ignored=f"{delivery.type} does not concern the deal's key")
    data = delivery.data or {}
    pipeline = data.get("pipeline_id")
    amount, currency = _amount(data)
    intents = []
    for kind in kinds:
        event = DealEvent(
            source=SOURCE,
            deal_id=deal_id,
            kind=kind,
            occurred_at_ms=delivery.occurred_at_ms,
            lost_policy=config.lost_policy,
            template=config.template_for(pipeline if isinstance(pipeline, int) else None),
            amount=amount,
            currency=currency,
            fetch=True,
            write_back=config.key_field is not None,
        )
        intents += plan_deal(event, tracker).intents
    if not intents:
        return Plan(ignored=f"{delivery.type}: lost_policy is none")
    return Plan(intents=intents)
