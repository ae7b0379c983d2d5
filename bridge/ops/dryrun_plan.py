"""What a dry run says (``bridge.ops.dryrun``): the calls, the key's state, notes; and the
buyer's customer as the worker finds it (by email, else AddCustomer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.cryptolens import CryptolensClient
from bridge.rules.customers import NewCustomer


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    why: str

    def line(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.method}({args})  # {self.why}"


@dataclass
class DryRun:
    intent_id: str
    effect: str
    status: str
    license_ref: str
    key: str | None
    product_id: int | None
    state: dict[str, Any] = field(default_factory=dict)  # the key as Cryptolens has it now
    calls: list[Call] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "intent": self.intent_id,
            "effect": self.effect,
            "status": self.status,
            "license": self.license_ref,
            "key": self.key,
            "product_id": self.product_id,
            "state": self.state,
            "calls": [{"method": c.method, "params": c.params, "why": c.why} for c in self.calls],
            "notes": self.notes,
        }


async def customer_calls(
    plan: DryRun, client: CryptolensClient, email: str, buyer: dict[str, Any]
) -> str | int:
    """The buyer's customer id, or a placeholder for the one AddCustomer would return."""
    matches = [
        c.id
        for c in await client.get_customers(search=email)
        if c.email and c.email.lower() == email.lower()
    ]
    if matches:
        plan.notes.append(f"customer {min(matches)} has the buyer's email")
        return min(matches)
    new = NewCustomer.of(email, buyer.get("name"), buyer.get("company"))
    added = {"Name": new.name, "Email": new.email, "CompanyName": new.company_name}
    plan.calls.append(Call("customer/AddCustomer", added, "no customer has the buyer's email"))
    return "<the new customer's id>"
