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

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from arq.connections import ArqRedis
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import Serializer, serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import ConnectionPool
from redis.exceptions import NoScriptError

from bridge.core.logs import get_logger

log = get_logger(__name__)

JOB_NAME = "run_intent"
# How long an ingest edge (a webhook's group commit, the usage endpoint, the collector)
# waits on Redis before it answers anyway: the intents are stored, the relay queues them.
ENQUEUE_TIMEOUT = 1.0

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


def connect(redis_url: str) -> ArqRedis:
    """A Redis handle that connects on first use, so a web process starts without Redis."""
    redis: ArqRedis = ArqRedis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    return redis


def _script_args(
    intent_ids: list[str],
    *,
    queue: str,
    expires_extra_ms: int,
    serializer: Serializer | None,
    defer: float,
) -> tuple[list[str], list[str | bytes | int]]:
    """The script's KEYS and ARGV for ``intent_ids`` (no duplicates)."""
    now = timestamp_ms()
    defer_ms = round(defer * 1000)
    keys = [queue]
    argv: list[str | bytes | int] = [defer_ms + expires_extra_ms, now + defer_ms]
    for job_id in intent_ids:
        keys += [job_key_prefix + job_id, result_key_prefix + job_id]
        argv += [job_id, serialize_job(JOB_NAME, (job_id,), {}, None, now, serializer=serializer)]
    return keys, argv


async def enqueue(redis: ArqRedis, intent_ids: Iterable[str], *, defer: float = 0) -> int:
    """Enqueue each intent; returns how many jobs were new (the rest were already queued)."""
    ids = list(dict.fromkeys(intent_ids))
    if not ids:
        return 0
    keys, argv = _script_args(
        ids,
        queue=redis.default_queue_name,
        expires_extra_ms=redis.expires_extra_ms,
        serializer=redis.job_serializer,
        defer=defer,
    )
    execute: Callable[..., Awaitable[Any]] = redis.execute_command
    try:
        added = await execute("EVALSHA", _ENQUEUE_SHA, len(keys), *keys, *argv)
    except NoScriptError:
        added = await execute("EVAL", _ENQUEUE, len(keys), *keys, *argv)
    return int(added)


async def enqueue_deferred(redis: ArqRedis, deferred: Iterable[tuple[str, float]]) -> None:
    """Each intent's job, deferred by its seconds (one round trip per distinct delay).
    Redis trouble is logged, never raised: the intents are stored, and the worker's relay
    queues them."""
    by_delay: dict[float, list[str]] = {}
    for intent_id, delay in deferred:
        by_delay.setdefault(delay, []).append(intent_id)
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT):
            for delay, ids in by_delay.items():
                await enqueue(redis, ids, defer=delay)
    except Exception as exc:
        log.warning("enqueue failed; the relay will retry", error=type(exc).__name__)


class Enqueuer:
    """The web process's way into the queue: one connection, one enqueue at a time.

    Through ``ArqRedis`` each enqueue paid for redis-py's command layer: a connection
    taken from the pool and probed with a zero-timeout read, every argument through its
    encoder, a task per socket timeout. The group commit sends one script call per batch,
    one after the other, so this packs the call itself and writes it on a connection of
    its own. Jobs are exactly those of :func:`enqueue` with arq's defaults (queue,
    expiry, pickle). There is no socket timeout: the caller bounds each call
    (``asyncio.timeout``); an error or a cancellation drops the connection, and the next
    call connects again.
    """

    def __init__(self, redis_url: str) -> None:
        pool = ConnectionPool.from_url(redis_url, socket_connect_timeout=2)
        self._connection = pool.connection_class(**pool.connection_kwargs)  # not yet open
        self._lock = asyncio.Lock()

    async def enqueue(self, intent_ids: Iterable[str]) -> int:
        """Enqueue each intent; returns how many jobs were new."""
        ids = list(dict.fromkeys(intent_ids))
        if not ids:
            return 0
        keys, argv = _script_args(
            ids,
            queue=default_queue_name,
            expires_extra_ms=expires_extra_ms,
            serializer=None,
            defer=0,
        )
        args = [str(len(keys)).encode(), *(k.encode() for k in keys), *map(_bytes, argv)]
        async with self._lock:
            try:
                added = await self._call(_pack([b"EVALSHA", _ENQUEUE_SHA.encode(), *args]))
            except NoScriptError:
                added = await self._call(_pack([b"EVAL", _ENQUEUE.encode(), *args]))
        return int(added)

    async def nudge(self, intent_ids: Iterable[str]) -> None:
        """Bring the queued (deferred) jobs of these intents forward to now.

        A key creation that waits for a subscription's other start events is a job
        deferred to the end of the wait; when one of them arrives, the job should run now
        (an enqueue is skipped while the deferred job exists). ``XX LT``: only jobs in
        the queue, and only earlier; a job already running or gone is left alone.
        """
        ids = list(dict.fromkeys(intent_ids))
        if not ids:
            return
        now = str(timestamp_ms()).encode()
        members = [part for job_id in ids for part in (now, job_id.encode())]
        command = _pack([b"ZADD", default_queue_name.encode(), b"XX", b"LT", *members])
        async with self._lock:
            await self._call(command)

    async def _call(self, command: bytes) -> Any:
        # Both disconnect on any error, cancellation included, so that a reply can
        # never be read as the answer to a later command.
        await self._connection.send_packed_command(command, check_health=False)
        return await self._connection.read_response()

    async def aclose(self) -> None:
        await self._connection.disconnect()


def _bytes(value: str | bytes | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _pack(args: list[bytes]) -> bytes:
    """One command in the Redis protocol (RESP): ``*<n>``, then ``$<len>`` and each arg."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(parts)
