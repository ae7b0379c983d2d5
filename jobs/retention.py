"""The worker's pruning run (``bridge.store.retention``): once a minute, batch after batch.

Each batch is its own short transaction, followed by a rest as long as it took
(``bridge.store.retention.rest_after``), so jobs and webhooks interleave with a long run
instead of waiting for it. A run ends at
the first batch that finds nothing due, or after :data:`MAX_BATCHES` (the next minute's
run goes on), so a backlog after raising the retention never holds a cron slot long.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge.core.logs import get_logger
from bridge.store import retention
from jobs.dbcall import in_thread
from jobs.runtime import Runtime

log = get_logger(__name__)

MAX_BATCHES = 1000  # 20,000 deliveries a run, a few seconds


async def prune_once(
    rt: Runtime, *, max_batches: int = MAX_BATCHES, limit: int = retention.BATCH
) -> retention.Pruned:
    days = rt.settings.retention_days
    total = retention.Pruned()
    for _ in range(max_batches):
        started = time.perf_counter()  # pacing only: what is due is decided by rt.now()
        pruned = await in_thread(
            retention.prune_batch, rt.engine, now=rt.now(), days=days, limit=limit
        )
        total += pruned
        if pruned.empty:
            break
        await asyncio.sleep(retention.rest_after(time.perf_counter() - started))
    if not total.empty:
        log.info(
            "retention pruned",
            days=days,
            events=total.events,
            intents=total.intents,
            hints=total.hints,
            refusals=total.refusals,
        )
    return total


async def prune(ctx: dict[str, Any]) -> None:
    """arq cron: one pruning run with the worker's runtime."""
    await prune_once(ctx["runtime"])
