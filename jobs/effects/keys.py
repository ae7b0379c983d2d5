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

Each mode has its module: :mod:`jobs.effects.keys_tagged` (CreateKey) and
:mod:`jobs.effects.keys_from_template` (CreateKeyFromTemplate); this one picks the mode,
the template and the buyer, and writes the tag.
"""

from __future__ import annotations

from typing import Any

from bridge.core.intents import notes_tag
from bridge.core.logs import get_logger
from bridge.store import wake
from bridge.template_choice import Waiting, choose_template
from jobs.dbcall import in_thread
from jobs.effects.customers import change_customer, find_or_add_customer
from jobs.effects.keys_from_template import FROM_TEMPLATE, create_or_recover
from jobs.effects.keys_tagged import create_tagged, follow_up
from jobs.effects.run import Run, together
from jobs.errors import NotYet

log = get_logger(__name__)


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
                await follow_up(run, template, product_id, key, current.data_objects)
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
            return await create_tagged(run, template, source)
        product_id = template.product_id
        # The buyer's search (and addition) does not depend on the key: beside it.
        if email and customer_id is None:
            (key, fresh), customer_id = await together(
                create_or_recover(run, product_id, template_id),
                find_or_add_customer(run, str(email), buyer.get("name"), buyer.get("company")),
            )
        else:
            key, fresh = await create_or_recover(run, product_id, template_id)
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
