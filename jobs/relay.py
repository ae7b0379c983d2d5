"""The relay: re-enqueue what the database says is unfinished.

Redis may lose jobs (a restart without persistence, an enqueue that failed after the
webhook's commit); the database never does. At worker start and then on a cron, every
pending intent, every running intent whose lease expired (its worker died) and every
waiting intent whose key now exists gets a job again. arq's job-id check makes this safe
to run as often as we like: an intent already queued is not queued twice.
"""

from __future__ import annotations

from typing import Any

from bridge.core.logs import get_logger
from bridge.core.queue import enqueue
from bridge.store import wake
from bridge.store.pending import pending_intents
from jobs.dbcall import in_thread
from jobs.runtime import Runtime

log = get_logger(__name__)


async def relay_once(rt: Runtime) -> int:
    if rt.redis is None:
        return 0
    ready = await in_thread(wake.wake_ready_waiting, rt.engine)
    ids = await in_thread(pending_intents, rt.engine, now=rt.now())
    queued = await enqueue(rt.redis, [*ready, *ids])
    if queued:
        log.info("relay re-enqueued intents", count=queued)
    return queued


async def relay(ctx: dict[str, Any]) -> int:
    """arq cron entry point."""
    rt: Runtime = ctx["runtime"]
    return await relay_once(rt)
