"""The arq job: claim an intent, apply it, and decide in one place what a failure means.

    Permanent (Refused, NoTemplate, a bad Stripe   -> failed now, with the service's message
    key, a CRM's 401/403/404)
    Retryable, Unknown (Cryptolens', Stripe's, a   -> pending again after an exponential
    CRM's 429/5xx), other errors                     backoff with jitter, at least the
                                                     service's Retry-After (an unknown
                                                     outcome is read back on the next run),
                                                     failed once ``max_attempts`` is spent
    Busy (license, product or customer held)      -> tried again shortly, not an attempt
    NotYet (a call may still land; a start wait)  -> tried again when the clock allows,
                                                     not an attempt
    LeaseLost                                     -> stops: nothing sent, nothing written
    no key yet                                    -> parked as waiting (in the claim)
    NeedsReview, KeyHeld (the store's: a key      -> parked for a person; nothing re-sent
    another license holds)

arq re-queues a job only when it raises ``Retry``; everything else ends it, so the job
never lets an exception escape, and the database (not arq) counts attempts. Each run
holds its leases through a heartbeat (``jobs.lease``) from the claim to its outcome.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

from arq import Retry

from bridge.core import tracing
from bridge.core.errors import BridgeError, Permanent, Unknown
from bridge.core.intents import Effect, Status
from bridge.core.logs import get_logger
from bridge.core.queue import enqueue
from bridge.store import claims, intents, leases
from bridge.store.claims import RUNNING_ELSEWHERE
from bridge.store.errors import KeyHeld
from jobs.dbcall import in_thread
from jobs.effects import Run, apply
from jobs.errors import Busy, LeaseLost, NeedsReview, NotYet
from jobs.lease import RunLease
from jobs.runtime import Runtime

log = get_logger(__name__)


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random."""
    ceiling = min(cap, base * float(2 ** max(attempt - 1, 0)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _permanent(exc: BaseException) -> bool:
    return isinstance(exc, Permanent)


def _busy_delay(base: float) -> float:
    return base + random.uniform(0, base * 2)


# How soon a job looks again at its intent when another run has it. The lease left is a
# worst case (that run died): a batch that takes its companions along usually ends them
# in one call, or hands those past its size back as pending within a second, so waiting
# out the whole lease (a minute in production) would leave them idle that long.
RUNNING_ELSEWHERE_POLL = 0.5


def _wait_for(claimed: claims.NotClaimed) -> float:
    assert claimed.retry_in is not None
    if claimed.reason == RUNNING_ELSEWHERE:
        return _busy_delay(min(claimed.retry_in, RUNNING_ELSEWHERE_POLL))
    return _busy_delay(claimed.retry_in)


async def run_intent(ctx: dict[str, Any], intent_id: str) -> str:
    rt: Runtime = ctx["runtime"]
    with tracing.span("intent", intent=intent_id):
        status, woken = await _run(rt, intent_id)
    # What a new key woke (the purchase event, the buyer's link, a renewal that came
    # first, ...) runs here and now, together, not as jobs of their own: no queue round
    # trip, no second poll. Two of them on the license's shared state take turns (the
    # license lease): the one that finds it busy goes back to the queue.
    await asyncio.gather(*(_follow(rt, follower, intent_id) for follower in woken))
    return status


async def _follow(rt: Runtime, intent_id: str, woken_by: str) -> None:
    try:
        with tracing.span("intent", intent=intent_id, woken_by=woken_by):
            await _run(rt, intent_id, inline=True)
    except Retry as retry:
        defer = (retry.defer_score or 0) / 1000
        if rt.redis is not None:
            await enqueue(rt.redis, [intent_id], defer=defer)
    except Exception:  # its own job (or the relay) will run it
        log.exception("woken intent could not run inline", intent=intent_id)
        if rt.redis is not None:
            await enqueue(rt.redis, [intent_id])


async def _run(rt: Runtime, intent_id: str, *, inline: bool = False) -> tuple[str, list[str]]:
    """One run of one intent: its status afterwards, and the intents it woke.

    ``inline``: run beside the run that woke it. Found running elsewhere (another run took
    it along, a batch's companion), it is that run's: nothing is queued for it (the relay
    requeues it should that run die)."""
    # One owner per run: leases taken by this run are this run's, not the process's.
    owner = f"{rt.owner}:{uuid.uuid4().hex[:12]}"
    claimed = await in_thread(
        claims.claim, rt.engine, intent_id, owner, rt.settings.lease_seconds, at=rt.now()
    )
    if isinstance(claimed, claims.NotClaimed):
        if claimed.retry_in is not None and not (inline and claimed.reason == RUNNING_ELSEWHERE):
            raise Retry(defer=_wait_for(claimed))
        return claimed.reason, []
    held = (
        set() if claimed.effect in claims.LEASE_FREE_EFFECTS else {leases.license_lock(claimed.ref)}
    )
    lease = RunLease(rt, intent_id, owner, held, tuple(c.id for c in claimed.companions))
    run = Run(rt, claimed, intents.Outcome(), lease, follow=lambda i: _follow(rt, i, intent_id))
    try:
        return await _apply(run)
    finally:
        # Intents the run started beside itself (a new key's purchase event) end first.
        if run.started:
            await asyncio.gather(*run.started, return_exceptions=True)


async def _apply(run: Run) -> tuple[str, list[str]]:
    rt, claimed, outcome, lease = run.rt, run.intent, run.outcome, run.lease
    bound = log.bind(intent=claimed.id, effect=claimed.effect.value)
    try:
        async with lease.beating():
            result = await apply(run)
    except Busy:
        await in_thread(
            intents.reschedule,
            rt.engine,
            claimed,
            outcome,
            delay=0,
            error=None,
            count=False,
            at=rt.now(),
        )
        raise Retry(defer=_busy_delay(claims.BUSY_RETRY)) from None
    except NotYet as wait:
        await in_thread(
            intents.reschedule,
            rt.engine,
            claimed,
            outcome,
            delay=wait.retry_in,
            error=None,
            count=False,
            at=rt.now(),
        )
        bound.info("intent waits", reason=str(wait), seconds=round(wait.retry_in, 3))
        raise Retry(defer=wait.retry_in) from None
    except LeaseLost:
        await in_thread(intents.release, rt.engine, claimed)
        bound.warning("intent run stopped: it is no longer this worker's")
        return "lease_lost", []
    except (NeedsReview, KeyHeld) as exc:
        await in_thread(
            intents.finish, rt.engine, claimed, Status.NEEDS_REVIEW, outcome, error=str(exc)
        )
        # The reason may list license keys: it goes to the database, not the log.
        bound.warning("intent needs review; see: cryptolens-bridge intents --status needs_review")
        return "needs_review", []
    except Exception as exc:
        return await _failed_run(rt, claimed, outcome, exc), []

    woken = await in_thread(
        intents.finish,
        rt.engine,
        claimed,
        Status.DONE,
        outcome,
        result=result,
        wake=claimed.effect is Effect.CREATE_KEY,
    )
    # The key string stays out of logs: it is a credential of the vendor's customer.
    bound.info("intent done", result={k: v for k, v in result.items() if k != "key"})
    return "done", woken or []


async def _failed_run(
    rt: Runtime, claimed: claims.Claimed, outcome: intents.Outcome, exc: Exception
) -> str:
    known = isinstance(exc, BridgeError)  # Cryptolens', a CRM's, Stripe's
    message = str(exc) if known else f"{type(exc).__name__}: {exc}"
    bound = log.bind(intent=claimed.id, effect=claimed.effect.value)
    attempts = claimed.attempts + 1
    if _permanent(exc) or attempts >= rt.settings.max_attempts:
        if not _permanent(exc):
            message = f"gave up after {attempts} attempts: {message}"
        # Given up after the run's own attempts: its companions' are not spent.
        await in_thread(
            intents.finish,
            rt.engine,
            claimed,
            Status.FAILED,
            outcome,
            error=message,
            shared=_permanent(exc),
        )
        bound.error("intent failed", error=message, attempts=attempts)
        return "failed"
    delay = backoff(
        attempts, base=rt.settings.retry_base_seconds, cap=rt.settings.retry_cap_seconds
    )
    retry_after = getattr(exc, "retry_after", None)  # Cryptolens' or a CRM's 429
    if isinstance(retry_after, int | float) and retry_after > 0:
        delay = max(delay, float(retry_after))
    if not known:
        bound.exception("intent run crashed; retrying", attempts=attempts)
    else:
        bound.warning(
            "intent will be retried",
            error=message,
            attempts=attempts,
            outcome_unknown=isinstance(exc, Unknown),
            delay=round(delay, 3),
        )
    await in_thread(
        intents.reschedule,
        rt.engine,
        claimed,
        outcome,
        delay=delay,
        error=message,
        count=True,
        at=rt.now(),
    )
    raise Retry(defer=delay) from None
