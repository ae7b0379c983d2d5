"""HubSpot as a provider: ``POST /webhooks/hubspot`` and the worker's hooks."""

from __future__ import annotations

from bridge.core.providers import Provider, WorkerHooks
from bridge.hubspot.templates import resolve_template

PROVIDER = Provider(
    name="hubspot", routes=lambda _: [], worker=WorkerHooks(template=resolve_template)
)
