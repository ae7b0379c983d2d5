"""STRIPE_WRITE_BACK: the key onto the Stripe subscription or payment intent, once.

Unlike a CRM deal's property (a setting written blindly, ``jobs.effects.writeback``), a
Stripe object's metadata is the vendor's too, so the run reads before it writes
(``bridge.stripe.writeback``): our values there already settle the intent (an earlier
send's reply was lost: it is not sent again), another value there goes to a person, and
only absent values are sent, with an attempt row first. An earlier send read back as
absent is not waited out: should it still land, it writes these very values.
"""

from __future__ import annotations

from typing import Any, cast

from bridge.core.errors import Permanent
from bridge.cryptolens import OutcomeUnknown
from bridge.store import attempts, licenses
from bridge.stripe import meter as stripe_clients
from bridge.stripe import writeback
from bridge.stripe.api import TransientStripeError
from jobs.dbcall import in_thread
from jobs.effects.run import Run
from jobs.errors import LeaseLost, NeedsReview

METHOD = "stripe/update_metadata"


class WriteBackConfigError(Permanent):
    """Write-back is on but cannot run as configured (no STRIPE_API_KEY)."""


def _options(run: Run) -> dict[str, Any]:
    settings = run.rt.settings
    if settings.stripe_api_key is None:
        raise WriteBackConfigError(
            "configuration: [stripe] write_back needs STRIPE_API_KEY (write access to "
            "Subscriptions and PaymentIntents)"
        )
    return {
        "api_key": settings.stripe_api_key.get_secret_value(),
        "api_base": settings.stripe_api_base,
        "http_client": stripe_clients.http_client(run.rt),
    }


async def stripe_write_back(run: Run, license_: licenses.LicenseView) -> dict[str, Any]:
    assert license_.key is not None and license_.product_id is not None
    rt, intent = run.rt, run.intent
    options = _options(run)
    kind = cast(writeback.Kind, intent.params["object"])
    object_id = str(intent.params["id"])
    want = writeback.wanted(license_.key, license_.product_id)
    earlier = intent.open_attempts.get(METHOD)
    result: dict[str, Any] = {"object": kind, "id": object_id}
    # A read, repeated freely: what the object holds now decides.
    current = await writeback.read_metadata(kind, object_id, **options)
    found = writeback.found(current, want)
    if found == "present":
        if earlier is not None:
            run.outcome.attempts[earlier.id] = "applied"  # its reply was lost, not its write
        return {**result, "written": earlier is not None, "already_there": earlier is None}
    if found == "conflict":
        # Never the values themselves: a key is the buyer's credential.
        raise NeedsReview(
            f"{kind} {object_id} already holds a different {writeback.KEY_FIELD} or "
            f"{writeback.PRODUCT_FIELD} in its metadata: not overwritten. Clear it in Stripe "
            "and replay, or leave it"
        )
    detail = {"object": kind, "id": object_id, "product_id": license_.product_id}
    attempt_id = await in_thread(
        attempts.start_attempt,
        rt.engine,
        intent.id,
        METHOD,
        detail,
        supersedes=earlier.id if earlier is not None else None,
    )
    try:
        await run.send(METHOD, lambda: writeback.write_metadata(kind, object_id, want, **options))
    except LeaseLost:
        await in_thread(attempts.finish_attempt, rt.engine, attempt_id, "not_applied")
        raise
    except (TransientStripeError, OutcomeUnknown):
        # Sent, maybe applied: the next run reads it back before anything is sent again.
        await in_thread(attempts.finish_attempt, rt.engine, attempt_id, "unknown")
        raise
    except BaseException:
        await in_thread(attempts.finish_attempt, rt.engine, attempt_id, "refused")
        raise
    run.outcome.attempts[attempt_id] = "applied"
    return {**result, "written": True, "already_there": False}
