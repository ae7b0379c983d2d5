"""CREATE_KEY: one key per license, whatever the order of its start events, and a lost
creation settled by what the bridge wrote into its key, never by guess.

Two modes, per product:

- CreateKey (the default): the template's parameters, the intent's tag in the notes
  (``bridge.core.intents.notes_tag``) and the buyer in one call. A lost reply is read
  back, once the call can no longer land, by GetKeys ``notes.contains("<tag>")``: found,
  the key is ours (with its customer); absent, it was not created.
- CreateKeyFromTemplate (``[cryptolens] create_from_template``, for a token
  feature-locked to templates): the key carries no tag until ChangeNotes, so a lost
  reply is settled only where the bridge is the product's sole key maker
  (``[cryptolens] sole_key_maker``), from the Web API Log under the product's creation
  gate; elsewhere it goes to a person.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from bridge.core.intents import TAG_PREFIX, creation_notes, notes_tag
from bridge.core.logs import get_logger
from bridge.cryptolens import CryptolensError, NotFound
from bridge.cryptolens.models import (
    CreatedKey,
    DataObject,
    LicenseKey,
    LicenseTemplate,
    TimeRange,
    WebApiLog,
)
from bridge.store import attempts, creations, intents, leases, licenses, wake
from bridge.template_choice import Waiting, choose_template
from jobs.dbcall import in_thread
from jobs.effects.customers import change_customer, find_or_add_customer
from jobs.effects.run import READ_BACK_SLACK, Run, failed_outcome, mutate, together, unix
from jobs.errors import Busy, LeaseLost, NeedsReview, NotYet
from jobs.runtime import Runtime

log = get_logger(__name__)

_LOG_PAGE = 1000  # GetWebAPILog's Limit is at most 1,000
CREATE = "key/CreateKey"
FROM_TEMPLATE = "key/CreateKeyFromTemplate"
ADD_OBJECT = "data/AddDataObjectToKey"


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
        if product_id not in rt.config.cryptolens.create_from_template:
            # A template's later calls cut off by a failure: applied now.
            template = await rt.templates.get((await _choose_template(run))[0])
            if template.follow_up():
                current = await rt.client.get_key(product_id, key)
                await _follow_up(run, template, product_id, key, current.data_objects)
        if email and customer_id is None:
            customer_id = await find_or_add_customer(
                run, str(email), buyer.get("name"), buyer.get("company")
            )
    else:
        template_id, source = await _choose_template(run)
        template = await rt.templates.get(template_id)
        # A CreateKeyFromTemplate still unsettled (sent before the product's mode changed)
        # is settled the way it was sent.
        legacy = FROM_TEMPLATE in intent.open_attempts
        if template.product_id not in rt.config.cryptolens.create_from_template and not legacy:
            return await _create_tagged(run, template, source)
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
        for woken in await in_thread(wake.wake_lease_free, rt.engine, intent.ref):
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


async def _create_tagged(run: Run, template: LicenseTemplate, source: str) -> dict[str, Any]:
    """CreateKey mode: the key this intent's tag names, read back after a lost reply, or
    a new one made with the tag and the buyer; then the template's later calls."""
    rt, intent = run.rt, run.intent
    buyer = intent.params.get("customer") or {}
    email = buyer.get("email")
    unsupported = template.unsupported()
    if unsupported:
        raise NeedsReview(
            f"template {template.id} makes calls the bridge cannot make: {unsupported}"
        )
    customer_id: int | None = None
    found = await _settle_tagged(run)
    if found is not None:
        made, key = found
        product_id = key.product_id
        if made != template.id:  # the hint changed after the lost creation: made's key
            template = await rt.templates.get(made)
        customer_id = key.customer.id if key.customer is not None else None
        key_string, objects = key.key, key.data_objects
    else:
        created = await _create(run, template, email, buyer)
        product_id, key_string, objects = template.product_id, created.key, ()
        customer_id = created.customer_id
    # What waits for the key without needing the license (the purchase event) starts now.
    for woken in await in_thread(wake.wake_lease_free, rt.engine, intent.ref):
        run.start(woken)
    await _follow_up(run, template, product_id, key_string, objects)
    if email and customer_id is None:
        # A key made before the buyer was known: found (or added) and linked now.
        customer_id = await find_or_add_customer(
            run, str(email), buyer.get("name"), buyer.get("company")
        )
        await change_customer(run, product_id, key_string, customer_id)
    elif customer_id is not None:
        run.outcome.license["customer_id"] = customer_id
    if customer_id is not None and intent.params.get("start") == "deal":
        run.outcome.license["customer_decided_at"] = intent.occurred_at
    result: dict[str, Any] = {
        "key": key_string,
        "product_id": product_id,
        "tagged": True,
        "template_source": source,
    }
    if customer_id is not None:
        result["customer_id"] = customer_id
    return result


async def _settle_tagged(run: Run) -> tuple[int, LicenseKey] | None:
    """This intent's earlier CreateKey whose outcome is unknown, decided by its tag: (its
    template, the key) as soon as the key is there, or None (no such call, or it made
    none: decided only once the call can no longer land)."""
    rt, intent = run.rt, run.intent
    attempt = intent.open_attempts.get(CREATE)
    if attempt is None:
        return None
    product_id = int(attempt.detail["product_id"])
    # Found, the key is ours whenever it is read (the tag is this intent's alone); absent
    # is final only for a read begun once the call can no longer land.
    final = rt.now() >= run.settle_after(attempt)
    key = await find_tagged(rt, product_id, notes_tag(intent.id))
    if key is None:
        if not final:
            left = (run.settle_after(attempt) - rt.now()).total_seconds()
            raise NotYet(f"{CREATE} may still land", max(left, 0.0))
        await in_thread(attempts.finish_attempt, rt.engine, attempt.id, "not_applied")
        return None
    await in_thread(
        licenses.set_license_key,
        rt.engine,
        intent.ref,
        key.key,
        attempt.id,
        product=(product_id, int(attempt.detail["template_id"])),
    )
    log.info("key found by its tag after a lost reply", intent=intent.id)
    return int(attempt.detail["template_id"]), key


async def find_tagged(rt: Runtime, product_id: int, tag: str) -> LicenseKey | None:
    """The product's key whose notes hold ``tag`` (with its customer), or None. Two such
    keys (someone copied a tag) go to a person."""
    page = await rt.client.get_keys(product_id, f'notes.contains("{tag}")')
    keys = [k for k in page.keys if tag in (k.notes or "")]
    if len(keys) > 1:
        raise NeedsReview(
            f"{len(keys)} keys carry the tag {tag}: " + ", ".join(k.key for k in keys)
        )
    return keys[0] if keys else None


async def _create(
    run: Run, template: LicenseTemplate, email: Any, buyer: dict[str, Any]
) -> CreatedKey:
    """Record the attempt, then CreateKey with the tag (and the buyer, when known)."""
    rt, intent = run.rt, run.intent
    product_id = template.product_id
    await run.lease.ensure(run.call_bound * 1.25)
    step = await in_thread(
        creations.begin_tagged_create,
        rt.engine,
        intent,
        product_id=product_id,
        template_id=template.id,
    )
    if step.lost:
        raise LeaseLost(intent.id)
    if step.changed:
        raise NotYet("another start event of this purchase arrived: merge it first", 0)
    if step.key is not None:
        raise NotYet("the license got its key meanwhile", 0)
    assert step.attempt_id is not None
    notes = creation_notes(template.notes, notes_tag(intent.id))
    try:
        created = await run.send(
            CREATE,
            lambda: rt.client.create_key(
                product_id,
                template.key_parameters(),
                notes=notes,
                email=str(email) if email else None,
                name=buyer.get("name"),
                company=buyer.get("company"),
            ),
        )
    except LeaseLost:
        await in_thread(attempts.finish_attempt, rt.engine, step.attempt_id, "not_applied")
        raise
    except CryptolensError as exc:
        await in_thread(attempts.finish_attempt, rt.engine, step.attempt_id, failed_outcome(exc))
        raise
    await in_thread(licenses.set_license_key, rt.engine, intent.ref, created.key, step.attempt_id)
    return created


async def _follow_up(
    run: Run,
    template: LicenseTemplate,
    product_id: int,
    key: str,
    objects: tuple[DataObject, ...],
) -> None:
    """A v2 template's AddDataObjectToKey calls, each once: one whose reply was lost is
    read back (the key's objects by name) once it can no longer land."""
    steps = template.follow_up()
    if not steps:
        return
    rt = run.rt
    open_ = run.intent.open_attempts.get(ADD_OBJECT)
    if open_ is not None:
        run.not_yet(open_, ADD_OBJECT)
        objects = (await rt.client.get_key(product_id, key)).data_objects
        landed = any(o.name == open_.detail.get("name") for o in objects)
        run.outcome.attempts[open_.id] = "applied" if landed else "not_applied"
    names = [o.name for o in objects]
    for _method, params in steps:
        name = str(params.get("Name") or "")
        if name in names:
            names.remove(name)  # one object a call: two calls of one name make two
            continue
        value = params.get("StringValue")
        add = functools.partial(
            rt.client.add_data_object_to_key,
            product_id,
            key,
            name=name,
            int_value=int(params.get("IntValue") or 0),
            string_value=None if value is None else str(value),
        )
        await mutate(run, ADD_OBJECT, {"name": name}, add)


async def _choose_template(run: Run) -> tuple[int, str]:
    """The template the key is created from, and what named it: the one choice
    (``bridge.template_choice.choose_template``, which the dry run asks too); while a
    start event still to come may name a richer one, the creation waits for it."""
    rt, intent = run.rt, run.intent
    waited = (rt.now() - intent.created_at).total_seconds()
    chosen = await choose_template(rt, intent.ref, intent.params, waited=waited)
    if isinstance(chosen, Waiting):
        raise NotYet("waiting for the purchase's other start events", chosen.seconds)
    if chosen.source == "default":
        log.warning(
            "no template named for this purchase: the default template is used",
            intent=intent.id,
            template_id=chosen.template_id,
        )
    return chosen


async def _tag(run: Run, product_id: int, key: str, fresh_notes: str | None) -> None:
    """Write the intent's tag into the key's notes (what a read-back recognises).

    A key this run just created has its template's notes: no need to read them back.
    """
    rt = run.rt
    tag = notes_tag(run.intent.id)
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
        owner_ref = await in_thread(intents.intent_ref, rt.engine, attempt.intent_id)
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
