"""HubSpot as a provider: ``POST /webhooks/hubspot`` and the worker's hooks (the deal's
pipeline, buyer and amount from the CRM v3 API; the key written back to the deal)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Route

from bridge.core.providers import Provider, WorkerHooks
from bridge.core.settings import Settings
from bridge.crm.deals import OCCURRED_PER_SECOND
from bridge.hubspot import api, webhook
from bridge.hubspot.templates import resolve_template

PATH = "/webhooks/hubspot"


def _routes(settings: Settings) -> Sequence[BaseRoute]:
    # No client secret, no endpoint (404): unsigned data is never taken.
    if not settings.hubspot_secrets():
        return []
    return [Route(PATH, webhook.endpoint, methods=["POST"])]


PROVIDER = Provider(
    name="hubspot",
    routes=_routes,
    worker=WorkerHooks(
        template=resolve_template,
        deal=api.fetch_deal,
        write_back=api.write_key,
        open=api.open_client,
        close=api.close_client,
    ),
    occurred_per_second=OCCURRED_PER_SECOND,
)
