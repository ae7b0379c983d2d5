"""Which template a won Pipedrive deal becomes: its pipeline's, else the default."""

from __future__ import annotations

from typing import Any

from bridge.core.errors import NoTemplate
from bridge.core.providers import WorkerContext
from bridge.pipedrive.config import PipedriveConfig


async def resolve_template(
    ctx: WorkerContext, params: dict[str, Any], default: bool
) -> tuple[int, str] | None:
    raw = params.get("pipeline")
    pipeline = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None
    found = PipedriveConfig.of(ctx.config).template_for(pipeline)
    if found is not None and (default or found[1] != "default"):
        return found
    if not default:
        return None
    raise NoTemplate(
        f"no license template for Pipedrive pipeline {raw!r}: set its template_id in a "
        "[[pipedrive.pipeline]] table or [pipedrive] default_template_id"
    )
