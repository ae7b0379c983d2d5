"""Waking workers up: one arq job per intent, the job id being the intent id.

arq refuses a second job with an id that is queued, running or whose result is still
kept; the worker keeps no results (``keep_result=0``), so a relayed intent can always be
enqueued again once its previous job has finished, and never twice at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from arq.connections import ArqRedis

JOB_NAME = "run_intent"


def connect(redis_url: str) -> ArqRedis:
    """A Redis handle that connects on first use, so a web process starts without Redis."""
    redis: ArqRedis = ArqRedis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    return redis


async def enqueue(redis: ArqRedis, intent_ids: Iterable[str], *, defer: float = 0) -> int:
    """Enqueue each intent; returns how many jobs were new (the rest were already queued)."""
    ids = list(intent_ids)
    if not ids:
        return 0
    jobs = await asyncio.gather(
        *(redis.enqueue_job(JOB_NAME, i, _job_id=i, _defer_by=defer or None) for i in ids)
    )
    return sum(1 for job in jobs if job is not None)
