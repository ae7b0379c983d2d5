"""Whether this process reaches Redis: an outage logged once when it starts and once when
it ends, and shown in metrics (``bridge_redis_up``, ``bridge_redis_outages_total``) and
in the web's ``/readyz``.

Redis only wakes workers; the database holds every intent. So an outage is something to
ride out and report, not to die of: the web keeps storing and acknowledging deliveries,
the worker waits for Redis and then re-queues what the database says is due
(``jobs.worker.BridgeWorker``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from bridge.core.logs import get_logger
from bridge.core.metrics import REDIS_OUTAGES, REDIS_UP

log = get_logger(__name__)

#: What a Redis call raises when the server is away (refused, reset, timed out, still
#: loading its data after a restart: ``BusyLoadingError`` is a ``ConnectionError``).
REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


def redis_down(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis is away. redis-py turns a connection lost in the middle
    of a ``WATCH`` (arq takes each job under one) into a ``WatchError`` raised while
    handling the ``ConnectionError``: that one is an outage too, not a contended key."""
    if isinstance(exc, REDIS_DOWN):
        return True
    return isinstance(exc, WatchError) and isinstance(exc.__context__, REDIS_DOWN)


class RedisOutage:
    """One process's view of Redis; ``clock`` is monotonic seconds (tests set their own)."""

    def __init__(self, process: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.process = process
        self._clock = clock
        self.since: float | None = None  # on our clock; None: Redis answers

    @property
    def down(self) -> bool:
        return self.since is not None

    def seconds(self) -> float:
        """How long the current outage has lasted (0 when there is none)."""
        return 0.0 if self.since is None else max(self._clock() - self.since, 0.0)

    def failed(self, exc: BaseException) -> bool:
        """A Redis call failed with ``exc``; True when this starts an outage (logged)."""
        REDIS_UP.set(0)
        if self.since is not None:
            return False
        self.since = self._clock()
        REDIS_OUTAGES.inc()
        log.error(
            "redis unavailable; deliveries are kept in the database until it is back",
            process=self.process,
            error=type(exc).__name__,
        )
        return True

    def answered(self) -> bool:
        """Redis answered; True when this ends an outage (logged)."""
        REDIS_UP.set(1)
        if self.since is None:
            return False
        seconds = self.seconds()
        self.since = None
        log.warning("redis available again", process=self.process, seconds=round(seconds, 1))
        return True
