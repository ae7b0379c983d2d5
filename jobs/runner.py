"""The arq job: claim an intent, apply it, and decide in one place what a failure means.

    Refused, NoTemplate, permanent Stripe errors  -> failed now, with the service's message
    Transient, OutcomeUnknown, other errors       -> pending again after an exponential
                                                     backoff with jitter (an unknown outcome
                                                     is read back on the next run), failed
                                                     once ``max_attempts`` is spent
    Busy (a license lock)                         -> tried again shortly, not an attempt
    Waiting (no key yet)                          -> parked until the key exists
    NeedsReview                                   -> parked for a person; nothing re-sent

arq re-queues a job only when it raises ``Retry``; everything else ends it, so the job
never lets an exception escape, and the database (not arq) counts attempts.
"""

from __future__ import annotations

import random
from typing import Any

from arq import Retry

from bridge.cryptolens import CryptolensError, OutcomeUnknown, RateLimited, Refused
from bridge.intents import Status
from bridge.logs import get_logger
from bridge.queue import enqueue
from bridge.stripe_api import PermanentStripeError
from jobs import store
from jobs.effects import Busy, LeaseLost, NeedsReview, Waiting, apply, db
from jobs.runtime import Runtime
from jobs.templates import NoTemplate

log = get_logger(__name__)


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random."""
    ceiling = min(cap, base * float(2 ** max(attempt - 1, 0)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _permanent(exc: BaseException) -> bool:
    return isinstance(exc, Refused | NoTemplate | PermanentStripeError)


async def run_intent(ctx: dict[str, Any], intent_id: str) -> str:
    rt: Runtime = ctx["runtime"]
    claimed = await db(store.claim, rt.engine, intent_id, rt.owner, rt.settings.lease_seconds)
    if isinstance(claimed, store.NotClaimed):
        if claimed.retry_in is not None:
            raise Retry(defer=claimed.retry_in)
        return claimed.reason
    bound = log.bind(intent=intent_id, effect=claimed.effect.value)
    try:
        result = await apply(rt, claimed)
    except Busy:
        await db(store.reschedule, rt.engine, intent_id, rt.owner, delay=0, error=None, count=False)
        raise Retry(defer=0.02 + random.uniform(0, 0.05)) from None
    except LeaseLost:
        bound.warning("intent run stopped: it is no longer this worker's")
        return "lease_lost"
    except Waiting:
        await db(store.finish, rt.engine, intent_id, rt.owner, Status.WAITING)
        bound.info("intent waits for its license key")
        return "waiting"
    except NeedsReview as exc:
        await db(
            store.finish,
            rt.engine,
            intent_id,
            rt.owner,
            Status.NEEDS_REVIEW,
            error=str(exc),
            count_attempt=True,
        )
        # The reason may list license keys: it goes to the database, not the log.
        bound.warning("intent needs review; see: cryptolens-bridge intents --status needs_review")
        return "needs_review"
    except Exception as exc:
        return await _failed_run(rt, claimed, exc)

    await db(
        store.finish, rt.engine, intent_id, rt.owner, Status.DONE, result=result, count_attempt=True
    )
    # The key string stays out of logs: it is a credential of the vendor's customer.
    bound.info("intent done", result={k: v for k, v in result.items() if k != "key"})
    if claimed.effect.value == "create_key":
        ref = await db(store.resolve_ref, rt.engine, claimed.license_ref)
        woken = await db(store.wake_waiting, rt.engine, ref)
        if woken and rt.redis is not None:
            await enqueue(rt.redis, woken)
    return "done"


async def _failed_run(rt: Runtime, claimed: store.Claimed, exc: Exception) -> str:
    intent_id = claimed.id
    message = str(exc) if isinstance(exc, CryptolensError) else f"{type(exc).__name__}: {exc}"
    bound = log.bind(intent=intent_id, effect=claimed.effect.value)
    attempts = claimed.attempts + 1
    if _permanent(exc) or attempts >= rt.settings.max_attempts:
        if not _permanent(exc):
            message = f"gave up after {attempts} attempts: {message}"
        await db(
            store.finish,
            rt.engine,
            intent_id,
            rt.owner,
            Status.FAILED,
            error=message,
            count_attempt=True,
        )
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
        store.reschedule, rt.engine, intent_id, rt.owner, delay=delay, error=message, count=True
    )
    raise Retry(defer=delay) from None
