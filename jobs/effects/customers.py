"""LINK_CUSTOMER and the buyer's lookup: found by email, added only after a search."""

from __future__ import annotations

import hashlib
from typing import Any

from bridge.rules import customers
from bridge.rules.customers import NewCustomer
from bridge.store import attempts, licenses
from jobs.dbcall import in_thread
from jobs.effects.run import Run, held, mutate
from jobs.runtime import Runtime


async def link_customer(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    """The rule (``bridge.rules.customers.link``, the dry run's too), then its calls."""
    assert license_.product_id is not None and license_.key is not None
    decision = customers.link(
        run.intent.params,
        occurred_at=run.intent.occurred_at,
        linked=license_.customer_id,
        decided_at=license_.customer_decided_at,
    )
    if decision.result is not None:
        return decision.result
    expected = decision.customer_id
    if expected is not None:
        # A repair (``reconcile --repair``): the key was relinked in Cryptolens behind the
        # bridge's back, so Cryptolens' own link is what is compared. A setting: repeated
        # freely, so two such intents on one key cannot add anything twice.
        current = await run.rt.client.get_key(license_.product_id, license_.key)
        if current.customer is not None and current.customer.id == expected:
            return {"customer_id": expected, "already_linked": True}
        await change_customer(run, license_.product_id, license_.key, expected)
        return {"customer_id": expected, "relinked": True}
    assert decision.email is not None
    buyer = decision.buyer
    customer_id = await find_or_add_customer(
        run, decision.email, buyer.get("name"), buyer.get("company")
    )
    await change_customer(run, license_.product_id, license_.key, customer_id)
    return {"customer_id": customer_id}


async def set_customer(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    """A CRM deal's contact or company changed: the key follows, unless a newer change
    was applied already (``customer_decided_at``). One ChangeCustomer per change that
    names another customer; none when the customer is the one linked already."""
    assert license_.product_id is not None and license_.key is not None
    intent = run.intent
    decided = license_.customer_decided_at
    if decided is not None and intent.occurred_at < decided:
        return {"superseded_by": decided}
    buyer = intent.params.get("customer") or {}
    email = buyer.get("email")
    if not email:
        return {"customer_id": license_.customer_id, "no_buyer": True}
    customer_id = await find_or_add_customer(
        run, str(email), buyer.get("name"), buyer.get("company")
    )
    changed = customer_id != license_.customer_id
    if changed:
        await change_customer(run, license_.product_id, license_.key, customer_id)
    run.outcome.license["customer_decided_at"] = intent.occurred_at
    return {"customer_id": customer_id, "changed": changed}


async def change_customer(run: Run, product_id: int, key: str, customer_id: int) -> None:
    rt = run.rt
    # Idempotent (a setting, 7019 in the log): repeated freely, no attempt row.
    await run.send(
        "key/ChangeCustomer", lambda: rt.client.change_customer(product_id, key, customer_id)
    )
    run.outcome.license["customer_id"] = customer_id


def customer_scope(email: str) -> str:
    """The attempt scope of AddCustomer calls for one buyer's email (hashed: an email may
    be longer than a scope, and need not be spelled out twice)."""
    return "customer:" + hashlib.sha256(email.lower().encode()).hexdigest()[:32]


async def find_or_add_customer(
    run: Run, email: str, name: str | None, company: str | None = None
) -> int:
    """The Cryptolens customer with this email, added if there is none.

    Searching by email is AddCustomer's read-back, but a search cannot see a call still
    in flight: an AddCustomer whose reply was lost may land up to its settle window later
    (``Run.settle_after``: its bound plus ``BRIDGE_SETTLE_SECONDS``). So each AddCustomer
    gets an attempt row (scope: the email), and while one of any intent is unresolved and
    may still land, no customer is added for that email: the run waits (NotYet); past the
    window, a search that finds nothing settles it as not applied. The customer lease
    keeps two licenses of one buyer from adding them twice concurrently.
    """
    rt = run.rt
    scope = customer_scope(email)
    # The lease is named by the digest too: a row a crashed worker leaves behind then
    # holds no address (bridge.store.erasure).
    async with held(run, scope, wait=10.0):
        found = await _customer_by_email(rt, email)
        unresolved = await in_thread(attempts.open_in_scope, rt.engine, scope)
        if found is not None:
            for attempt in unresolved:
                run.outcome.attempts[attempt.id] = "applied"  # one of them made it
            return found
        for attempt in unresolved:
            run.not_yet(attempt, "customer/AddCustomer")
        if unresolved:
            # Past their windows and still not found: none of them made a customer.
            ids = [a.id for a in unresolved]
            await in_thread(attempts.finish_attempts, rt.engine, ids, "not_applied")
        new = NewCustomer.of(email, name, company)  # the dry run's too
        added = await mutate(
            run,
            "customer/AddCustomer",
            {},
            lambda: rt.client.add_customer(
                name=new.name, email=new.email, company_name=new.company_name
            ),
            scope=scope,
        )
        return added.customer_id


async def _customer_by_email(rt: Runtime, email: str) -> int | None:
    matches = [
        c.id
        for c in await rt.client.get_customers(search=email)
        if c.email and c.email.lower() == email.lower()
    ]
    return min(matches) if matches else None
