"""Which template a won HubSpot deal becomes: its pipeline's, else the default."""

from __future__ import annotations

from typing import Any

from bridge.core.errors import NoTemplate
from bridge.core.providers import WorkerContext
from bridge.hubspot.config import HubSpotConfig


async def resolve_template(
    ctx: WorkerContext, params: dict[str, Any], default: bool
) -> tuple[int, str] | None:
    """``params["pipeline"]`` is the deal's, as the worker fetched it."""
    pipeline = params.get("pipeline")
    found = HubSpotConfig.of(ctx.config).template_for(
        str(pipeline) if pipeline is not None else None
    )
    if found is not None and (default or found[1] != "default"):
        return found
    if not default:
        return None
    raise NoTemplate(
        f"no license template for HubSpot pipeline {pipeline!r}: set its template_id in a "
        "[[hubspot.pipeline]] table or [hubspot] default_template_id"
    )
