"""One Cryptolens effect per intent, even when a reply is lost after the effect happened.

The rule every effect follows: before sending a call whose repetition would be a second
effect, write an attempt row; if a previous attempt's outcome is unknown (no reply, or the
worker died), *read back* first and only send again once the read-back shows the effect
is absent. Setting calls (ChangeNotes, ChangeCustomer) are repeated freely; AddCustomer
is always preceded by a search by email, under a per-email lease.

- EXTEND aims at an absolute expiry: read the key, extend by the difference or not at all.
  After a lost reply, an expiry that moved since the attempt means it was applied.
- BLOCK / UNBLOCK read the key's block flag first; a decision older than the last one
  applied to the license is superseded, so reordered deliveries converge.
- REGISTER_EVENT carries the intent id in its Metadata; a lost reply is settled by
  GetEvents filtered on that exact Metadata string.
- CREATE_KEY is serialized per product, and at most one creation per product is ever
  unresolved: before any new one is sent, every unresolved one is settled from the Web
  API Log (state 3010) since its attempt, minus every key the bridge already holds,
  checked against the notes tag each new key gets (ChangeNotes). One candidate is that
  attempt's key; none means it was not created; several (someone else made keys in the
  window) means a person must look (needs_review).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine

from bridge.core import locks
from bridge.core.db import is_sqlite
from bridge.core.intents import Effect
from bridge.core.logs import get_logger
from bridge.cryptolens import CryptolensError, OutcomeUnknown, Transient
from bridge.cryptolens.models import LicenseKey, TimeRange
from jobs import store
from jobs.runtime import Runtime
from jobs.templates import resolve_template

log = get_logger(__name__)

# Clock skew we tolerate between this host and Cryptolens when reading logs back.
READ_BACK_SLACK = 120
# Block reasons that a later "active again" must not undo: they end the license.
STICKY_BLOCKS = frozenset({"canceled", "refund", "dispute"})
NOTES_TAG = "[cryptolens-bridge {intent}]"

T = TypeVar("T")


class NeedsReview(Exception):
    """The read-back cannot tell what happened: a person decides, nothing is re-sent."""


class LeaseLost(Exception):
    """This run no longer owns its intent (review, or another worker): stop quietly."""


class Busy(Exception):
    """Another worker holds the product (or customer) lock: try again shortly."""


async def db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store function: in a thread, or inline when its engine is SQLite.

    SQLite is a local file with one writer at a time (one lock per process, see
    ``bridge.core.db``): a thread buys no parallelism there, and each hop back costs a turn of
    a busy event loop, which stretches every section held under a lease (a product's key
    creation above all) and with it the latency of every job queued behind it.
    """
    if args and isinstance(args[0], Engine) and is_sqlite(args[0]):
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


@asynccontextmanager
async def held(rt: Runtime, name: str, owner: str, *, wait: float = 2.0) -> AsyncIterator[None]:
    """Hold the lease ``name``: first among this process's jobs (an asyncio lock, no
    polling), then against other processes (the database lease). Busy if it stays taken."""
    async with rt.local_locks.hold(name, wait):
        deadline = asyncio.get_running_loop().time() + wait
        delay = 0.005
        lease = rt.settings.lease_seconds
        while not await db(locks.acquire, rt.engine, name, owner, lease):
            if asyncio.get_running_loop().time() >= deadline:
                raise Busy(name)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            await db(locks.release, rt.engine, name, owner)


async def mutate(
    rt: Runtime,
    intent: store.Claimed,
    method: str,
    detail: dict[str, Any],
    call: Awaitable[T],
    outcome: store.Outcome,
    *,
    supersedes: int | None = None,
) -> T:
    """Send one mutating call with its attempt row written first.

    On success the attempt is settled as applied with the run's outcome (one transaction
    at the end); on failure it is settled now, since the run ends with an exception.
    """
    attempt_id = await db(
        store.start_attempt, rt.engine, intent.id, method, detail, supersedes=supersedes
    )
    try:
        result = await call
    except CryptolensError as exc:
        await db(store.finish_attempt, rt.engine, attempt_id, failed_outcome(exc))
        raise
    outcome.attempts[attempt_id] = "applied"
    return result


def failed_outcome(exc: CryptolensError) -> str:
    if isinstance(exc, OutcomeUnknown):
        return "unknown"
    return "not_applied" if isinstance(exc, Transient) else "refused"


async def apply(rt: Runtime, intent: store.Claimed, outcome: store.Outcome) -> dict[str, Any]:
    """Run one claimed intent (its license lease is held); returns the intent's result."""
    if intent.effect is Effect.CREATE_KEY:
        return await create_key(rt, intent, outcome)
    license_ = intent.license
    # claim() parks intents whose license has no key, so these hold for the others.
    assert license_ is not None and license_.key is not None and license_.product_id
    if intent.effect is Effect.EXTEND:
        return await extend(rt, intent, license_, outcome)
    if intent.effect in (Effect.BLOCK, Effect.UNBLOCK):
        return await set_block(rt, intent, license_, outcome)
    if intent.effect is Effect.REGISTER_EVENT:
        return await register_event(rt, intent, license_, outcome)
    if intent.effect is Effect.RECORD_USAGE:
        return await record_usage(rt, intent, license_, outcome)
    raise NeedsReview(f"unknown effect {intent.effect}")


# -- extend --------------------------------------------------------------------------------


def _unix(value: datetime) -> int:
    return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp())


async def extend(
    rt: Runtime, intent: store.Claimed, license_: store.LicenseView, outcome: store.Outcome
) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    method = "key/ExtendLicense"
    target = int(intent.params["expires_at"])
    current = await rt.client.get_key(license_.product_id, license_.key)
    expires = _unix(current.expires)
    pending = intent.open_attempts.get(method)
    if pending is not None and expires != pending.detail.get("before"):
        # The expiry moved since we sent it (we hold the license lease): it was applied.
        outcome.attempts[pending.id] = "applied"
        return {"expires": expires, "extended_days": pending.detail.get("days")}
    if expires >= target:
        if pending is not None:
            outcome.attempts[pending.id] = "not_applied"
        return {"expires": expires, "extended_days": 0}
    now = int(datetime.now(UTC).timestamp())
    # ExtendLicense adds to the expiry, or to today when the key has already expired.
    days = math.ceil((target - max(expires, now)) / 86400)
    detail = {"before": expires, "days": days, "target": target}
    call = rt.client.extend_license(license_.product_id, license_.key, days)
    await mutate(
        rt, intent, method, detail, call, outcome, supersedes=pending.id if pending else None
    )
    return {"expires_before": expires, "extended_days": days, "target": target}


# -- block / unblock -------------------------------------------------------------------------


async def set_block(
    rt: Runtime, intent: store.Claimed, license_: store.LicenseView, outcome: store.Outcome
) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    block = intent.effect is Effect.BLOCK
    reason = str(intent.params.get("reason", ""))
    decided_at = license_.block_decided_at
    if decided_at is not None and intent.occurred_at < decided_at:
        return {"superseded_by": decided_at}
    if not block and license_.block_reason in STICKY_BLOCKS:
        return {"kept_blocked": license_.block_reason}
    method = "key/BlockKey" if block else "key/UnblockKey"
    pending = intent.open_attempts.get(method)
    current = await rt.client.get_key(license_.product_id, license_.key)
    changed = False
    if current.block != block:
        call = (
            rt.client.block_key(license_.product_id, license_.key)
            if block
            else rt.client.unblock_key(license_.product_id, license_.key)
        )
        changed = await mutate(
            rt,
            intent,
            method,
            {"reason": reason},
            call,
            outcome,
            supersedes=pending.id if pending else None,
        )
    elif pending is not None:
        # An earlier attempt whose reply was lost is settled by the state just read.
        outcome.attempts[pending.id] = "applied"
    outcome.license.update(
        block_decided_at=intent.occurred_at, block_reason=reason if block else None
    )
    return {"blocked": block, "changed": changed}


# -- analytics -------------------------------------------------------------------------------


def event_metadata(intent: store.Claimed) -> str:
    """The exact Metadata string sent, also the GetEvents filter that finds it again."""
    metadata = dict(intent.params.get("metadata") or {})
    metadata["intent"] = intent.id
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


async def register_event(
    rt: Runtime, intent: store.Claimed, license_: store.LicenseView, outcome: store.Outcome
) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    metadata = event_metadata(intent)
    method = "ai/RegisterEvent"
    pending = intent.open_attempts.get(method)
    if pending is not None:
        found = await rt.client.get_events(
            product_id=license_.product_id,
            key=license_.key,
            metadata=metadata,
            time=TimeRange(gte=int(pending.sent_at.timestamp()) - READ_BACK_SLACK),
            limit=10,
        )
        if found:
            outcome.attempts[pending.id] = "applied"
            return {"event_id": found[0].id, "recovered": True}
    p = intent.params
    call = rt.client.register_event(
        product_id=license_.product_id,
        key=license_.key,
        event_name=str(p["event_name"]),
        value=int(p["value"]) if p.get("value") is not None else None,
        currency=p.get("currency"),
        metadata=metadata,
    )
    await mutate(rt, intent, method, {}, call, outcome, supersedes=pending.id if pending else None)
    return {"registered": True}


async def record_usage(
    rt: Runtime, intent: store.Claimed, license_: store.LicenseView, outcome: store.Outcome
) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    method = "subscription/RecordUsage"
    if method in intent.open_attempts:
        # Cryptolens offers no way to read a usage counter back.
        raise NeedsReview("a RecordUsage reply was lost and usage cannot be read back")
    amount = int(intent.params["amount"])
    call = rt.client.record_usage(license_.product_id, license_.key, amount)
    await mutate(rt, intent, method, {"amount": amount}, call, outcome)
    return {"recorded": amount}


# -- create key --------------------------------------------------------------------------------


async def create_key(rt: Runtime, intent: store.Claimed, outcome: store.Outcome) -> dict[str, Any]:
    license_ = intent.license
    fresh_notes: str | None = None
    if license_ is not None and license_.key and license_.product_id is not None:
        product_id, key = license_.product_id, license_.key
    else:
        template_id = await resolve_template(rt, intent.params)
        template = await rt.templates.get(template_id)
        product_id = template.product_id
        key, fresh = await _create_or_recover(rt, intent, product_id, template_id)
        if fresh:
            fresh_notes = template.notes or ""

    await _tag(rt, intent, product_id, key, fresh_notes)

    result: dict[str, Any] = {"key": key, "product_id": product_id, "tagged": True}
    customer = intent.params.get("customer") or {}
    email = customer.get("email")
    customer_id = license_.customer_id if license_ is not None else None
    if email and not customer_id:
        customer_id = await _find_or_add_customer(rt, intent, email, customer.get("name"))
        await rt.client.change_customer(product_id, key, customer_id)  # idempotent (7019)
        outcome.license["customer_id"] = customer_id
    if customer_id:
        result["customer_id"] = customer_id
    return result


async def _tag(
    rt: Runtime, intent: store.Claimed, product_id: int, key: str, fresh_notes: str | None
) -> None:
    """Write the intent's tag into the key's notes (what a read-back recognises).

    A key this run just created has its template's notes: no need to read them back.
    """
    tag = NOTES_TAG.format(intent=intent.id)
    notes = fresh_notes
    if notes is None:
        notes = (await rt.client.get_key(product_id, key)).notes or ""
        if tag in notes:
            return
    tagged = f"{notes} {tag}".strip() if notes else tag
    await rt.client.change_notes(product_id, key, tagged[-500:])


async def _create_or_recover(
    rt: Runtime, intent: store.Claimed, product_id: int, template_id: int
) -> tuple[str, bool]:
    """The license's key, and whether this call created it.

    Creations in one product are serialized: among this process's jobs by an asyncio lock
    (no polling), across processes by the product's lease, which ``begin_create`` takes
    and ``set_license_key`` drops in the transactions they run anyway.
    """
    scope = f"create:{product_id}"
    lease = (scope, intent.owner)
    async with rt.local_locks.hold(scope, 30.0):
        released = False
        try:
            step = await _begin_create(rt, intent, product_id, template_id, scope)
            if step.key is not None:
                return step.key, False  # settled just now, from our own lost reply
            assert step.attempt_id is not None
            try:
                created = await rt.client.create_key_from_template(template_id)
            except CryptolensError as exc:
                await db(store.finish_attempt, rt.engine, step.attempt_id, failed_outcome(exc))
                raise
            await db(
                store.set_license_key,
                rt.engine,
                intent.ref,
                created.key,
                step.attempt_id,
                release=lease,
            )
            released = True
            return created.key, True
        finally:
            if not released:
                await db(locks.release, rt.engine, *lease)


async def _begin_create(
    rt: Runtime, intent: store.Claimed, product_id: int, template_id: int, scope: str
) -> store.CreateStep:
    """Take the product's lease (waiting for another process to let go), settle what is
    unresolved, and return a key or a recorded attempt."""
    deadline = asyncio.get_running_loop().time() + 30.0
    delay = 0.005
    settled = 0
    while True:
        step = await db(
            store.begin_create,
            rt.engine,
            intent,
            product_id=product_id,
            template_id=template_id,
            scope=scope,
            lease=rt.settings.lease_seconds,
        )
        if step.lost:
            raise LeaseLost(intent.id)
        if step.key is not None or step.attempt_id is not None:
            return step
        if step.unresolved:
            # Invariant: at most one CreateKeyFromTemplate of a product is ever
            # unresolved, so the one key a read-back may find unclaimed is that attempt's.
            settled += 1
            if settled > 3:  # pragma: no cover - settling resolves or parks every attempt
                raise Busy(scope)
            await _settle_creates(rt, product_id, step.unresolved)
            continue
        if asyncio.get_running_loop().time() >= deadline:
            raise Busy(scope)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.1)


async def _settle_creates(
    rt: Runtime, product_id: int, unresolved: list[store.OpenAttempt]
) -> None:
    """Decide every unresolved key creation of the product (held under its lock)."""
    for pending in unresolved:
        try:
            found = await _recover_key(rt, pending.intent_id, product_id, pending.sent_at)
        except NeedsReview as exc:
            # Unclaimed keys we cannot attribute: that intent goes to a person, and the
            # product is free again for the others.
            await db(store.finish_attempt, rt.engine, pending.id, "ambiguous")
            await db(store.set_needs_review, rt.engine, pending.intent_id, str(exc))
            log.warning("key creation needs review", intent=pending.intent_id)
            continue
        if found is None:
            await db(store.finish_attempt, rt.engine, pending.id, "not_applied")
            continue
        owner_ref = await db(store.intent_ref, rt.engine, pending.intent_id)
        if owner_ref is None:  # pragma: no cover - attempts reference intents by FK
            continue
        await db(store.set_license_key, rt.engine, owner_ref, found, pending.id)
        # License keys are credentials of the vendor's customers: not in logs.
        log.info("key recovered after a lost reply", intent=pending.intent_id)


async def _recover_key(
    rt: Runtime, intent_id: str, product_id: int, sent_at: datetime
) -> str | None:
    logs = await rt.client.get_web_api_log(
        product_id=product_id,
        states=[3010],
        time=TimeRange(gte=int(sent_at.timestamp()) - READ_BACK_SLACK),
        limit=1000,
    )
    if len(logs) >= 1000:
        raise NeedsReview("more than 1000 keys created since the lost reply")
    created = {entry.key for entry in logs if entry.key}
    candidates = created - await db(store.claimed_keys, rt.engine, product_id, created)
    ours = NOTES_TAG.format(intent=intent_id)
    untagged: list[LicenseKey] = []
    for candidate in sorted(candidates):
        found = await rt.client.get_key(product_id, candidate)
        notes = found.notes or ""
        if ours in notes:
            return found.key
        if "[cryptolens-bridge " not in notes:
            untagged.append(found)
    if len(untagged) > 1:
        keys = ", ".join(k.key for k in untagged)
        raise NeedsReview(f"several unclaimed keys were created since the lost reply: {keys}")
    return untagged[0].key if untagged else None


async def _find_or_add_customer(
    rt: Runtime, intent: store.Claimed, email: str, name: str | None
) -> int:
    """The Cryptolens customer with this email, added if there is none.

    AddCustomer needs no attempt row: searching by email first is its read-back, so a
    lost reply's customer is found by the next run instead of being added twice. The
    customer lease keeps two licenses of one buyer from adding them twice concurrently.
    """
    async with held(rt, f"customer:{email.lower()}", intent.owner, wait=10.0):
        found = await _customer_by_email(rt, email)
        if found is not None:
            return found
        added = await rt.client.add_customer(
            name=(name or email)[:100], email=email[:100], company_name=(name or "")[:100]
        )
        return added.customer_id


async def _customer_by_email(rt: Runtime, email: str) -> int | None:
    matches = [
        c.id
        for c in await rt.client.get_customers(search=email)
        if c.email and c.email.lower() == email.lower()
    ]
    return min(matches) if matches else None
