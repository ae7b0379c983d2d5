"""CreateKey mode of CREATE_KEY: the template's parameters, the intent's tag in the notes
(``bridge.core.intents.notes_tag``) and the buyer in one call, then the template's later
calls (a v2 template's data objects). A lost reply is read back, once the call can no
longer land, by GetKeys ``notes.contains("<tag>")``: found, the key is ours (with its
customer); absent, it was not created.
"""

from __future__ import annotations

import functools
from typing import Any

from bridge.core.intents import creation_notes, notes_tag
from bridge.core.logs import get_logger
from bridge.cryptolens import CryptolensError
from bridge.cryptolens.models import CreatedKey, DataObject, LicenseKey, LicenseTemplate
from bridge.store import attempts, creations, licenses, wake
from jobs.dbcall import in_thread
from jobs.effects.customers import change_customer, find_or_add_customer
from jobs.effects.run import Run, failed_outcome, mutate
from jobs.errors import LeaseLost, NeedsReview, NotYet
from jobs.runtime import Runtime

log = get_logger(__name__)

CREATE = "key/CreateKey"
ADD_OBJECT = "data/AddDataObjectToKey"


async def create_tagged(run: Run, template: LicenseTemplate, source: str) -> dict[str, Any]:
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
    await follow_up(run, template, product_id, key_string, objects)
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


async def follow_up(
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
