"""HubSpot's worker half: the deal's pipeline, buyer and amount from the CRM v3 API, the
key written back to the deal, the pipeline's template."""

from __future__ import annotations

from bridge.core.providers import WorkerHooks
from bridge.hubspot import api
from bridge.hubspot.templates import resolve_template

HOOKS = WorkerHooks(
    template=resolve_template,
    deal=api.fetch_deal,
    write_back=api.write_key,
    open=api.open_client,
    close=api.close_client,
)
