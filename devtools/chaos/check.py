"""What each purchase of a chaos run must have become, checked against the sandbox's state
and the database: exactly one key, of its template, linked to its buyer, expiring where
its payments say, blocked exactly where it ended, one analytics event per payment, no key
held by two licenses, every foreign key left as its maker made it, and no key nobody
accounts for."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from devtools.chaos.db import rows
from devtools.chaos.report import RunResult
from devtools.workload import DAY, PERIODS, Purchase

Fail = Callable[[str], None]


def check(
    result: RunResult,
    purchases: list[Purchase],
    state: dict[str, Any],
    db_url: str,
    foreign: frozenset[str] = frozenset(),
) -> None:
    """Append to ``result.failures`` every way the run's outcome differs from what its
    purchases must have become (and its needs_review intents to ``result.needs_review``)."""
    fail = result.failures.append
    _check_intents(result, db_url)
    licenses = {
        r.ref: r for r in rows(db_url, "SELECT ref, key, customer_id, ended_by FROM license")
    }
    keys = {k["key"]: k for k in state["keys"]}
    result.keys = len(set(keys) - foreign)
    holders = Counter(r.key for r in licenses.values() if r.key)
    for count in holders.values():
        if count > 1:
            fail(f"a key is held by {count} licenses")
    _check_foreign(fail, keys, set(holders), foreign)
    customers = {c["id"]: c for c in state["customers"]}
    by_email = Counter(c["email"].lower() for c in state["customers"] if c["email"])
    for email, count in by_email.items():
        if count > 1:
            fail(f"{count} Cryptolens customers for {email}")
    events: dict[str, Counter[str]] = {}
    for e in state["events"]:
        events.setdefault(e["key"], Counter())[e["event_name"]] += 1
    _check_events_once(fail, state, db_url)

    accounted: set[str] = set()
    for p in purchases:
        row = licenses.get(p.ref)
        what = f"{p.ref} ({', '.join(p.story) or 'plain'})"
        if row is None or row.key is None:
            fail(f"{what}: no key")
            continue
        accounted.add(row.key)
        key = keys.get(row.key)
        if key is None:
            fail(f"{what}: its key is not in Cryptolens")
            continue
        _check_key(fail, what, p, key, customers)
        got = dict(events.get(row.key, Counter()))
        if got != p.events:
            fail(f"{what}: events {got}, expected {p.events}")
    others = set(keys) - accounted - foreign
    if others:
        fail(f"{len(others)} key(s) in Cryptolens that no purchase accounts for")
    created = state["counts"]["keys_created"] - len(foreign)
    if created != len(purchases):
        fail(f"{created} key creations of the bridge applied for {len(purchases)} purchases")


def _check_intents(result: RunResult, db_url: str) -> None:
    """Every intent done, or left for a person (needs_review: reported, not failed)."""
    intents = rows(db_url, "SELECT id, status, last_error, license_ref FROM intent")
    result.intents = dict(Counter(i.status for i in intents))
    for i in intents:
        if i.status == "needs_review":
            result.needs_review.append(f"{i.id}: {i.last_error}")
        elif i.status != "done":
            result.failures.append(f"intent {i.id} is {i.status}: {i.last_error}")


def _check_foreign(
    fail: Fail, keys: dict[str, dict[str, Any]], held: set[str], foreign: frozenset[str]
) -> None:
    """The other client's keys: still there, held by no license, left as it made them."""
    for key_string in foreign:
        made = keys.get(key_string)
        if made is None:
            fail("a foreign key is gone")
            continue
        if key_string in held:
            fail("a foreign key is held by a license")
        untouched = (
            made["notes"] == ""
            and made["customer_id"] is None
            and not made["block"]
            and made["expires"] == made["created"] + made["period"] * DAY
        )
        if not untouched:
            fail(f"a foreign key was touched: {made}")


def _check_events_once(fail: Fail, state: dict[str, Any], db_url: str) -> None:
    """No RegisterEvent applied twice; for one that was, what the bridge recorded of it."""
    meta = Counter(json.loads(e["metadata"]).get("intent") for e in state["events"])
    for intent_id, count in meta.items():
        if count > 1:
            fail(f"RegisterEvent of {intent_id} applied {count} times")
            # What the bridge recorded of each send, and when the sandbox applied each.
            times = sorted(
                e["time"]
                for e in state["events"]
                if json.loads(e["metadata"]).get("intent") == intent_id
            )
            fail(f"  applied at (sandbox, unix s): {times}")
            for row in rows(
                db_url,
                "SELECT id, sent_at, finished_at, outcome FROM attempt"
                " WHERE intent_id = :intent ORDER BY id",
                {"intent": intent_id},
            ):
                fail(f"  attempt {tuple(str(v) for v in row)}")


def _check_key(
    fail: Fail,
    what: str,
    p: Purchase,
    key: dict[str, Any],
    customers: dict[Any, dict[str, Any]],
) -> None:
    """One purchase's key: its template's period, blocked where it ended, its expiry, its
    buyer."""
    if key["period"] != PERIODS[p.template]:
        fail(f"{what}: period {key['period']}, expected {PERIODS[p.template]} (template)")
    if bool(key["block"]) != p.blocked:
        fail(f"{what}: blocked={key['block']}, expected {p.blocked}")
    _check_expiry(fail, what, p, key)
    if p.email is None:
        if key["customer_id"] is not None:
            fail(f"{what}: linked to customer {key['customer_id']}, but no email was given")
    else:
        customer = customers.get(key["customer_id"])
        if customer is None or customer["email"].lower() != p.email:
            fail(f"{what}: customer {key['customer_id']}, expected the one of {p.email}")


def _check_expiry(fail: Fail, what: str, p: Purchase, key: dict[str, Any]) -> None:
    created, expires = int(key["created"]), int(key["expires"])
    from_template = created + PERIODS[p.template] * DAY
    if p.target is None or from_template >= p.target:
        if expires != from_template:
            fail(f"{what}: expires {_day(expires)}, expected {_day(from_template)} (template)")
        return
    # ExtendLicense adds whole days: the first expiry at or past the target.
    if not p.target <= expires < p.target + DAY:
        fail(f"{what}: expires {_day(expires)}, expected {_day(p.target)} (period end + grace)")


def _day(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")
