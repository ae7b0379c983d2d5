"""LINK_CUSTOMER and a new key's buyer: whether the key is linked to a customer, which,
and what AddCustomer sends for a buyer no customer has."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NewCustomer:
    """AddCustomer's fields for a buyer (Cryptolens takes at most 100 characters each)."""

    name: str
    email: str
    company_name: str

    @classmethod
    def of(cls, email: str, name: str | None, company: str | None) -> NewCustomer:
        return cls((name or email)[:100], email[:100], (company or name or "")[:100])


@dataclass(frozen=True)
class Link:
    """What a LINK_CUSTOMER does: ``result`` set, nothing (the intent's result); else
    ``customer_id`` set, the key is relinked to it unless Cryptolens links it already (a
    repair); else the buyer's customer, found by ``email`` or added, is linked."""

    result: dict[str, Any] | None = None
    customer_id: int | None = None
    email: str | None = None
    buyer: Mapping[str, Any] = field(default_factory=dict)


def buyer_email(params: Mapping[str, Any]) -> str | None:
    """The buyer's email an intent names, if any."""
    email = (params.get("customer") or {}).get("email")
    return str(email) if email else None


def link(
    params: Mapping[str, Any], *, occurred_at: int, linked: int | None, decided_at: int | None
) -> Link:
    """The link for an intent's ``params``, given the customer the license is linked to
    (``linked``, the bridge's record) and its last customer decision (``decided_at``).

    A repair from ``reconcile --repair`` names the customer and is dated like the
    decision it restores: a later one (a CRM contact change) that ran meanwhile wins.
    """
    expected = params.get("customer_id")
    if expected is not None:
        if decided_at is not None and occurred_at < decided_at:
            return Link(result={"superseded_by": decided_at})
        return Link(customer_id=int(expected))
    if linked is not None:
        return Link(result={"customer_id": linked, "already_linked": True})
    email = buyer_email(params)
    if email is None:
        return Link(result={"customer_id": None, "no_buyer": True})
    return Link(email=email, buyer=params.get("customer") or {})
