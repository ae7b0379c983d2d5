"""Stripe's worker half: the template hooks, the meter sink's hooks and the Stripe
client each worker shares.

Imported by the worker only (``bridge.registry``): it loads the Stripe SDK, which the
web process never needs.
"""

from __future__ import annotations

from typing import Any

from bridge.core.providers import WorkerHooks
from bridge.core.settings import Settings
from bridge.stripe import api
from bridge.stripe.meter import StripeClients, meter_customer, send_meter
from bridge.stripe.templates import final_template, resolve_template


def _open(_: Settings) -> StripeClients:
    return StripeClients(api.make_http_client())


async def _close(clients: Any) -> None:
    await clients.http.close_async()


HOOKS = WorkerHooks(
    template=resolve_template,
    final_template=final_template,
    meter_customer=meter_customer,
    send_meter=send_meter,
    open=_open,
    close=_close,
)
