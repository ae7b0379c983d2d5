"""Waking workers up: one arq job per intent, the job id being the intent id.

arq refuses a second job with an id that is queued, running or whose result is still
kept; the worker keeps no results (``keep_result=0``), so a relayed intent can always be
enqueued again once its previous job has finished, and never twice at once.

``ArqRedis.enqueue_job`` takes three round trips per job (WATCH, EXISTS, MULTI/EXEC). We
enqueue a whole list in one: a Lua script does, per job and atomically, what arq's
transaction does (skip the id when its job or result key exists, else ``PSETEX`` the job
with arq's serializer and expiry, and ``ZADD`` it to the queue), so jobs and the
dedupe by id are exactly arq's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.exceptions import NoScriptError

JOB_NAME = "run_intent"

# KEYS: the queue, then job key and result key per job.
# ARGV: expiry (ms) and score, then job id and serialized job per job.
# Returns how many jobs were added.
_ENQUEUE = """
local added = 0
local expires, score = tonumber(ARGV[1]), ARGV[2]
for i = 0, (#KEYS - 1) / 2 - 1 do
    local job_key, result_key = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
    if redis.call('EXISTS', job_key, result_key) == 0 then
        redis.call('PSETEX', job_key, expires, ARGV[4 + 2 * i])
        redis.call('ZADD', KEYS[1], score, ARGV[3 + 2 * i])
        added = added + 1
    end
end
return added
"""
# What redis-py's Script does, without building one (and hashing the script) per call:
# EVALSHA, and EVAL once when the server does not know the script (a restart, a flush).
_ENQUEUE_SHA = hashlib.sha1(_ENQUEUE.encode(), usedforsecurity=False).hexdigest()


def connect(redis_url: str, *, single_connection: bool = False) -> ArqRedis:
    """A Redis handle that connects on first use, so a web process starts without Redis.

    ``single_connection`` suits a caller that sends one command at a time (the web
    process's group commit): a pooled handle takes a connection from the pool per
    command and first probes it with a zero-timeout read, which costs a loop turn and a
    cancelled future each time. The single connection reconnects after an error.
    """
    redis: ArqRedis = ArqRedis.from_url(
        redis_url,
        socket_connect_timeout=2,
        socket_timeout=5,
        single_connection_client=single_connection,
    )
    return redis


async def enqueue(redis: ArqRedis, intent_ids: Iterable[str], *, defer: float = 0) -> int:
    """Enqueue each intent; returns how many jobs were new (the rest were already queued)."""
    ids = list(dict.fromkeys(intent_ids))
    if not ids:
        return 0
    now = timestamp_ms()
    defer_ms = round(defer * 1000)
    score = now + defer_ms
    keys: list[str] = [redis.default_queue_name]
    argv: list[str | bytes | int] = [defer_ms + redis.expires_extra_ms, score]
    for job_id in ids:
        keys += [job_key_prefix + job_id, result_key_prefix + job_id]
        job = serialize_job(JOB_NAME, (job_id,), {}, None, now, serializer=redis.job_serializer)
        argv += [job_id, job]
    execute: Callable[..., Awaitable[Any]] = redis.execute_command
    try:
        added = await execute("EVALSHA", _ENQUEUE_SHA, len(keys), *keys, *argv)
    except NoScriptError:
        added = await execute("EVAL", _ENQUEUE, len(keys), *keys, *argv)
    return int(added)
