"""Group commit: concurrent webhook deliveries share one transaction and one Redis trip.

A request hands its verified, planned :class:`~bridge.store.inbox.Delivery` to the process's
:class:`Batcher` and waits. One flusher task stores everything pending in one
transaction (:func:`bridge.store.inbox.record_many`), enqueues the new intents in one round
trip, then answers each waiting request with its own :class:`~bridge.store.inbox.Recorded`.
It flushes as soon as the previous flush is done, with one exception borrowed from
PostgreSQL's ``commit_delay``: when the previous batch held more than one delivery
(deliveries are arriving together), it first waits ``commit_delay`` for those in flight
to join. A lone request waits for no timer. A batch is at most ``max_batch`` deliveries.

What a request sees is what it would see alone:

- its answer comes after its event and intents are committed;
- a database that cannot take the batch fails every request in it (nothing of theirs is
  stored: one transaction); any other error falls back to storing the batch's
  deliveries one by one, so that one poisoned delivery fails alone;
- Redis trouble after the commit is logged and counted, never raised: the intents are
  in the database and the worker's relay queues them.

On SQLite the flusher also runs the WAL checkpoints, rather than letting a commit run one
on the event loop (see :func:`bridge.store.wal.checkpoint`), in two steps and in a thread
(the loop goes on taking requests). Every ``checkpoint_every`` commits, a checkpoint
copies the WAL into the database while commits go on. Once it is done, the flusher runs
a second one between two of its transactions: it has only what was committed meanwhile
to copy, and with no commit beside it, it copies all of it, so the next commit starts
the WAL over. (Checkpoints beside a steady stream of commits never catch up with them:
the WAL grew without end. Stopping the commits for the whole copy cost the p99.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bridge.core import metrics
from bridge.core.logs import get_logger
from bridge.core.queue import ENQUEUE_TIMEOUT, Enqueuer
from bridge.store import inbox, wal
from bridge.store.db import is_sqlite
from bridge.store.inbox import Delivery, Recorded

log = get_logger(__name__)

MAX_BATCH = 256
# SQLite commits between two checkpoints (``bridge.store.wal.checkpoint``): about the 1000
# WAL pages after which SQLite would checkpoint by itself, at ingest's batch sizes.
CHECKPOINT_EVERY = 64
# Under concurrent load, how long a flush waits for deliveries in flight. uvloop (what
# `serve` runs) rounds timers to whole milliseconds, so this is a 0 ms timer there: the
# flush waits one turn of the loop, whose I/O poll lets the requests already sent join
# (a plain ``sleep(0)`` resumes before their tasks run, and measured no better). With the
# bench's closed loop (8 connections) that took batches from about 3.5 to 6 and acks/s
# up 13%, at the same p99; a 1 ms timer gave back the gain as idle time.
COMMIT_DELAY = 0.00025

# The database is not there or not taking writes: retrying delivery by delivery would only
# fail again, slower.
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)

_Waiting = tuple[Delivery, "asyncio.Future[Recorded]"]


class Batcher:
    def __init__(
        self,
        engine: Engine,
        queue: Enqueuer | None,
        *,
        max_batch: int = MAX_BATCH,
        enqueue_timeout: float = ENQUEUE_TIMEOUT,
        checkpoint_every: int = CHECKPOINT_EVERY,
        commit_delay: float = COMMIT_DELAY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self._sleep = sleep  # the commit delay's timer: tests hold it open, not the clock
        self.queue = queue
        self.max_batch = max_batch
        self.enqueue_timeout = enqueue_timeout
        self.checkpoint_every = checkpoint_every
        self.commit_delay = commit_delay
        self._last_batch = 0
        self._pending: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self._uncheckpointed = 0  # SQLite commits since the last checkpoint began
        self._copying: asyncio.Task[None] | None = None  # the checkpoint beside commits

    async def record(self, delivery: Delivery) -> Recorded:
        """Store ``delivery`` with whatever else is pending; raises what storing raised."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._run())
        return await future

    async def aclose(self) -> None:
        """Wait for the flush under way and whatever is pending (the app's shutdown)."""
        if self._flusher is not None:
            await self._flusher
        if self._copying is not None:
            await self._copying

    async def _run(self) -> None:
        try:
            while self._pending:
                if self._last_batch > 1 and self.commit_delay > 0:
                    await self._sleep(self.commit_delay)
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                self._last_batch = len(batch)
                await self._flush(batch)
                await self._checkpoint_step()
        except BaseException as exc:  # cancelled: nobody may wait forever
            for _, future in self._pending:
                _fail(future, exc)
            self._pending.clear()
            raise
        finally:
            self._flusher = None

    async def _flush(self, batch: list[_Waiting]) -> None:
        outcomes: list[Recorded | BaseException]
        deliveries = [d for d, _ in batch]
        try:
            try:
                outcomes = list(await self._store(deliveries))
            except _UNAVAILABLE as exc:
                log.error("database unavailable", error=type(exc).__name__, batch=len(batch))
                outcomes = [exc] * len(batch)
            except Exception as exc:
                if len(batch) == 1:
                    log.error("storing a delivery failed", error=type(exc).__name__)
                    outcomes = [exc]
                else:
                    log.warning(
                        "batch insert failed; storing one by one",
                        error=type(exc).__name__,
                        batch=len(batch),
                    )
                    outcomes = [await self._store_alone(d) for d in deliveries]
            new = [i for o in outcomes if isinstance(o, Recorded) for i in o.new_intents]
            hinted = [i for o in outcomes if isinstance(o, Recorded) for i in o.hinted]
            if new or hinted:
                await self._enqueue(new, hinted)
        except BaseException as exc:  # cancelled mid-flush
            for _, future in batch:
                _fail(future, exc)
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its request was cancelled (client gone)
                continue
            if isinstance(outcome, Recorded):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

    async def _store(self, deliveries: Sequence[Delivery]) -> list[Recorded]:
        # SQLite is a local file with one writer at a time (see bridge.store.db): a thread would
        # only queue on its lock and cost a loop turn. A database over the network gets one.
        if is_sqlite(self.engine):
            recorded = inbox.record_many(self.engine, deliveries)
            self._uncheckpointed += 1
            return recorded
        return await asyncio.to_thread(inbox.record_many, self.engine, deliveries)

    async def _checkpoint_step(self) -> None:
        """Between two transactions: start the copy beside commits when it is due, or
        finish one that is done (see the module's docstring)."""
        if self._copying is not None:
            if not self._copying.done():
                return
            self._copying = None
            await self._checkpoint()  # only what was committed meanwhile; commits wait
        elif self._uncheckpointed >= self.checkpoint_every:
            self._uncheckpointed = 0
            self._copying = asyncio.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        # In a thread: the driver lets go of the GIL for the whole checkpoint.
        try:
            await asyncio.to_thread(wal.checkpoint, self.engine)
        except Exception as exc:  # the next one catches up
            log.warning("checkpoint failed", error=type(exc).__name__)

    async def _store_alone(self, delivery: Delivery) -> Recorded | BaseException:
        try:
            [recorded] = await self._store([delivery])
        except Exception as exc:
            log.error("storing a delivery failed", error=type(exc).__name__)
            return exc
        return recorded

    async def _enqueue(self, intent_ids: list[str], hinted: list[str] | None = None) -> None:
        """Queue the new intents; key creations that a delivery added a start hint to
        are queued too if Redis lost them, and brought forward if they are waiting."""
        if self.queue is None:
            return
        hinted = hinted or []
        try:
            async with asyncio.timeout(self.enqueue_timeout):  # no task, unlike wait_for
                await self.queue.enqueue([*intent_ids, *hinted])
                await self.queue.nudge(hinted)
        except Exception as exc:  # any Redis trouble: the relay will queue them
            metrics.ENQUEUE_FAILURES.inc()
            log.warning(
                "enqueue failed; the relay will retry",
                error=type(exc).__name__,
                intents=len(intent_ids),
            )


def _fail(future: asyncio.Future[Recorded], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)
