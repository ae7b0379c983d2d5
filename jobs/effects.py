"""One Cryptolens effect per intent, even when a reply is lost after the effect happened.

The rule every effect follows: before sending a mutating call, write an attempt row;
if a previous attempt's outcome is unknown (no reply, or the worker died), *read back*
first and only send again once the read-back shows the effect is absent.

- EXTEND aims at an absolute expiry: read the key, extend by the difference or not at all.
  After a lost reply, an expiry that moved since the attempt means it was applied.
- BLOCK / UNBLOCK read the key's block flag first; a decision older than the last one
  applied to the license is superseded, so reordered deliveries converge.
- REGISTER_EVENT carries the intent id in its Metadata; a lost reply is settled by
  GetEvents filtered on that exact Metadata string.
- CREATE_KEY is serialized per product: a lost reply is settled by the Web API Log
  (state 3010) since the attempt, minus every key the bridge already holds, checked
  against the notes tag each new key gets (ChangeNotes) — exactly one candidate is ours;
  none means not created; several means a person must look (needs_review).
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

from bridge import locks
from bridge.cryptolens import CryptolensError, OutcomeUnknown, Refused, Transient
from bridge.cryptolens.models import LicenseKey, TimeRange
from bridge.db import is_sqlite
from bridge.intents import Effect
from bridge.logs import get_logger
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


class Waiting(Exception):
    """The license has no key yet: park the intent until its key exists."""


class NeedsReview(Exception):
    """The read-back cannot tell what happened: a person decides, nothing is re-sent."""


class LeaseLost(Exception):
    """This run no longer owns its intent (review, or another worker): stop quietly."""


class Busy(Exception):
    """Another worker holds the license (or product) lock: try again shortly."""


async def db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store function: in a thread, or inline when its engine is SQLite.

    SQLite is a local file with one writer at a time (one lock per process, see
    ``bridge.db``): a thread buys no parallelism there, and each hop back costs a turn of
    a busy event loop, which stretches every section held under a lease (a product's key
    creation above all) and with it the latency of every job queued behind it.
    """
    if args and isinstance(args[0], Engine) and is_sqlite(args[0]):
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


@asynccontextmanager
async def held(rt: Runtime, name: str, *, wait: float = 2.0) -> AsyncIterator[None]:
    """Hold the lease ``name``: first among this process's jobs (an asyncio lock, no
    polling), then against other processes (the database lease). Busy if it stays taken."""
    async with rt.local_locks.hold(name, wait):
        deadline = asyncio.get_running_loop().time() + wait
        delay = 0.005
        lease = rt.settings.lease_seconds
        while not await db(locks.acquire, rt.engine, name, rt.owner, lease):
            if asyncio.get_running_loop().time() >= deadline:
                raise Busy(name)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            await db(locks.release, rt.engine, name, rt.owner)


async def mutate(
    rt: Runtime, intent_id: str, method: str, detail: dict[str, Any], call: Awaitable[T]
) -> tuple[T, int]:
    """Send one mutating call with its attempt row written first and closed after."""
    attempt_id = await db(store.start_attempt, rt.engine, intent_id, method, detail)
    try:
        result = await call
    except Transient:
        await db(store.finish_attempt, rt.engine, attempt_id, "not_applied")
        raise
    except OutcomeUnknown:
        await db(store.finish_attempt, rt.engine, attempt_id, "unknown")
        raise
    except Refused:
        await db(store.finish_attempt, rt.engine, attempt_id, "refused")
        raise
    return result, attempt_id


async def apply(rt: Runtime, intent: store.Claimed) -> dict[str, Any]:
    """Run one claimed intent under its license's lock; returns the intent's result."""
    ref = await db(store.resolve_ref, rt.engine, intent.license_ref)
    async with held(rt, f"license:{ref}"):
        if intent.effect is Effect.CREATE_KEY:
            return await create_key(rt, intent, ref)
        license_ = await db(store.get_license, rt.engine, ref)
        if license_ is None or license_.key is None or license_.product_id is None:
            raise Waiting(ref)
        product_id, key = license_.product_id, license_.key
        if intent.effect is Effect.EXTEND:
            return await extend(rt, intent, product_id, key)
        if intent.effect in (Effect.BLOCK, Effect.UNBLOCK):
            return await set_block(
                rt, intent, ref, product_id, key, license_.block_decided_at, license_.block_reason
            )
        if intent.effect is Effect.REGISTER_EVENT:
            return await register_event(rt, intent, product_id, key)
        if intent.effect is Effect.RECORD_USAGE:
            return await record_usage(rt, intent, product_id, key)
        raise NeedsReview(f"unknown effect {intent.effect}")


# -- extend --------------------------------------------------------------------------------


def _unix(value: datetime) -> int:
    return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp())


async def extend(rt: Runtime, intent: store.Claimed, product_id: int, key: str) -> dict[str, Any]:
    target = int(intent.params["expires_at"])
    current = await rt.client.get_key(product_id, key)
    expires = _unix(current.expires)
    pending = await db(store.open_attempt, rt.engine, intent.id, "key/ExtendLicense")
    if pending is not None:
        if expires != pending.detail.get("before"):
            # The expiry moved since we sent it (we hold the license lock): it was applied.
            await db(store.finish_attempt, rt.engine, pending.id, "applied")
            return {"expires": expires, "extended_days": pending.detail.get("days")}
        await db(store.finish_attempt, rt.engine, pending.id, "not_applied")
    if expires >= target:
        return {"expires": expires, "extended_days": 0}
    now = int(datetime.now(UTC).timestamp())
    # ExtendLicense adds to the expiry, or to today when the key has already expired.
    days = math.ceil((target - max(expires, now)) / 86400)
    detail = {"before": expires, "days": days, "target": target}
    call = rt.client.extend_license(product_id, key, days)
    _, attempt_id = await mutate(rt, intent.id, "key/ExtendLicense", detail, call)
    await db(store.finish_attempt, rt.engine, attempt_id, "applied")
    return {"expires_before": expires, "extended_days": days, "target": target}


def _close_open(rt: Runtime, intent_id: str, method: str) -> None:
    pending = store.open_attempt(rt.engine, intent_id, method)
    if pending is not None:
        store.finish_attempt(rt.engine, pending.id, "applied")


# -- block / unblock -------------------------------------------------------------------------


async def set_block(
    rt: Runtime,
    intent: store.Claimed,
    ref: str,
    product_id: int,
    key: str,
    decided_at: int | None,
    decided_reason: str | None,
) -> dict[str, Any]:
    block = intent.effect is Effect.BLOCK
    reason = str(intent.params.get("reason", ""))
    if decided_at is not None and intent.occurred_at < decided_at:
        return {"superseded_by": decided_at}
    if not block and decided_reason in STICKY_BLOCKS:
        return {"kept_blocked": decided_reason}
    current = await rt.client.get_key(product_id, key)
    method = "key/BlockKey" if block else "key/UnblockKey"
    changed = False
    if current.block != block:
        call = (
            rt.client.block_key(product_id, key)
            if block
            else rt.client.unblock_key(product_id, key)
        )
        changed, attempt_id = await mutate(rt, intent.id, method, {"reason": reason}, call)
        await db(store.finish_attempt, rt.engine, attempt_id, "applied")
    # An earlier attempt whose reply was lost is settled by the state just read.
    await db(_close_open, rt, intent.id, method)
    await db(
        store.record_block_decision, rt.engine, ref, intent.occurred_at, reason if block else None
    )
    return {"blocked": block, "changed": changed}


# -- analytics -------------------------------------------------------------------------------


def event_metadata(intent: store.Claimed) -> str:
    """The exact Metadata string sent, also the GetEvents filter that finds it again."""
    metadata = dict(intent.params.get("metadata") or {})
    metadata["intent"] = intent.id
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


async def register_event(
    rt: Runtime, intent: store.Claimed, product_id: int, key: str
) -> dict[str, Any]:
    metadata = event_metadata(intent)
    method = "ai/RegisterEvent"
    pending = await db(store.open_attempt, rt.engine, intent.id, method)
    if pending is not None:
        found = await rt.client.get_events(
            product_id=product_id,
            key=key,
            metadata=metadata,
            time=TimeRange(gte=int(pending.sent_at.timestamp()) - READ_BACK_SLACK),
            limit=10,
        )
        if found:
            await db(store.finish_attempt, rt.engine, pending.id, "applied")
            return {"event_id": found[0].id, "recovered": True}
        await db(store.finish_attempt, rt.engine, pending.id, "not_applied")
    p = intent.params
    call = rt.client.register_event(
        product_id=product_id,
        key=key,
        event_name=str(p["event_name"]),
        value=int(p["value"]) if p.get("value") is not None else None,
        currency=p.get("currency"),
        metadata=metadata,
    )
    _, attempt_id = await mutate(rt, intent.id, method, {}, call)
    await db(store.finish_attempt, rt.engine, attempt_id, "applied")
    return {"registered": True}


async def record_usage(
    rt: Runtime, intent: store.Claimed, product_id: int, key: str
) -> dict[str, Any]:
    method = "subscription/RecordUsage"
    if await db(store.open_attempt, rt.engine, intent.id, method) is not None:
        # Cryptolens offers no way to read a usage counter back.
        raise NeedsReview("a RecordUsage reply was lost and usage cannot be read back")
    amount = int(intent.params["amount"])
    call = rt.client.record_usage(product_id, key, amount)
    _, attempt_id = await mutate(rt, intent.id, method, {"amount": amount}, call)
    await db(store.finish_attempt, rt.engine, attempt_id, "applied")
    return {"recorded": amount}


# -- create key --------------------------------------------------------------------------------


async def create_key(rt: Runtime, intent: store.Claimed, ref: str) -> dict[str, Any]:
    progress = dict(intent.progress)
    license_ = await db(store.get_license, rt.engine, ref)
    if license_ is not None and license_.key is not None and license_.product_id is not None:
        product_id, key = license_.product_id, license_.key
    else:
        template_id = await resolve_template(rt, intent.params)
        product_id = await rt.templates.product_of(template_id)
        await db(
            store.ensure_license,
            rt.engine,
            ref,
            product_id=product_id,
            template_id=template_id,
            created_by=intent.id,
        )
        key = await _create_or_recover(rt, intent, ref, product_id, template_id)
    progress.update(key=key, product_id=product_id)
    await db(store.save_progress, rt.engine, intent.id, progress)

    if not progress.get("tagged"):
        await _tag(rt, intent, product_id, key)
        progress["tagged"] = True
        await db(store.save_progress, rt.engine, intent.id, progress)

    customer = intent.params.get("customer") or {}
    email = customer.get("email")
    if email and not progress.get("customer_id"):
        customer_id = await _find_or_add_customer(rt, intent, email, customer.get("name"))
        await rt.client.change_customer(product_id, key, customer_id)  # idempotent (7019)
        await db(store.set_customer, rt.engine, ref, customer_id)
        progress["customer_id"] = customer_id
    return progress


async def _tag(rt: Runtime, intent: store.Claimed, product_id: int, key: str) -> None:
    tag = NOTES_TAG.format(intent=intent.id)
    current = await rt.client.get_key(product_id, key)
    if current.notes and tag in current.notes:
        return
    notes = f"{current.notes} {tag}".strip() if current.notes else tag
    await rt.client.change_notes(product_id, key, notes[-500:])


async def _create_or_recover(
    rt: Runtime, intent: store.Claimed, ref: str, product_id: int, template_id: int
) -> str:
    scope = f"create:{product_id}"
    async with held(rt, scope, wait=30.0):
        # Invariant: at most one CreateKeyFromTemplate of a product is ever unresolved, so
        # the one key the read-back may find unclaimed can only be that attempt's.
        await _settle_creates(rt, product_id, scope)
        license_ = await db(store.get_license, rt.engine, ref)
        if license_ is not None and license_.key is not None:
            return license_.key  # settled just now, from this intent's own lost reply
        if not await db(store.still_owned, rt.engine, intent.id, rt.owner):
            # Settling found our own earlier attempt ambiguous (needs review), or our lease
            # ran out and another worker took the intent: never create a key then.
            raise LeaseLost(intent.id)
        attempt_id = await db(
            store.start_attempt,
            rt.engine,
            intent.id,
            "key/CreateKeyFromTemplate",
            {"template_id": template_id},
            scope,
        )
        try:
            created = await rt.client.create_key_from_template(template_id)
        except CryptolensError as exc:
            await db(store.finish_attempt, rt.engine, attempt_id, _outcome(exc))
            raise
        await db(store.set_license_key, rt.engine, ref, created.key, attempt_id)
        return created.key


def _outcome(exc: CryptolensError) -> str:
    if isinstance(exc, OutcomeUnknown):
        return "unknown"
    return "not_applied" if isinstance(exc, Transient) else "refused"


async def _settle_creates(rt: Runtime, product_id: int, scope: str) -> None:
    """Decide every unresolved key creation of the product (held under its lock)."""
    for pending in await db(store.unresolved_in_scope, rt.engine, scope):
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
    async with held(rt, f"customer:{email.lower()}", wait=10.0):
        # Searching first makes AddCustomer safe to retry: a lost reply's customer is found.
        for customer in sorted(await rt.client.get_customers(search=email), key=lambda c: c.id):
            if customer.email and customer.email.lower() == email.lower():
                return customer.id
        added, attempt_id = await mutate(
            rt,
            intent.id,
            "customer/AddCustomer",
            {},
            rt.client.add_customer(
                name=(name or email)[:100], email=email[:100], company_name=(name or "")[:100]
            ),
        )
        await db(store.finish_attempt, rt.engine, attempt_id, "applied")
        return added.customer_id
