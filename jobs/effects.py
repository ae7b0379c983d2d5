"""One Cryptolens effect per intent, whatever the order, the faults and the timing.

The rule every effect follows: before sending a call whose repetition would be a second
effect, write an attempt row; if an attempt's outcome is unknown (no reply, or the worker
died), *read back* first and send again only once the read-back shows the effect absent
*and* the call can no longer land (``settle_after``: its longest duration plus
``BRIDGE_SETTLE_SECONDS``, since a request may still be applied after its client gave
up). Setting calls (ChangeNotes, ChangeCustomer) are repeated freely.

Why each effect is exactly once when two intents race on one key. Three things hold for
every run (each with a test in tests/test_effects_races.py):

(a) Runs on one license never overlap: the claim takes the license's lease with the
    intent's, in one transaction, and both are renewed while the run is alive
    (``jobs.lease``). A run that cannot renew stops *before* its next call, and a call is
    only sent while the lease covers its longest duration, so a run that lost its lease
    has no call in flight when another run takes over.
(b) Every call is sent only after the run has settled every unresolved attempt that its
    read-back could confuse with its own (below); so at most one such attempt is ever
    unresolved, and a read-back never credits one intent with another's effect.
(c) The run's outcome (status, settled attempts, license facts) is written in one
    transaction that first checks the run still owns the intent.

- EXTEND aims at an absolute expiry: read the key, extend by the difference or not at all.
  ExtendLicense, BlockKey and UnblockKey share the attempt scope ``key:<license>``: before
  any of them is sent, every unresolved attempt in the scope, of any intent, is settled
  against the exact state it would have produced (an extension: ``before + days``, or
  today + days for an expired key; a block: the flag). An expiry that is neither that
  value nor the one before goes to a person. So renewal B can never be read as A's effect.
- BLOCK / UNBLOCK: a block that ends the license (canceled, refund, dispute) is applied
  whatever its age and is never lifted or overwritten (``license.ended_by``); payment-
  status blocks and unblocks (unpaid, past due, active again) apply only when newer than
  the license's last such decision, so reordered deliveries converge.
- REGISTER_EVENT carries the intent id in its Metadata; a lost reply is settled by
  GetEvents filtered on that exact Metadata string, once the call can no longer land.
- RECORD_USAGE cannot be read back: an unknown outcome goes to a person.
- LINK_CUSTOMER links the key to the buyer found by email (added if none), once both the
  key and the buyer are known, whichever start event named the buyer.
- CREATE_KEY merges what every start event of the purchase said (``start_hint``) and, for
  a subscription that nothing names a template for yet, waits ``BRIDGE_START_WAIT_SECONDS``
  for the other start events before the default template. Creations are serialized per
  product, and at most one is ever unresolved: before any new one is sent, the
  unresolved one is settled from the Web API Log (state 3010) since its attempt, minus
  every key the bridge holds. Its own ChangeNotes tag decides at once; an untagged key
  counts as the bridge's only on evidence: the product is declared the bridge's alone
  (``[cryptolens] sole_key_maker``), or the log's anonymized caller IP is one the
  bridge's own creations and tags came from. A key from another IP is someone else's;
  no evidence, or two keys of the bridge, goes to a person.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from bridge.core import locks
from bridge.core.intents import Effect
from bridge.core.logs import get_logger
from bridge.cryptolens import CryptolensError, OutcomeUnknown, Transient
from bridge.cryptolens.models import LicenseKey, TimeRange, WebApiLog
from jobs import store
from jobs.dbcall import db
from jobs.errors import Busy, LeaseLost, NeedsReview, NotYet
from jobs.lease import RunLease
from jobs.runtime import Runtime
from jobs.templates import resolve_template

__all__ = ["Busy", "LeaseLost", "NeedsReview", "NotYet", "Run", "apply", "db"]

log = get_logger(__name__)

DAY = 86400
# Clock skew we tolerate between this host and Cryptolens when reading logs back.
READ_BACK_SLACK = 120
# Blocks that end a license: applied whatever their age, never lifted.
ENDING_BLOCKS = frozenset({"canceled", "refund", "dispute"})
NOTES_TAG = "[cryptolens-bridge {intent}]"
TAG_PREFIX = "[cryptolens-bridge "
# States of the Web API Log written by the calls the bridge makes on the keys it creates
# (CreateKeyFromTemplate, ChangeNotes): their callers' IPs are the bridge's.
_BRIDGE_STATES = (3010, 7017)
_LOG_PAGE = 1000  # GetWebAPILog's Limit is at most 1,000
# How far back the bridge's own IPs are looked for, before a lost creation's window.
_IP_LOOKBACK = 7 * DAY

T = TypeVar("T")


@dataclass
class Run:
    """One run of one claimed intent: what it holds, and what it learns."""

    rt: Runtime
    intent: store.Claimed
    outcome: store.Outcome
    lease: RunLease

    @property
    def call_bound(self) -> float:
        """The longest one Cryptolens call can take (its client's timeouts)."""
        return self.rt.settings.call_bound_seconds

    def settle_after(self, attempt: store.OpenAttempt) -> datetime:
        """When an unresolved call can no longer land: its read-back is then final."""
        return attempt.sent_at + timedelta(
            seconds=self.call_bound + self.rt.settings.settle_seconds
        )

    def not_yet(self, attempt: store.OpenAttempt, what: str) -> None:
        """Raise NotYet unless ``attempt`` can no longer land at Cryptolens."""
        at = self.settle_after(attempt)
        now = self.rt.now()
        if now < at:
            raise NotYet(f"{what} may still land", (at - now).total_seconds())

    async def send(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        """Send a call that changes something: only while the run's leases outlast it."""
        await self.lease.ensure(self.call_bound + 5)
        try:
            async with asyncio.timeout(self.call_bound):
                return await call()
        except TimeoutError:
            raise OutcomeUnknown(method, "no complete reply within the call's bound") from None


async def apply(run: Run) -> dict[str, Any]:
    """Run one claimed intent (its license lease is held); returns the intent's result."""
    intent = run.intent
    if intent.effect is Effect.CREATE_KEY:
        return await create_key(run)
    license_ = intent.license
    # claim() parks intents whose license has no key, so these hold for the others.
    assert license_ is not None and license_.key is not None and license_.product_id
    if intent.effect is Effect.EXTEND:
        return await extend(run, license_)
    if intent.effect in (Effect.BLOCK, Effect.UNBLOCK):
        return await set_block(run, license_)
    if intent.effect is Effect.REGISTER_EVENT:
        return await register_event(run, license_)
    if intent.effect is Effect.RECORD_USAGE:
        return await record_usage(run, license_)
    if intent.effect is Effect.LINK_CUSTOMER:
        return await link_customer(run, license_)
    raise NeedsReview(f"unknown effect {intent.effect}")


async def mutate(
    run: Run,
    method: str,
    detail: dict[str, Any],
    call: Callable[[], Awaitable[T]],
    *,
    scope: str | None = None,
    supersedes: int | None = None,
) -> T:
    """Send one mutating call with its attempt row written first.

    On success the attempt is settled as applied with the run's outcome (one transaction
    at the end); on failure it is settled now, since the run ends with an exception.
    """
    rt = run.rt
    await run.lease.ensure(run.call_bound + 5)
    attempt_id = await db(
        store.start_attempt,
        rt.engine,
        run.intent.id,
        method,
        detail,
        scope=scope,
        supersedes=supersedes,
    )
    try:
        result = await run.send(method, call)
    except LeaseLost:
        await db(store.finish_attempt, rt.engine, attempt_id, "not_applied")  # never sent
        raise
    except CryptolensError as exc:
        await db(store.finish_attempt, rt.engine, attempt_id, failed_outcome(exc))
        raise
    run.outcome.attempts[attempt_id] = "applied"
    return result


def failed_outcome(exc: CryptolensError) -> str:
    if isinstance(exc, OutcomeUnknown):
        return "unknown"
    return "not_applied" if isinstance(exc, Transient) else "refused"


def _unix(value: datetime) -> int:
    return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp())


# -- calls read back by comparison: one unresolved per key -------------------------------


def key_scope(license_: store.LicenseView) -> str:
    return f"key:{license_.ref}"


async def settle_key_calls(run: Run, license_: store.LicenseView, current: LicenseKey) -> None:
    """Settle every unresolved ExtendLicense / BlockKey / UnblockKey on this key against
    the exact state each would have produced (``current``, read under the license lease).

    Raises NotYet while one may still land; an attempt of this run's own intent whose
    effect cannot be told goes to a person (NeedsReview), another intent's is parked for
    a person without stopping this run.
    """
    for attempt in await db(store.open_in_scope, run.rt.engine, key_scope(license_)):
        verdict = _key_verdict(run, attempt, current)
        if verdict == "not_applied":
            run.not_yet(attempt, attempt.method)
        if verdict != "ambiguous":
            run.outcome.attempts[attempt.id] = verdict
            continue
        reason = (
            f"{attempt.method} (attempt {attempt.id}) cannot be told applied or not: the "
            "key's state is neither what it would have produced nor what it was before"
        )
        if attempt.intent_id == run.intent.id:
            raise NeedsReview(reason)
        await db(store.finish_attempt, run.rt.engine, attempt.id, "ambiguous")
        await db(store.set_needs_review, run.rt.engine, attempt.intent_id, reason)
        log.warning("another intent's call needs review", intent=attempt.intent_id)


def _key_verdict(run: Run, attempt: store.OpenAttempt, current: LicenseKey) -> str:
    if attempt.method in ("key/BlockKey", "key/UnblockKey"):
        wanted = attempt.method == "key/BlockKey"
        return "applied" if current.block == wanted else "not_applied"
    expires = _unix(current.expires)
    before = int(attempt.detail["before"])
    added = int(attempt.detail["days"]) * DAY
    if attempt.detail.get("from_now"):
        # ExtendLicense counts from the moment it is applied when the key had expired:
        # any moment between the send and the end of its settle window.
        low = _unix(attempt.sent_at) - READ_BACK_SLACK + added
        high = _unix(run.settle_after(attempt)) + READ_BACK_SLACK + added
        if low <= expires <= high:
            return "applied"
    elif expires == before + added:
        return "applied"
    return "not_applied" if expires == before else "ambiguous"


def _applied_here(run: Run, method: str) -> bool:
    own = run.intent.open_attempts.get(method)
    return own is not None and run.outcome.attempts.get(own.id) == "applied"


# -- extend --------------------------------------------------------------------------------


async def extend(run: Run, license_: store.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt, method = run.rt, "key/ExtendLicense"
    product_id, key = license_.product_id, license_.key
    target = int(run.intent.params["expires_at"])
    current = await rt.client.get_key(product_id, key)
    await settle_key_calls(run, license_, current)
    expires = _unix(current.expires)
    if expires >= target:
        return {"expires": expires, "extended_days": 0, "recovered": _applied_here(run, method)}
    now = _unix(rt.now())
    # ExtendLicense adds to the expiry, or to today when the key has already expired.
    days = math.ceil((target - max(expires, now)) / DAY)
    detail = {"before": expires, "days": days, "target": target, "from_now": expires <= now}
    await mutate(
        run,
        method,
        detail,
        lambda: rt.client.extend_license(product_id, key, days),
        scope=key_scope(license_),
    )
    return {"expires_before": expires, "extended_days": days, "target": target}


# -- block / unblock -------------------------------------------------------------------------


async def set_block(run: Run, license_: store.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt, intent = run.rt, run.intent
    block = intent.effect is Effect.BLOCK
    reason = str(intent.params.get("reason", ""))
    ends = block and reason in ENDING_BLOCKS
    if license_.ended_by is not None and not ends:
        # The license ended (canceled, refunded, disputed): payment-status changes no
        # longer touch the key, whatever their order.
        return {"kept_blocked": license_.ended_by}
    decided_at = license_.block_decided_at
    if not ends and decided_at is not None and intent.occurred_at < decided_at:
        return {"superseded_by": decided_at}
    method = "key/BlockKey" if block else "key/UnblockKey"
    product_id, key = license_.product_id, license_.key
    current = await rt.client.get_key(product_id, key)
    await settle_key_calls(run, license_, current)
    changed = False
    if current.block != block:
        changed = await mutate(
            run,
            method,
            {"reason": reason},
            lambda: (
                rt.client.block_key(product_id, key)
                if block
                else rt.client.unblock_key(product_id, key)
            ),
            scope=key_scope(license_),
        )
    if ends:
        run.outcome.license.update(
            ended_by=license_.ended_by or reason,
            block_reason=license_.ended_by or reason,
            block_decided_at=max(decided_at or intent.occurred_at, intent.occurred_at),
        )
    else:
        run.outcome.license.update(
            block_decided_at=intent.occurred_at, block_reason=reason if block else None
        )
    return {"blocked": block, "changed": changed, "ends_license": ends}


# -- analytics -------------------------------------------------------------------------------


def event_metadata(intent: store.Claimed) -> str:
    """The exact Metadata string sent, also the GetEvents filter that finds it again."""
    metadata = dict(intent.params.get("metadata") or {})
    metadata["intent"] = intent.id
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


async def register_event(run: Run, license_: store.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt, intent = run.rt, run.intent
    product_id, key = license_.product_id, license_.key
    metadata = event_metadata(intent)
    method = "ai/RegisterEvent"
    pending = intent.open_attempts.get(method)
    if pending is not None:
        found = await rt.client.get_events(
            product_id=product_id,
            key=key,
            metadata=metadata,
            time=TimeRange(gte=_unix(pending.sent_at) - READ_BACK_SLACK),
            limit=10,
        )
        if found:
            run.outcome.attempts[pending.id] = "applied"
            return {"event_id": found[0].id, "recovered": True}
        run.not_yet(pending, method)  # GetEvents cannot see a RegisterEvent in flight
    p = intent.params
    await mutate(
        run,
        method,
        {},
        lambda: rt.client.register_event(
            product_id=product_id,
            key=key,
            event_name=str(p["event_name"]),
            value=int(p["value"]) if p.get("value") is not None else None,
            currency=p.get("currency"),
            metadata=metadata,
        ),
        supersedes=pending.id if pending else None,
    )
    return {"registered": True}


async def record_usage(run: Run, license_: store.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt = run.rt
    product_id, key = license_.product_id, license_.key
    method = "subscription/RecordUsage"
    if method in run.intent.open_attempts:
        # Cryptolens offers no way to read a usage counter back.
        raise NeedsReview("a RecordUsage reply was lost and usage cannot be read back")
    amount = int(run.intent.params["amount"])
    await mutate(
        run, method, {"amount": amount}, lambda: rt.client.record_usage(product_id, key, amount)
    )
    return {"recorded": amount}


# -- customers -------------------------------------------------------------------------------


async def link_customer(run: Run, license_: store.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    if license_.customer_id is not None:
        return {"customer_id": license_.customer_id, "already_linked": True}
    buyer = run.intent.params.get("customer") or {}
    email = buyer.get("email")
    if not email:
        return {"customer_id": None, "no_buyer": True}
    customer_id = await _find_or_add_customer(run, str(email), buyer.get("name"))
    await _change_customer(run, license_.product_id, license_.key, customer_id)
    return {"customer_id": customer_id}


async def _change_customer(run: Run, product_id: int, key: str, customer_id: int) -> None:
    rt = run.rt
    # Idempotent (a setting, 7019 in the log): repeated freely, no attempt row.
    await run.send(
        "key/ChangeCustomer", lambda: rt.client.change_customer(product_id, key, customer_id)
    )
    run.outcome.license["customer_id"] = customer_id


@asynccontextmanager
async def held(run: Run, name: str, *, wait: float = 2.0) -> AsyncIterator[None]:
    """Hold the lease ``name``, renewed with the run's: first among this process's jobs
    (an asyncio lock, no polling), then against other processes (the database lease).
    Busy if it stays taken."""
    rt, owner = run.rt, run.intent.owner
    async with rt.local_locks.hold(name, wait):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = 0.005
        while not await db(locks.acquire, rt.engine, name, owner, rt.settings.lease_seconds):
            if loop.time() >= deadline:
                raise Busy(name)
            await asyncio.sleep(delay * (0.5 + rt.random()))
            delay = min(delay * 2, 0.1)
        run.lease.add(name)
        try:
            yield
        finally:
            run.lease.discard(name)
            await db(locks.release, rt.engine, name, owner)


async def _find_or_add_customer(run: Run, email: str, name: str | None) -> int:
    """The Cryptolens customer with this email, added if there is none.

    AddCustomer needs no attempt row: searching by email first is its read-back, so a
    lost reply's customer is found by the next run instead of being added twice. The
    customer lease keeps two licenses of one buyer from adding them twice concurrently.
    """
    rt = run.rt
    async with held(run, f"customer:{email.lower()}", wait=10.0):
        found = await _customer_by_email(rt, email)
        if found is not None:
            return found
        added = await run.send(
            "customer/AddCustomer",
            lambda: rt.client.add_customer(
                name=(name or email)[:100], email=email[:100], company_name=(name or "")[:100]
            ),
        )
        return added.customer_id


async def _customer_by_email(rt: Runtime, email: str) -> int | None:
    matches = [
        c.id
        for c in await rt.client.get_customers(search=email)
        if c.email and c.email.lower() == email.lower()
    ]
    return min(matches) if matches else None


# -- create key --------------------------------------------------------------------------------


A = TypeVar("A")
B = TypeVar("B")


async def together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both at once; the first failure is raised as it is (the runner classifies it),
    once the other has been cancelled and has finished its clean-up."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        a, b = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return a, b


async def create_key(run: Run) -> dict[str, Any]:
    rt, intent = run.rt, run.intent
    license_ = intent.license
    buyer = intent.params.get("customer") or {}
    email = buyer.get("email")
    customer_id = license_.customer_id if license_ is not None else None
    fresh_notes: str | None = None
    source: str | None = None
    if license_ is not None and license_.key and license_.product_id is not None:
        product_id, key = license_.product_id, license_.key
        if email and customer_id is None:
            customer_id = await _find_or_add_customer(run, str(email), buyer.get("name"))
    else:
        template_id, source = await _choose_template(run)
        template = await rt.templates.get(template_id)
        product_id = template.product_id
        # The buyer's search (and addition) does not depend on the key: beside it.
        if email and customer_id is None:
            (key, fresh), customer_id = await together(
                _create_or_recover(run, product_id, template_id),
                _find_or_add_customer(run, str(email), buyer.get("name")),
            )
        else:
            key, fresh = await _create_or_recover(run, product_id, template_id)
        if fresh:
            fresh_notes = template.notes or ""

    # The tag and the link do not depend on each other: together.
    if customer_id is not None and (license_ is None or license_.customer_id is None):
        await together(
            _tag(run, product_id, key, fresh_notes),
            _change_customer(run, product_id, key, customer_id),
        )
    else:
        await _tag(run, product_id, key, fresh_notes)

    result: dict[str, Any] = {"key": key, "product_id": product_id, "tagged": True}
    if source is not None:
        result["template_source"] = source
    if customer_id is not None:
        result["customer_id"] = customer_id
    return result


async def _choose_template(run: Run) -> tuple[int, str]:
    """The template the key is created from, and what named it.

    A subscription start that nothing names a template for waits for its other start
    events (the session may carry metadata, the invoice the price) up to
    ``BRIDGE_START_WAIT_SECONDS`` from when it was stored; only then the default.
    """
    rt, intent = run.rt, run.intent
    params = intent.params
    if params.get("template_id") is not None:
        return int(params["template_id"]), str(params.get("template_source") or "purchase")
    named = await resolve_template(rt, params, default=False)
    if named is not None:
        return named
    if params.get("start") == "subscription":
        waited = (rt.now() - intent.created_at).total_seconds()
        left = rt.settings.start_wait_seconds - waited
        if left > 0:
            raise NotYet("waiting for the subscription's other start events", left)
    fallback = await resolve_template(rt, params, default=True)
    assert fallback is not None  # resolve_template raises NoTemplate otherwise
    log.warning(
        "no template named for this purchase: the default template is used",
        intent=intent.id,
        template_id=fallback[0],
    )
    return fallback


async def _tag(run: Run, product_id: int, key: str, fresh_notes: str | None) -> None:
    """Write the intent's tag into the key's notes (what a read-back recognises).

    A key this run just created has its template's notes: no need to read them back.
    """
    rt = run.rt
    tag = NOTES_TAG.format(intent=run.intent.id)
    notes = fresh_notes
    if notes is None:
        notes = (await rt.client.get_key(product_id, key)).notes or ""
        if tag in notes:
            return
    tagged = (f"{notes} {tag}".strip() if notes else tag)[-500:]
    await run.send("key/ChangeNotes", lambda: rt.client.change_notes(product_id, key, tagged))


async def _create_or_recover(run: Run, product_id: int, template_id: int) -> tuple[str, bool]:
    """The license's key, and whether this call created it.

    Creations in one product are serialized: among this process's jobs by an asyncio lock
    (no polling), across processes by the product's lease, which ``begin_create`` takes
    and ``set_license_key`` drops in the transactions they run anyway.
    """
    rt, intent = run.rt, run.intent
    scope = f"create:{product_id}"
    lease = (scope, intent.owner)
    async with rt.local_locks.hold(scope, 30.0):
        released = False
        try:
            step = await _begin_create(run, product_id, template_id, scope)
            if step.key is not None:
                return step.key, False  # settled just now, from our own lost reply
            assert step.attempt_id is not None
            try:
                created = await run.send(
                    "key/CreateKeyFromTemplate",
                    lambda: rt.client.create_key_from_template(template_id),
                )
            except LeaseLost:
                await db(store.finish_attempt, rt.engine, step.attempt_id, "not_applied")
                raise
            except CryptolensError as exc:
                await db(store.finish_attempt, rt.engine, step.attempt_id, failed_outcome(exc))
                raise
            run.lease.discard(scope)  # released by the transaction below
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
            run.lease.discard(scope)
            if not released:
                await db(locks.release, rt.engine, *lease)


async def _begin_create(
    run: Run, product_id: int, template_id: int, scope: str
) -> store.CreateStep:
    """Take the product's lease (waiting for another process to let go), settle what is
    unresolved, and return a key or a recorded attempt."""
    rt, intent = run.rt, run.intent
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    delay = 0.005
    settled = 0
    while True:
        await run.lease.ensure(run.call_bound + 5)
        step = await db(
            store.begin_create,
            rt.engine,
            intent,
            product_id=product_id,
            template_id=template_id,
            scope=scope,
            lease=rt.settings.lease_seconds,
        )
        if not step.busy:
            run.lease.add(scope)
        if step.lost:
            raise LeaseLost(intent.id)
        if step.changed:
            raise NotYet("another start event of this purchase arrived: merge it first", 0)
        if step.key is not None or step.attempt_id is not None:
            return step
        if step.unresolved:
            # Invariant: at most one CreateKeyFromTemplate of a product is ever
            # unresolved, so the one key a read-back may find unclaimed is that attempt's.
            settled += 1
            if settled > 3:  # pragma: no cover - settling resolves or parks every attempt
                raise Busy(scope)
            await _settle_creates(run, product_id, step.unresolved)
            continue
        if loop.time() >= deadline:
            raise Busy(scope)
        await asyncio.sleep(delay * (0.5 + rt.random()))
        delay = min(delay * 2, 0.1)


async def _settle_creates(run: Run, product_id: int, unresolved: list[store.OpenAttempt]) -> None:
    """Decide every unresolved key creation of the product (held under its lease)."""
    rt = run.rt
    for pending in unresolved:
        try:
            found = await _recover_key(run, pending.intent_id, product_id, pending.sent_at)
        except NeedsReview as exc:
            if pending.intent_id == run.intent.id:
                # Our own earlier creation: this run ends in needs_review (the runner
                # writes it with the attempt), and the product is free again.
                run.outcome.attempts[pending.id] = "ambiguous"
                raise
            # Another intent's: it goes to a person, and the product is free again.
            await db(store.finish_attempt, rt.engine, pending.id, "ambiguous")
            await db(store.set_needs_review, rt.engine, pending.intent_id, str(exc))
            log.warning("key creation needs review", intent=pending.intent_id)
            continue
        if found is None:
            run.not_yet(pending, "key/CreateKeyFromTemplate")
            await db(store.finish_attempt, rt.engine, pending.id, "not_applied")
            continue
        owner_ref = await db(store.intent_ref, rt.engine, pending.intent_id)
        if owner_ref is None:  # pragma: no cover - attempts reference intents by FK
            continue
        await db(store.set_license_key, rt.engine, owner_ref, found, pending.id)
        # License keys are credentials of the vendor's customers: not in logs.
        log.info("key recovered after a lost reply", intent=pending.intent_id)


async def read_log(rt: Runtime, product_id: int, states: list[int], since: int) -> list[WebApiLog]:
    """Every Web API Log entry of ``product_id`` in ``states`` since ``since``, page by
    page (GetWebAPILog returns at most 1,000 a call)."""
    entries: dict[int, WebApiLog] = {}
    start = since
    while True:
        page = await rt.client.get_web_api_log(
            product_id=product_id, states=states, time=TimeRange(gte=start), limit=_LOG_PAGE
        )
        new = [e for e in page if e.id not in entries]
        entries.update((e.id, e) for e in new)
        if len(page) < _LOG_PAGE:
            return sorted(entries.values(), key=lambda e: e.id)
        last = max(e.time for e in page)
        if not new or last == start:
            # A whole page within one second: the time cursor cannot move past it.
            raise NeedsReview("more than 1,000 log entries in one second: cannot page them")
        start = last


async def _recover_key(run: Run, intent_id: str, product_id: int, sent_at: datetime) -> str | None:
    """The key a lost CreateKeyFromTemplate of ``intent_id`` made, or None if it made none.

    NeedsReview where the evidence does not decide (see the module docstring).
    """
    rt = run.rt
    since = _unix(sent_at) - READ_BACK_SLACK
    logs = await read_log(rt, product_id, [3010], since)
    created = {entry.key: entry for entry in logs if entry.key}
    candidates = set(created) - await db(store.claimed_keys, rt.engine, product_id, set(created))
    ours = NOTES_TAG.format(intent=intent_id)
    untagged: list[WebApiLog] = []
    for candidate in sorted(candidates):
        found = await rt.client.get_key(product_id, candidate)
        notes = found.notes or ""
        if ours in notes:
            return found.key
        if TAG_PREFIX not in notes:
            untagged.append(created[candidate])
    if not untagged:
        return None
    if product_id in rt.config.cryptolens.sole_key_maker:
        mine = untagged
    else:
        ips = await _bridge_ips(rt, product_id, since - _IP_LOOKBACK)
        if not ips:
            raise NeedsReview(
                f"{len(untagged)} unclaimed key(s) were created since the lost reply and "
                "nothing tells whether the bridge made them (no earlier key of the bridge "
                "in this product to learn its IP from; see [cryptolens] sole_key_maker): "
                + ", ".join(e.key or "" for e in untagged)
            )
        mine = [e for e in untagged if e.ip and e.ip in ips]
    if len(mine) > 1:
        keys = ", ".join(e.key or "" for e in mine)
        raise NeedsReview(f"several unclaimed keys of the bridge since the lost reply: {keys}")
    return mine[0].key if mine else None


async def _bridge_ips(rt: Runtime, product_id: int, since: int) -> set[str]:
    """The (anonymized) IPs the bridge's own key creations and tags came from."""
    entries = await read_log(rt, product_id, list(_BRIDGE_STATES), since)
    keys = {e.key for e in entries if e.key}
    held = await db(store.claimed_keys, rt.engine, product_id, keys)
    return {e.ip for e in entries if e.key in held and e.ip}
