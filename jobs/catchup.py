"""The worker's periodic catch-up (``[stripe] catch_up_interval_minutes``): Stripe's
events of the last ``catch_up_hours`` that the webhook never delivered, recorded as if
delivered (``bridge.stripe.catchup``), so an outage heals without anyone noticing.
The window is measured on the runtime's clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bridge.core.logs import get_logger
from bridge.stripe import meter as stripe_clients
from bridge.stripe.api import StripeApiError
from bridge.stripe.catchup import Summary, catch_up
from jobs.runtime import Runtime

log = get_logger(__name__)


async def catch_up_once(rt: Runtime) -> Summary | None:
    """One catch-up over the configured window; None without STRIPE_API_KEY."""
    settings, stripe_config = rt.settings, rt.config.stripe
    if settings.stripe_api_key is None:
        log.warning("[stripe] catch_up_interval_minutes is set but STRIPE_API_KEY is not")
        return None
    summary = await catch_up(
        rt.engine,
        rt.config,
        since=rt.now() - timedelta(hours=stripe_config.catch_up_hours),
        api_key=settings.stripe_api_key.get_secret_value(),
        api_base=settings.stripe_api_base,
        http_client=stripe_clients.http_client(rt),
        redis=rt.redis,
    )
    if summary.new_events or summary.refused:
        log.warning("catch-up recorded events the webhook missed", **summary.as_json())
    return summary


async def catch_up_job(ctx: dict[str, Any]) -> None:
    """The arq cron: a Stripe failure is logged and left to the next tick."""
    try:
        await catch_up_once(ctx["runtime"])
    except StripeApiError as exc:
        log.warning("catch-up failed; the next run tries again", error=str(exc))
