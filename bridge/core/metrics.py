"""Prometheus metrics: counters and histograms where things happen, gauges at scrape time.

The web process serves ``GET /metrics`` on its operator address (``BRIDGE_METRICS_ADDRESS``,
never the webhook port); the worker serves its own on ``BRIDGE_WORKER_METRICS_PORT`` (its
Cryptolens calls happen there). The gauges read the database and Redis when scraped
(:func:`refresh`), with a short timeout: a slow database leaves them at their last value
rather than stalling the scrape.

A scrape costs the same whatever the tables hold: each status is counted through the
status index up to ``bridge.store.stats.COUNT_CAP`` rows (``SELECT count(*)`` over a
million done intents took ~300 ms on PostgreSQL, per scrape), the oldest pending intent
sorts the pending rows only, all in one statement (one round trip), and the database
is read at most once per :data:`REFRESH_EVERY` seconds however many scrapers ask (the
others get the gauges as last read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from arq.connections import ArqRedis
from arq.constants import default_queue_name
from prometheus_client import Counter, Gauge, Histogram

from bridge.core.intents import Status
from bridge.core.logs import get_logger

log = get_logger(__name__)

WEBHOOKS = Counter(
    "bridge_webhooks_total", "Webhook deliveries by provider and outcome", ["provider", "outcome"]
)
ENQUEUE_FAILURES = Counter(
    "bridge_enqueue_failures_total", "Intents left for the relay because Redis failed"
)
CRYPTOLENS_CALLS = Histogram(
    "bridge_cryptolens_call_seconds",
    "Cryptolens Web API calls by method and outcome (ok, or the error's class), in seconds",
    ["method", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
INTENTS = Gauge(
    "bridge_intents", "Intents by status (at scrape time; at most 1000 counted)", ["status"]
)
QUEUE_DEPTH = Gauge("bridge_queue_depth", "Jobs in the arq queue (due or deferred)")
OLDEST_PENDING = Gauge(
    "bridge_oldest_pending_intent_seconds", "Age of the oldest pending intent (0: none)"
)
NEEDS_REVIEW = Gauge("bridge_needs_review", "Intents waiting for a person")
REDIS_UP = Gauge(
    "bridge_redis_up", "1 while this process reaches Redis, 0 during an outage (bridge.core.outage)"
)
REDIS_OUTAGES = Counter("bridge_redis_outages_total", "Redis outages this process has seen")
SCRAPE_ERRORS = Counter(
    "bridge_metrics_refresh_errors_total", "Scrape-time reads that failed or timed out", ["source"]
)

REFRESH_TIMEOUT = 1.0  # seconds per source at scrape time
REFRESH_EVERY = 5.0  # seconds: scrapes closer together than this reuse the last read


# Reads the intents' counts per status and the oldest pending intent's creation time
# (``bridge.store.stats.intent_stats`` bound to an engine): the store holds the SQL.
IntentStats = Callable[[], tuple[dict[str, int], datetime | None]]


class Refresher:
    """:func:`refresh`, at most once per ``every`` seconds of ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, every: float = REFRESH_EVERY):
        self._clock, self._every = clock, every
        self._last: float | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, read: IntentStats, redis: ArqRedis | None) -> None:
        async with self._lock:  # concurrent scrapes wait for one read, not one each
            now = self._clock()
            if self._last is not None and now - self._last < self._every:
                return
            await refresh(read, redis)
            self._last = self._clock()


async def refresh(read: IntentStats, redis: ArqRedis | None) -> None:
    """Set the gauges from the database (``read``) and Redis, each bounded by
    REFRESH_TIMEOUT."""
    try:
        counts, oldest = await asyncio.wait_for(asyncio.to_thread(read), REFRESH_TIMEOUT)
    except Exception as exc:
        SCRAPE_ERRORS.labels(source="database").inc()
        log.warning("metrics: database not read", error=type(exc).__name__)
    else:
        for status in Status:
            INTENTS.labels(status=status.value).set(counts.get(status.value, 0))
        NEEDS_REVIEW.set(counts.get(Status.NEEDS_REVIEW.value, 0))
        if oldest is not None and oldest.tzinfo is None:  # SQLite: naive UTC
            oldest = oldest.replace(tzinfo=UTC)
        OLDEST_PENDING.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)
    if redis is None:
        return
    try:
        depth = await asyncio.wait_for(redis.zcard(default_queue_name), REFRESH_TIMEOUT)
    except Exception as exc:
        SCRAPE_ERRORS.labels(source="redis").inc()
        REDIS_UP.set(0)
        log.warning("metrics: redis not read", error=type(exc).__name__)
    else:
        REDIS_UP.set(1)
        QUEUE_DEPTH.set(depth)
