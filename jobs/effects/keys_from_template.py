"""CreateKeyFromTemplate mode of CREATE_KEY (``[cryptolens] create_from_template``, for a
token feature-locked to templates): the key carries no tag until ChangeNotes, so a lost
reply is settled only where the bridge is the product's sole key maker (``[cryptolens]
sole_key_maker``), from the Web API Log under the product's creation gate; elsewhere it
goes to a person.
"""

from __future__ import annotations

import asyncio

from bridge.core.intents import TAG_PREFIX, notes_tag
from bridge.core.logs import get_logger
from bridge.cryptolens import CryptolensError, NotFound
from bridge.cryptolens.models import LicenseKey, LicenseTemplate, TimeRange, WebApiLog
from bridge.store import attempts, creations, intents, leases, licenses, lookups
from jobs.dbcall import in_thread
from jobs.effects.run import READ_BACK_SLACK, Run, failed_outcome, unix
from jobs.errors import Busy, LeaseLost, NeedsReview, NotYet
from jobs.runtime import Runtime

log = get_logger(__name__)

_LOG_PAGE = 1000  # GetWebAPILog's Limit is at most 1,000
FROM_TEMPLATE = "key/CreateKeyFromTemplate"


async def create_or_recover(run: Run, product_id: int, template_id: int) -> tuple[str, bool]:
    """The license's key, and whether this call created it.

    Creations of one template run concurrently, across jobs and workers; the product's
    creation gate (``creations.begin_create``) keeps out what would make a lost reply's key
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
            FROM_TEMPLATE, lambda: rt.client.create_key_from_template(template_id)
        )
    except LeaseLost:
        await in_thread(attempts.finish_attempt, rt.engine, step.attempt_id, "not_applied")
        raise
    except CryptolensError as exc:
        await in_thread(attempts.finish_attempt, rt.engine, step.attempt_id, failed_outcome(exc))
        raise
    await in_thread(licenses.set_license_key, rt.engine, intent.ref, created.key, step.attempt_id)
    return created.key, True


async def _begin_create(
    run: Run, product_id: int, template_id: int, scope: str
) -> creations.CreateStep:
    """Pass the product's creation gate: wait while it is held or must drain, settle what
    is unknown (holding the gate), and return a key or a recorded attempt."""
    rt, intent = run.rt, run.intent
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    delay = 0.005
    settled = 0
    while True:
        await run.lease.ensure(run.call_bound * 1.25)
        step = await in_thread(
            creations.begin_create,
            rt.engine,
            intent,
            product_id=product_id,
            template_id=template_id,
            scope=scope,
            lease=rt.settings.lease_seconds,
            now=rt.now(),
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
                await in_thread(leases.release, rt.engine, scope, intent.owner)
                raise
            run.lease.discard(scope)  # the next begin_create takes it back and drops it
            continue
        # busy (another run settles) or drain (creations in flight must end first)
        if loop.time() >= deadline:
            raise Busy(scope)
        await asyncio.sleep(delay * (0.5 + rt.random()))
        delay = min(delay * 2, 0.1)


async def _settle_creates(run: Run, product_id: int, unknown: list[attempts.OpenAttempt]) -> None:
    """Decide every unknown key creation of the product together (under its gate, with
    nothing of the product in flight): the bridge's new keys in the Web API Log since
    the first of them, minus every key it holds, go one to one to those attempts."""
    rt = run.rt
    try:
        found = await _recover_keys(run, product_id, unknown)
    except NeedsReview as exc:
        # Keys we cannot attribute: those intents go to a person, nothing is re-sent,
        # and the product is free again for the others. The keys listed stay out of
        # every other creation's candidates while the review is open.
        listed = exc.keys if isinstance(exc, _Candidates) else []
        for attempt in unknown:
            await in_thread(attempts.list_candidates, rt.engine, attempt.id, listed)
            if attempt.intent_id == run.intent.id:
                run.outcome.attempts[attempt.id] = "ambiguous"
                continue
            await in_thread(attempts.finish_attempt, rt.engine, attempt.id, "ambiguous")
            await in_thread(intents.set_needs_review, rt.engine, attempt.intent_id, str(exc))
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
        owner_ref = await in_thread(lookups.intent_ref, rt.engine, attempt.intent_id)
        if owner_ref is None:  # pragma: no cover - attempts reference intents by FK
            continue
        await in_thread(licenses.set_license_key, rt.engine, owner_ref, key, attempt.id)
        # License keys are credentials of the vendor's customers: not in logs.
        log.info("key recovered after a lost reply", intent=attempt.intent_id)
    left = [a for a in unknown if a.id not in found]
    for attempt in left:
        run.not_yet(attempt, FROM_TEMPLATE)
    for attempt in left:
        await in_thread(attempts.finish_attempt, rt.engine, attempt.id, "not_applied")


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


class _Candidates(NeedsReview):
    """A lost creation's candidate keys that no rule gives: listed for a person, and held
    back from every other creation while that review is open."""

    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message + ": " + ", ".join(keys))
        self.keys = keys


def made_from(template: LicenseTemplate, key: LicenseKey) -> bool:
    """Whether ``key`` has the settings a key made from ``template`` starts with (its
    period and features): a key of another template is no candidate."""
    params = template.key_parameters()
    if int(params.get("Period") or 0) != key.period:
        return False
    return all(bool(params.get(f"F{i}")) == getattr(key, f"f{i}") for i in range(1, 9))


async def _recover_keys(
    run: Run, product_id: int, unknown: list[attempts.OpenAttempt]
) -> dict[int, str]:
    """Which key each unknown CreateKeyFromTemplate made (attempt id -> key; absent: none).

    The candidates are the product's keys in the Web API Log (state 3010) since the first
    of them, less every key a license holds or an open review lists, less keys Cryptolens
    no longer has, less keys not made from the template. A key whose notes carry an
    intent's tag goes to that intent. An untagged candidate is the bridge's only where
    the product is declared the bridge's alone (``[cryptolens] sole_key_maker``): keys
    of one template are interchangeable until tagged, so k unknown attempts and m <= k
    such keys: the m keys go to m of the attempts, and the others made none. Anywhere
    else, or with more such keys than attempts, a person decides (nothing is guessed from
    IPs or counts).
    """
    rt = run.rt
    since = min(unix(a.sent_at) for a in unknown) - READ_BACK_SLACK
    logs = await read_log(rt, product_id, [3010], since)
    created = {entry.key: entry for entry in logs if entry.key}
    candidates = set(created) - await in_thread(
        licenses.claimed_keys, rt.engine, product_id, set(created)
    )
    tags = {notes_tag(a.intent_id): a for a in unknown}
    template_ids = {int(a.detail.get("template_id") or 0) for a in unknown}
    # The gate lets only one template's creations overlap; a template per attempt anyway.
    templates = [await rt.templates.get(t) for t in sorted(template_ids) if t]
    found: dict[int, str] = {}
    untagged: list[str] = []
    for candidate in sorted(candidates, key=lambda k: created[k].id):
        try:
            key = await rt.client.get_key(product_id, candidate)
        except NotFound:
            continue  # deleted since: no candidate (and no reason to fail the run)
        notes = key.notes or ""
        tagged = next((a for tag, a in tags.items() if tag in notes), None)
        if tagged is not None:
            found[tagged.id] = key.key
        elif TAG_PREFIX not in notes and any(made_from(t, key) for t in templates):
            untagged.append(key.key)
    left = [a for a in unknown if a.id not in found]
    if not untagged or not left:
        return found  # every unknown attempt has its key, or no key is left to give
    if product_id not in rt.config.cryptolens.sole_key_maker:
        raise _Candidates(
            f"{len(untagged)} untagged key(s) of the template were created since the lost "
            "reply, and a CreateKeyFromTemplate key carries nothing of the bridge's: "
            "whose they are is not known (see [cryptolens] sole_key_maker)",
            untagged,
        )
    if len(untagged) > len(left):
        raise _Candidates(
            f"{len(untagged)} untagged keys of the template for {len(left)} lost creation replies",
            untagged,
        )
    for attempt, key_string in zip(sorted(left, key=lambda a: a.id), untagged, strict=False):
        found[attempt.id] = key_string
    return found
