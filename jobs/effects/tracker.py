"""TRACK_REVENUE and TRACK_EVENT: payments and business events to myTracker.

A run sends its own item and its companions' (``claims.Claimed.companions``: due items of
the same effect, of any license) in one batch call, within myTracker's 20 items and
10 KB; companions past that go back to pending for their own runs. Every member gets an
attempt row before the call, and the call's outcome settles them all.

- Revenue: ``idTransaction`` is the Stripe invoice or checkout session id, and myTracker
  keeps one revenue per idTransaction, so an item whose call is unresolved (no complete
  reply, a 5xx) is simply sent again: myTracker drops the copy.
- Custom events (a refund, a won deal) are not deduped by myTracker: an unresolved call
  sends its items to a person (``needs_review``), never again by itself.
- A batch refused with 400 (bad data) imported nothing, and names no item: its members
  go back to pending and are sent alone, so only the bad item fails, with myTracker's
  reason. A 403 fails the items as a configuration error (the key or the app id).
"""

from __future__ import annotations

from typing import Any

from bridge.core.intents import Effect
from bridge.mytracker import api
from bridge.store import attempts, claims, intents, lookups
from jobs.dbcall import in_thread
from jobs.effects.run import Run
from jobs.errors import LeaseLost, NeedsReview, NotYet

_KINDS = {Effect.TRACK_REVENUE: api.Kind.REVENUE, Effect.TRACK_EVENT: api.Kind.EVENT}


def method_of(effect: Effect) -> str:
    return f"mytracker/{_KINDS[effect].value}"


async def _item(run: Run, intent: claims.Claimed) -> dict[str, Any]:
    """The item as sent: its user filled where the planner could not name one (a guest's
    refund: the session that bought the key; else the license, never a person)."""
    item = dict(intent.params["item"])
    if not item.get("customUserId"):
        session = await in_thread(lookups.checkout_session, run.rt.engine, intent.license_ref)
        item["customUserId"] = session or intent.license_ref
    return item


async def track(run: Run) -> dict[str, Any]:
    rt, intent = run.rt, run.intent
    app_id, client = rt.config.mytracker.app_id, rt.tracker
    if app_id is None or client is None:
        raise api.TrackerConfigError(
            "configuration: this myTracker item was planned while [mytracker] app_id was "
            "set, and the worker has none now; set it again, then replay"
        )
    kind, method = _KINDS[intent.effect], method_of(intent.effect)
    unresolved = intent.open_attempts.get(method)
    if unresolved is not None and kind is api.Kind.EVENT:
        raise NeedsReview(
            "a myTracker customEvent was sent and its reply lost; myTracker does not dedupe "
            "custom events, so it is not sent again. Check the app's events for "
            f"{intent.params['item']}, then mark this intent done or replay it."
        )
    members = [intent, *intent.companions]
    items = [await _item(run, m) for m in members]
    size = len(members)
    while size > 1 and not api.fits(items[:size]):
        size -= 1
    if not api.fits(items[:size]):
        raise api.TrackerRefused(f"myTracker {kind.value}: the item alone is over 10 KB")
    if size < len(members):
        spare = [m.id for m in members[size:]]
        await in_thread(intents.release_companions, rt.engine, intent.owner, spare)
        run.lease.discard_companions(spare)
        members, items = members[:size], items[:size]
    await _send(run, app_id, client, kind, method, members, items)
    if unresolved is not None:
        run.outcome.attempts[unresolved.id] = "resent"  # this send settles the earlier one
    for companion in members[1:]:
        run.outcome.results[companion.id] = {"tracked": kind.value, "with": intent.id}
    return {"tracked": kind.value, "items": len(members), "resent": unresolved is not None}


async def _send(
    run: Run,
    app_id: int,
    client: Any,
    kind: api.Kind,
    method: str,
    members: list[claims.Claimed],
    items: list[dict[str, Any]],
) -> None:
    rt = run.rt
    await run.lease.confirm()  # every member's lease: a lost run leaves no attempt
    detail = {"lead": run.intent.id, "items": len(members)}
    started = await in_thread(
        attempts.start_attempts, rt.engine, method, {m.id: detail for m in members}, supersedes=[]
    )
    ids = list(started.values())
    try:
        await run.send(method, lambda: api.send(client, app_id, kind, items), confirmed=True)
    except LeaseLost:
        await in_thread(attempts.finish_attempts, rt.engine, ids, "not_applied")  # never sent
        raise
    except api.TrackerTransient:
        await in_thread(attempts.finish_attempts, rt.engine, ids, "not_applied")
        raise
    except (api.TrackerRefused, api.TrackerConfigError) as exc:
        await in_thread(attempts.finish_attempts, rt.engine, ids, "refused")  # nothing imported
        if isinstance(exc, api.TrackerRefused) and len(members) > 1:
            # Which item broke the rules myTracker does not say: each is sent alone.
            raise NotYet(f"{exc}; its {len(members)} items are sent one by one", 0) from None
        raise
    except BaseException:
        # No reply, a 5xx, a cancelled call: maybe imported (read again as above).
        await in_thread(attempts.finish_attempts, rt.engine, ids, "unknown")
        raise
    for attempt_id in ids:
        run.outcome.attempts[attempt_id] = "applied"
