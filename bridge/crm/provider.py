"""The generic contract as a provider: ``POST /webhooks/crm/{source}``.

Its planner names the template and carries the buyer (the contract's body has them), so
the worker needs no hook of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Route

from bridge.core.providers import Provider
from bridge.core.settings import Settings
from bridge.crm import webhook
from bridge.crm.deals import OCCURRED_PER_SECOND

PATH = "/webhooks/crm/{source}"


def _routes(_: Settings) -> Sequence[BaseRoute]:
    # Always mounted: a source without CRM_SECRET_<SOURCE> answers 404 from the endpoint.
    return [Route(PATH, webhook.endpoint, methods=["POST"])]


PROVIDER = Provider(name="crm", routes=_routes, occurred_per_second=OCCURRED_PER_SECOND)
