"""CREATE_KEY: one key per license, whatever the order of its start events, and a lost
creation settled from the Web API Log on evidence, never by guess."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.core import locks
from bridge.core.intents import NOTES_TAG, TAG_PREFIX
from bridge.core.logs import get_logger
from bridge.cryptolens import CryptolensError
from bridge.cryptolens.models import TimeRange, WebApiLog
from jobs import store
from jobs.dbcall import db
from jobs.effects.customers import change_customer, find_or_add_customer
from jobs.effects.run import DAY, READ_BACK_SLACK, Run, failed_outcome, together, unix
from jobs.errors import Busy, LeaseLost, NeedsReview, NotYet
from jobs.runtime import Runtime
from jobs.templates import final_template, resolve_template

log = get_logger(__name__)

# States of the Web API Log written by the calls the bridge makes on the keys it creates
# (CreateKeyFromTemplate, ChangeNotes): their callers' IPs are the bridge's.
_BRIDGE_STATES = (3010, 7017)
_LOG_PAGE = 1000  # GetWebAPILog's Limit is at most 1,000
# How far back the bridge's own IPs are looked for, before a lost creation's window.
_IP_LOOKBACK = 7 * DAY


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
            customer_id = await find_or_add_customer(
                run, str(email), buyer.get("name"), buyer.get("company")
            )
    else:
        template_id, source = await _choose_template(run)
        template = await rt.templates.get(template_id)
        product_id = template.product_id
        # The buyer's search (and addition) does not depend on the key: beside it.
        if email and customer_id is None:
            (key, fresh), customer_id = await together(
                _create_or_recover(run, product_id, template_id),
                find_or_add_customer(run, str(email), buyer.get("name"), buyer.get("company")),
            )
        else:
            key, fresh = await _create_or_recover(run, product_id, template_id)
        if fresh:
            fresh_notes = template.notes or ""
        # What waits for the key without needing the license (the purchase event) starts
        # now, beside the tag and the link below.
        for woken in await db(store.wake_shared, rt.engine, intent.ref):
            run.start(woken)

    # The tag and the link do not depend on each other: together.
    if customer_id is not None and (license_ is None or license_.customer_id is None):
        await together(
            _tag(run, product_id, key, fresh_notes),
            change_customer(run, product_id, key, customer_id),
        )
        if intent.params.get("start") == "deal":
            # The deal's buyer at its win: a later contact change (set_customer) is newer.
            run.outcome.license["customer_decided_at"] = intent.occurred_at
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

    Decided once no start event still to come can change it (``final_template``: a
    subscription's may name a richer template, unless Stripe says what they hold);
    while one may, the creation waits for it up to ``BRIDGE_START_WAIT_SECONDS`` from
    when it was stored, then takes the best hint in hand, else the default.
    """
    rt, intent = run.rt, run.intent
    chosen = await final_template(rt, intent.ref, intent.params)
    if chosen is None:
        waited = (rt.now() - intent.created_at).total_seconds()
        left = rt.settings.start_wait_seconds - waited
        if left > 0:
            raise NotYet("waiting for the purchase's other start events", left)
        chosen = await resolve_template(rt, intent.ref, intent.params, default=True)
        assert chosen is not None  # resolve_template raises NoTemplate otherwise
    if chosen[1] == "default":
        log.warning(
            "no template named for this purchase: the default template is used",
            intent=intent.id,
            template_id=chosen[0],
        )
    return chosen


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

    Creations of one template run concurrently, across jobs and workers; the product's
    creation gate (``store.begin_create``) keeps out what would make a lost reply's key
    ambiguous, and is held only while deciding (or while settling unknown creations).
    """
    rt, intent = run.rt, run.intent
    scope = f"create:{product_id}"
    step = await _begin_create(run, product_id, template_id, scope)
    if step.key is not None:
        return step.key, False  # settled just now, from our own lost reply
    assert step.attempt_id is not None
    try:
        created = await run.send(
            "key/CreateKeyFromTemplate", lambda: rt.client.create_key_from_template(template_id)
        )
    except LeaseLost:
        await db(store.finish_attempt, rt.engine, step.attempt_id, "not_applied")
        raise
    except CryptolensError as exc:
        await db(store.finish_attempt, rt.engine, step.attempt_id, failed_outcome(exc))
        raise
    await db(store.set_license_key, rt.engine, intent.ref, created.key, step.attempt_id)
    return created.key, True


async def _begin_create(
    run: Run, product_id: int, template_id: int, scope: str
) -> store.CreateStep:
    """Pass the product's creation gate: wait while it is held or must drain, settle what
    is unknown (holding the gate), and return a key or a recorded attempt."""
    rt, intent = run.rt, run.intent
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    delay = 0.005
    settled = 0
    while True:
        await run.lease.ensure(run.call_bound * 1.25)
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
        if step.changed:
            raise NotYet("another start event of this purchase arrived: merge it first", 0)
        if step.key is not None or step.attempt_id is not None:
            return step
        if step.unresolved:
            settled += 1
            if settled > 3:  # pragma: no cover - settling resolves or parks every attempt
                raise Busy(scope)
            run.lease.add(scope)  # the gate stays ours while we settle
            try:
                await _settle_creates(run, product_id, step.unresolved)
            except BaseException:
                run.lease.discard(scope)
                await db(locks.release, rt.engine, scope, intent.owner)
                raise
            run.lease.discard(scope)  # the next begin_create takes it back and drops it
            continue
        # busy (another run settles) or drain (creations in flight must end first)
        if loop.time() >= deadline:
            raise Busy(scope)
        await asyncio.sleep(delay * (0.5 + rt.random()))
        delay = min(delay * 2, 0.1)


async def _settle_creates(run: Run, product_id: int, unknown: list[store.OpenAttempt]) -> None:
    """Decide every unknown key creation of the product together (under its gate, with
    nothing of the product in flight): the bridge's new keys in the Web API Log since
    the first of them, minus every key it holds, go one to one to those attempts."""
    rt = run.rt
    try:
        found = await _recover_keys(run, product_id, unknown)
    except NeedsReview as exc:
        # Keys we cannot attribute: those intents go to a person, nothing is re-sent,
        # and the product is free again for the others.
        for attempt in unknown:
            if attempt.intent_id == run.intent.id:
                run.outcome.attempts[attempt.id] = "ambiguous"
                continue
            await db(store.finish_attempt, rt.engine, attempt.id, "ambiguous")
            await db(store.set_needs_review, rt.engine, attempt.intent_id, str(exc))
            log.warning("key creation needs review", intent=attempt.intent_id)
        if any(a.intent_id == run.intent.id for a in unknown):
            raise
        return
    # The keys found are given at once (any of those attempts may have made any of
    # them); an attempt left without one made none only once no call of the window can
    # still land, since a late one would leave its key to nobody.
    for attempt in unknown:
        key = found.get(attempt.id)
        if key is None:
            continue
        owner_ref = await db(store.intent_ref, rt.engine, attempt.intent_id)
        if owner_ref is None:  # pragma: no cover - attempts reference intents by FK
            continue
        await db(store.set_license_key, rt.engine, owner_ref, key, attempt.id)
        # License keys are credentials of the vendor's customers: not in logs.
        log.info("key recovered after a lost reply", intent=attempt.intent_id)
    left = [a for a in unknown if a.id not in found]
    for attempt in left:
        run.not_yet(attempt, "key/CreateKeyFromTemplate")
    for attempt in left:
        await db(store.finish_attempt, rt.engine, attempt.id, "not_applied")


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


async def _recover_keys(
    run: Run, product_id: int, unknown: list[store.OpenAttempt]
) -> dict[int, str]:
    """Which key each unknown creation made (attempt id -> key; absent: none).

    Keys made from one template are interchangeable until tagged, so k unknown attempts
    and m <= k new keys of the bridge: the m keys go to m of the attempts (by order), and
    the others made none. A key whose notes already carry an intent's tag goes to that
    intent. NeedsReview where the evidence does not decide (see the package docstring).
    """
    rt = run.rt
    since = min(unix(a.sent_at) for a in unknown) - READ_BACK_SLACK
    logs = await read_log(rt, product_id, [3010], since)
    created = {entry.key: entry for entry in logs if entry.key}
    candidates = set(created) - await db(store.claimed_keys, rt.engine, product_id, set(created))
    tags = {NOTES_TAG.format(intent=a.intent_id): a for a in unknown}
    found: dict[int, str] = {}
    untagged: list[WebApiLog] = []
    for candidate in sorted(candidates, key=lambda k: created[k].id):
        key = await rt.client.get_key(product_id, candidate)
        notes = key.notes or ""
        tagged = next((a for tag, a in tags.items() if tag in notes), None)
        if tagged is not None:
            found[tagged.id] = key.key
        elif TAG_PREFIX not in notes:
            untagged.append(created[candidate])
    left = [a for a in unknown if a.id not in found]
    if not untagged or not left:
        return found  # every unknown attempt has its key, or no key is left to give
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
    if len(mine) > len(left):
        keys = ", ".join(e.key or "" for e in mine)
        raise NeedsReview(
            f"{len(mine)} unclaimed keys of the bridge for {len(left)} lost creation "
            f"replies: {keys}"
        )
    for attempt, entry in zip(sorted(left, key=lambda a: a.id), mine, strict=False):
        assert entry.key is not None
        found[attempt.id] = entry.key
    return found


async def _bridge_ips(rt: Runtime, product_id: int, since: int) -> set[str]:
    """The (anonymized) IPs the bridge's own key creations and tags came from."""
    entries = await read_log(rt, product_id, list(_BRIDGE_STATES), since)
    keys = {e.key for e in entries if e.key}
    held = await db(store.claimed_keys, rt.engine, product_id, keys)
    return {e.ip for e in entries if e.key in held and e.ip}
