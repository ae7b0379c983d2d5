"""The arq job: claim an intent, apply it, and decide in one place what a failure means.

    Refused, NoTemplate, permanent Stripe errors  -> failed now, with the service's message
    Transient, OutcomeUnknown, other errors       -> pending again after an exponential
                                                     backoff with jitter (an unknown outcome
                                                     is read back on the next run), failed
                                                     once ``max_attempts`` is spent
    Busy (license, product or customer held)      -> tried again shortly, not an attempt
    NotYet (a call may still land; a start wait)  -> tried again when the clock allows,
                                                     not an attempt
    LeaseLost                                     -> stops: nothing sent, nothing written
    no key yet                                    -> parked as waiting (in the claim)
    NeedsReview                                   -> parked for a person; nothing re-sent

arq re-queues a job only when it raises ``Retry``; everything else ends it, so the job
never lets an exception escape, and the database (not arq) counts attempts. Each run
holds its leases through a heartbeat (``jobs.lease``) from the claim to its outcome.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from arq import Retry

from bridge.core import tracing
from bridge.core.errors import Permanent
from bridge.core.intents import Effect, Status
from bridge.core.logs import get_logger
from bridge.core.queue import enqueue
from bridge.cryptolens import CryptolensError, OutcomeUnknown, RateLimited
from jobs import store
from jobs.dbcall import db
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


async def run_intent(ctx: dict[str, Any], intent_id: str) -> str:
    rt: Runtime = ctx["runtime"]
    with tracing.span("intent", intent=intent_id):
        status, woken = await _run(rt, intent_id)
    # What a new key woke (the purchase event, a renewal that came first, ...) runs here
    # and now, not as jobs of their own: no queue round trip, no second poll.
    for follower in woken:
        try:
            with tracing.span("intent", intent=follower, woken_by=intent_id):
                await _run(rt, follower)
        except Retry as retry:
            defer = (retry.defer_score or 0) / 1000
            if rt.redis is not None:
                await enqueue(rt.redis, [follower], defer=defer)
        except Exception:  # its own job (or the relay) will run it
            log.exception("woken intent could not run inline", intent=follower)
            if rt.redis is not None:
                await enqueue(rt.redis, [follower])
    return status


async def _run(rt: Runtime, intent_id: str) -> tuple[str, list[str]]:
    """One run of one intent: its status afterwards, and the intents it woke."""
    # One owner per run: leases taken by this run are this run's, not the process's.
    owner = f"{rt.owner}:{uuid.uuid4().hex[:12]}"
    claimed = await db(
        store.claim, rt.engine, intent_id, owner, rt.settings.lease_seconds, at=rt.now()
    )
    if isinstance(claimed, store.NotClaimed):
        if claimed.retry_in is not None:
            raise Retry(defer=_busy_delay(claimed.retry_in))
        return claimed.reason, []
    bound = log.bind(intent=intent_id, effect=claimed.effect.value)
    outcome = store.Outcome()
    lease = RunLease(rt, intent_id, owner, {store.license_lock(claimed.ref)})
    try:
        async with lease.beating():
            result = await apply(Run(rt, claimed, outcome, lease))
    except Busy:
        await db(
            store.reschedule,
            rt.engine,
            claimed,
            outcome,
            delay=0,
            error=None,
            count=False,
            at=rt.now(),
        )
        raise Retry(defer=_busy_delay(store.BUSY_RETRY)) from None
    except NotYet as wait:
        await db(
            store.reschedule,
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
        await db(store.release, rt.engine, claimed)
        bound.warning("intent run stopped: it is no longer this worker's")
        return "lease_lost", []
    except NeedsReview as exc:
        await db(store.finish, rt.engine, claimed, Status.NEEDS_REVIEW, outcome, error=str(exc))
        # The reason may list license keys: it goes to the database, not the log.
        bound.warning("intent needs review; see: cryptolens-bridge intents --status needs_review")
        return "needs_review", []
    except Exception as exc:
        return await _failed_run(rt, claimed, outcome, exc), []

    woken = await db(
        store.finish,
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
    rt: Runtime, claimed: store.Claimed, outcome: store.Outcome, exc: Exception
) -> str:
    message = str(exc) if isinstance(exc, CryptolensError) else f"{type(exc).__name__}: {exc}"
    bound = log.bind(intent=claimed.id, effect=claimed.effect.value)
    attempts = claimed.attempts + 1
    if _permanent(exc) or attempts >= rt.settings.max_attempts:
        if not _permanent(exc):
            message = f"gave up after {attempts} attempts: {message}"
        await db(store.finish, rt.engine, claimed, Status.FAILED, outcome, error=message)
        bound.error("intent failed", error=message, attempts=attempts)
        return "failed"
    delay = backoff(
        attempts, base=rt.settings.retry_base_seconds, cap=rt.settings.retry_cap_seconds
    )
    if isinstance(exc, RateLimited) and exc.retry_after:
        delay = max(delay, exc.retry_after)
    if not isinstance(exc, CryptolensError):
        bound.exception("intent run crashed; retrying", attempts=attempts)
    else:
        bound.warning(
            "intent will be retried",
            error=message,
            attempts=attempts,
            outcome_unknown=isinstance(exc, OutcomeUnknown),
            delay=round(delay, 3),
        )
    await db(
        store.reschedule,
        rt.engine,
        claimed,
        outcome,
        delay=delay,
        error=message,
        count=True,
        at=rt.now(),
    )
    raise Retry(defer=delay) from None
