"""Pipedrive's worker half: the deal's person, organization and pipeline from API v2,
the key written to a custom field, the pipeline's template."""

from __future__ import annotations

from bridge.core.providers import WorkerHooks
from bridge.pipedrive import api
from bridge.pipedrive.templates import resolve_template

HOOKS = WorkerHooks(
    template=resolve_template,
    deal=api.fetch_deal,
    write_back=api.write_key,
    open=api.open_client,
    close=api.close_client,
)
