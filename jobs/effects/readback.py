"""Calls read back by comparison (ExtendLicense, BlockKey, UnblockKey): one unresolved
per key, each settled against the exact state it would have produced."""

from __future__ import annotations

from bridge.core.logs import get_logger
from bridge.cryptolens.models import LicenseKey
from bridge.store import attempts, intents, licenses
from jobs.dbcall import in_thread
from jobs.effects.run import DAY, READ_BACK_SLACK, Run, unix
from jobs.errors import NeedsReview

log = get_logger(__name__)


def key_scope(license_: licenses.LicenseView) -> str:
    return f"key:{license_.ref}"


async def settle_key_calls(run: Run, license_: licenses.LicenseView, current: LicenseKey) -> None:
    """Settle every unresolved ExtendLicense / BlockKey / UnblockKey on this key against
    the exact state each would have produced (``current``, read under the license lease).

    Raises NotYet while one may still land; an attempt of this run's own intent whose
    effect cannot be told goes to a person (NeedsReview), another intent's is parked for
    a person without stopping this run.
    """
    for attempt in await in_thread(attempts.open_in_scope, run.rt.engine, key_scope(license_)):
        verdict = key_verdict(run, attempt, current)
        if verdict == "not_applied":
            run.not_yet(attempt, attempt.method)
        if verdict != "ambiguous":
            run.outcome.attempts[attempt.id] = verdict
            continue
        reason = (
            f"{attempt.method} (attempt {attempt.id}) cannot be told applied or not: the "
            "key's state is neither what it would have produced nor what it was before"
        )
        if attempt.intent_id == run.intent.id:
            raise NeedsReview(reason)
        await in_thread(attempts.finish_attempt, run.rt.engine, attempt.id, "ambiguous")
        await in_thread(intents.set_needs_review, run.rt.engine, attempt.intent_id, reason)
        log.warning("another intent's call needs review", intent=attempt.intent_id)


def key_verdict(run: Run, attempt: attempts.OpenAttempt, current: LicenseKey) -> str:
    if attempt.method in ("key/BlockKey", "key/UnblockKey"):
        wanted = attempt.method == "key/BlockKey"
        return "applied" if current.block == wanted else "not_applied"
    expires = unix(current.expires)
    before = int(attempt.detail["before"])
    added = int(attempt.detail["days"]) * DAY
    if attempt.detail.get("from_now"):
        # ExtendLicense counts from the moment it is applied when the key had expired:
        # any moment between the send and the end of its settle window.
        low = unix(attempt.sent_at) - READ_BACK_SLACK + added
        high = unix(run.settle_after(attempt)) + READ_BACK_SLACK + added
        if low <= expires <= high:
            return "applied"
    elif expires == before + added:
        return "applied"
    return "not_applied" if expires == before else "ambiguous"


def applied_here(run: Run, method: str) -> bool:
    own = run.intent.open_attempts.get(method)
    return own is not None and run.outcome.attempts.get(own.id) == "applied"
