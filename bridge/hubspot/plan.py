"""HubSpot events as deal events (``bridge.crm.deals``), then intents.

    deal.propertyChange dealstage -> a won stage    won   (the worker fetches the deal)
                                  -> a lost stage   lost
    deal.deletion                                   deleted
    deal.associationChange deal <-> contact/company customer_changed (fetched)
    anything else                                   stored, ignored, with the reason

HubSpot's events name the stage, not the pipeline; stage ids are unique in a portal, so
a stage is won (or lost) when any configured pipeline lists it, and the worker reads the
deal's pipeline for its template. A contact's own change (its email) reaches the key
when the deal's association changes; it is stored and ignored here.
"""

from __future__ import annotations

from bridge.core.intents import Plan
from bridge.crm.deals import DealEvent, Kind
from bridge.crm.deals import plan as plan_deal
from bridge.hubspot.config import HubSpotConfig
from bridge.hubspot.payload import HubSpotEvent
from bridge.mytracker.config import OFF, TrackerConfig

SOURCE = "hubspot"
_ASSOCIATIONS = {"DEAL_TO_CONTACT", "DEAL_TO_COMPANY", "CONTACT_TO_DEAL", "COMPANY_TO_DEAL"}


def _deal_event(event: HubSpotEvent, config: HubSpotConfig) -> DealEvent | str:
    kind: Kind
    deal_id = event.object_id
    if event.type == "deal.propertyChange":
        if event.property_name != "dealstage":
            return f"deal property {event.property_name!r} does not concern the key"
        stage = event.property_value
        if stage in config.stages("won"):
            kind = Kind.WON
        elif stage in config.stages("lost"):
            kind = Kind.LOST
        else:
            return f"deal stage {stage!r} is neither a won nor a lost stage"
    elif event.type == "deal.deletion":
        kind = Kind.DELETED
    elif event.type == "deal.associationChange":
        association = (event.association_type or "").upper()
        if association not in _ASSOCIATIONS:
            return f"association {event.association_type!r} does not concern the buyer"
        deal_id = (
            event.from_object_id if association.startswith("DEAL_") else event.to_object_id
        ) or deal_id
        kind = Kind.CUSTOMER_CHANGED
    else:
        return f"{event.type} does not concern a deal's key"
    return DealEvent(
        source=SOURCE,
        deal_id=deal_id,
        kind=kind,
        occurred_at_ms=event.occurred_at_ms,
        lost_policy=config.lost_policy,
        fetch=True,
        write_back=bool(config.key_property),
    )


def plan(event: HubSpotEvent, config: HubSpotConfig, tracker: TrackerConfig = OFF) -> Plan:
    deal = _deal_event(event, config)
    if isinstance(deal, str):
        return Plan(ignored=deal)
    return plan_deal(deal, tracker)
