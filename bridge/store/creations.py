"""The creation gate: whether a key creation is sent, waits, or settles first.

A key creation is recorded (its attempt, its license's template) in one transaction
that first checks everything that could make the new key wrong or ambiguous; see
:func:`begin_create` (CreateKeyFromTemplate, under the product's gate) and
:func:`begin_tagged_create` (CreateKey, tagged: no gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from bridge.core.intents import Status
from bridge.store import attempts, intents, leases, licenses
from bridge.store.attempts import OpenAttempt
from bridge.store.claims import Claimed, hint_count
from bridge.store.dbapi import Tx, tx
from bridge.store.tables import utcnow


@dataclass(frozen=True)
class CreateStep:
    """What ``begin_create`` found: a key, attempts to settle first, or a new attempt."""

    key: str | None = None
    unresolved: list[OpenAttempt] = field(default_factory=list)
    attempt_id: int | None = None
    lost: bool = False  # the run no longer owns its intent
    busy: bool = False  # another run holds the product's creation gate (settling)
    # Creations of another template are in flight, or creations whose outcomes must be
    # settled together are still in flight: wait for them to end.
    drain: bool = False
    changed: bool = False  # a later delivery's hint arrived since the claim: run again


def begin_create(
    engine: Engine,
    claimed: Claimed,
    *,
    product_id: int,
    template_id: int,
    scope: str,
    lease: float,
    now: datetime,
) -> CreateStep:
    """Decide, in one transaction under the product's creation gate ``scope``, what this
    key creation does next: nothing (the license has a key), wait, settle, or send.

    Creations of one template run concurrently: keys made from one template are
    interchangeable until the bridge tags and links them, so when k of their replies are
    lost, the k new keys in the Web API Log can be given to those k intents in any order.
    What must not overlap is anything that would make that count ambiguous:

    - creations of *another* template of the product (their keys are not
      interchangeable with these): they wait until every creation in flight has ended
      (``drain``);
    - new creations while some outcome is unknown: once an attempt is unknown (its
      reply lost, or its run died with it in flight), no new one starts, the ones in
      flight end (``drain``), and then one run settles all unknown ones together while
      it holds the gate (``unresolved``; the gate stays held until it comes back here);
    - otherwise the attempt is recorded and the gate let go at once (``attempt_id``).

    ``now`` is the runtime's time, on which the gate's lease and the runs' leases run.
    """
    with tx(engine) as t:
        if not leases.take(t, scope, claimed.owner, lease, now):
            return CreateStep(busy=True)
        step = _create_step(t, claimed, product_id, template_id, scope, now)
        if step.unresolved:
            return step  # settled under the gate, which stays this run's until then
        leases.drop(t, scope, claimed.owner)
        return step


def _create_step(
    t: Tx, claimed: Claimed, product_id: int, template_id: int, scope: str, now: datetime
) -> CreateStep:
    key = licenses.for_creation(t, claimed.ref, claimed.id, product_id, template_id, now)
    if key:
        return CreateStep(key=key)
    licenses.record_template(t, claimed.ref, claimed.id, product_id, template_id)
    in_flight: list[OpenAttempt] = []
    unknown: list[OpenAttempt] = []
    for found in attempts.unresolved_in_scope(t, scope):
        # In flight: the run that wrote it is still the one running its intent (a run
        # that ended, or died, left an outcome to settle).
        alive = (
            found.outcome is None
            and found.status == Status.RUNNING.value
            and found.attempt.detail.get("run") == found.lease_owner
            and found.lease_until is not None
            and found.lease_until > now
        )
        (in_flight if alive else unknown).append(found.attempt)
    if unknown:
        return CreateStep(drain=True) if in_flight else CreateStep(unresolved=unknown)
    if any(a.detail.get("template_id") != template_id for a in in_flight):
        return CreateStep(drain=True)
    if intents.owned(t, claimed.id, claimed.owner) is None:
        # Settling found our own earlier attempt ambiguous (needs review), or the lease
        # ran out and another worker took the intent: never create a key then.
        return CreateStep(lost=True)
    if hint_count(t, claimed.id) != claimed.hints:
        # Another start event of this purchase was stored since the claim: it may name
        # a more specific template. The template is chosen for good only here, in the
        # transaction that records the creation.
        return CreateStep(changed=True)
    detail = {"template_id": template_id, "run": claimed.owner}
    attempt_id = attempts.insert(t, claimed.id, "key/CreateKeyFromTemplate", detail, scope)
    return CreateStep(attempt_id=attempt_id)


def begin_tagged_create(
    engine: Engine, claimed: Claimed, *, product_id: int, template_id: int
) -> CreateStep:
    """Decide, in one transaction, whether this CreateKey (tagged) creation is sent: the
    license has a key already, the run lost its intent, a later start event arrived (the
    template is chosen for good only here), or the attempt is recorded. No gate: a tagged
    creation's outcome is read back by its own tag, whatever else runs beside it."""
    now = utcnow()
    with tx(engine) as t:
        key = licenses.for_creation(t, claimed.ref, claimed.id, product_id, template_id, now)
        if key:
            return CreateStep(key=key)
        if intents.owned(t, claimed.id, claimed.owner) is None:
            return CreateStep(lost=True)
        if hint_count(t, claimed.id) != claimed.hints:
            return CreateStep(changed=True)
        licenses.record_template(t, claimed.ref, claimed.id, product_id, template_id)
        detail = {"template_id": template_id, "product_id": product_id, "run": claimed.owner}
        return CreateStep(attempt_id=attempts.insert(t, claimed.id, "key/CreateKey", detail, None))
