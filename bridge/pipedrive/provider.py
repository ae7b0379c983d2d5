"""Pipedrive as a provider: ``POST /webhooks/pipedrive`` and the worker's hooks (the
deal's person, organization and pipeline from API v2; the key written to a custom field)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Route

from bridge.core.providers import Provider, WorkerHooks
from bridge.core.settings import Settings
from bridge.crm.deals import OCCURRED_PER_SECOND
from bridge.pipedrive import api, webhook
from bridge.pipedrive.templates import resolve_template

PATH = "/webhooks/pipedrive"


def _routes(settings: Settings) -> Sequence[BaseRoute]:
    # No webhook credentials, no endpoint (404): unauthenticated data is never taken.
    if settings.pipedrive_credentials() is None:
        return []
    return [Route(PATH, webhook.endpoint, methods=["POST"])]


PROVIDER = Provider(
    name="pipedrive",
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
