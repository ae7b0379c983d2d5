"""REGISTER_EVENT: analytics with the intent id in the Metadata GetEvents finds it by.

Several events of one key that are due together (a replay, a backlog after an outage, a
new key's purchase and renewal) go in one RegisterEvents call: the claim takes the
license's other due events with the run's intent (``claims.Claimed.companions``), each
gets its own attempt row, and each event still carries its own intent's exact Metadata,
so after a lost reply every intent reads its own event back, alone. A batch Cryptolens
refuses is split: each event is sent again alone, so one bad event fails by itself.
"""

from __future__ import annotations

from typing import Any

from bridge.cryptolens import Refused
from bridge.cryptolens.models import EventInput, TimeRange
from bridge.rules import events
from bridge.store import attempts, claims, licenses
from jobs.effects.run import READ_BACK_SLACK, Run, mutate, mutate_together, unix
from jobs.errors import NotYet

METHOD = "ai/RegisterEvent"
BATCH_METHOD = "ai/RegisterEvents"


def event_metadata(intent: claims.Claimed) -> str:
    """The exact Metadata string sent, also the GetEvents filter that finds it again."""
    return events.metadata(intent.id, intent.params)


def _unresolved(intent: claims.Claimed) -> attempts.OpenAttempt | None:
    """The intent's newest call whose outcome is unknown, sent alone or in a batch."""
    open_ = [a for m in (METHOD, BATCH_METHOD) if (a := intent.open_attempts.get(m))]
    return max(open_, key=lambda a: a.id) if open_ else None


def _event(intent: claims.Claimed) -> EventInput:
    found = events.event(intent.id, intent.params)  # the dry run's too
    # No Time: Cryptolens stamps the event when it lands, as RegisterEvent does, so the
    # read-back's window (from the attempt's sending on) always holds it.
    return EventInput(
        event_name=found.name, value=found.value, currency=found.currency, metadata=found.metadata
    )


async def register_event(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    assert license_.product_id is not None and license_.key is not None
    rt, intent = run.rt, run.intent
    product_id, key = license_.product_id, license_.key
    pending = _unresolved(intent)
    if pending is not None:
        # The claim gave an intent with an unresolved call no companions: it is settled
        # here first, alone, by its own exact Metadata.
        found = await rt.client.get_events(
            product_id=product_id,
            key=key,
            metadata=event_metadata(intent),
            time=TimeRange(gte=unix(pending.sent_at) - READ_BACK_SLACK),
            limit=10,
        )
        if found:
            run.outcome.attempts[pending.id] = "applied"
            return {"event_id": found[0].id, "recovered": True}
        run.not_yet(pending, pending.method)  # GetEvents cannot see a call in flight
    if intent.companions:
        return await _register_together(run, product_id, key, pending)
    event = _event(intent)
    await mutate(
        run,
        METHOD,
        {},
        lambda: rt.client.register_event(
            product_id=product_id,
            key=key,
            event_name=event.event_name,
            value=event.value,
            currency=event.currency,
            metadata=event.metadata,
        ),
        supersedes=pending.id if pending else None,
    )
    return {"registered": True}


async def _register_together(
    run: Run, product_id: int, key: str, pending: attempts.OpenAttempt | None
) -> dict[str, Any]:
    """The run's event and its companions' in one RegisterEvents call."""
    rt, intent = run.rt, run.intent
    members = [intent, *intent.companions]
    events = [_event(m) for m in members]
    detail = {"lead": intent.id, "events": len(members)}
    try:
        await mutate_together(
            run,
            BATCH_METHOD,
            {m.id: detail for m in members},
            lambda: rt.client.register_events(events, product_id=product_id, key=key),
            supersedes=[pending.id] if pending else [],
        )
    except Refused as exc:
        # Cryptolens refused the whole call (nothing registered) without saying which
        # event it objects to: every member goes back to pending and is sent alone (an
        # event with a refused call is never a companion again, ``claims._gathers``), so
        # only the bad one fails, with Cryptolens' reason. Its attempts are settled.
        raise NotYet(f"{exc}; its {len(members)} events are sent one by one", 0) from None
    for companion in intent.companions:
        run.outcome.results[companion.id] = {"registered": True, "with": intent.id}
    return {"registered": True, "events": len(members)}
