"""The arq worker: configuration as data, clients made at start-up and kept in ``ctx``.

``worker_options(settings)`` is the whole configuration, so the CLI, ``dev`` and the
tests (burst-mode workers) all run the same worker. The CLI runs it as a
:class:`BridgeWorker`, which outlives a Redis outage of any length.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import click
import prometheus_client
from arq import cron
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker, func

from bridge.config import BridgeConfig
from bridge.core import logs, metrics
from bridge.core.logs import get_logger
from bridge.core.outage import RedisOutage, redis_down
from bridge.core.queue import JOB_NAME
from bridge.core.settings import Settings
from bridge.store.db import Engine
from jobs.catchup import catch_up_job
from jobs.collector import collect
from jobs.relay import relay, relay_once
from jobs.retention import prune
from jobs.runner import backoff, run_intent
from jobs.runtime import Runtime

log = get_logger(__name__)


def worker_options(
    settings: Settings, *, engine: Engine | None = None, relay_at_startup: bool = True
) -> dict[str, Any]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        # Run again when a BridgeWorker starts over after Redis was away at start-up:
        # the runtime is made once.
        runtime: Runtime | None = ctx.get("runtime")
        if runtime is None:
            runtime = Runtime.build(settings, engine=engine)
            ctx["runtime"] = runtime
        runtime.redis = ctx["redis"]
        metrics.REDIS_UP.set(1)  # arq has just connected
        if relay_at_startup:
            # Whatever Redis lost while we were down is in the database: queue it again.
            await relay_once(runtime)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        runtime: Runtime | None = ctx.get("runtime")
        if runtime is not None:
            await runtime.close()

    interval = settings.relay_interval_seconds
    job_timeout = settings.lease_seconds + settings.cryptolens_read_timeout
    crons = [
        cron(
            relay,
            name="relay",
            second=set(range(0, 60, interval)) if interval < 60 else {0},
            run_at_startup=False,
            unique=True,
            # arq marks a job in progress for the longest timeout + 10 s; a job whose
            # worker died is retaken only then, so no function may set it higher.
            timeout=job_timeout,
        ),
        # Retention (bridge.store.retention): every minute, one run across workers.
        cron(
            prune, name="prune", second={45}, run_at_startup=False, unique=True, timeout=job_timeout
        ),
    ]
    config = BridgeConfig.load(settings.config_path)
    collector = config.usage.collector
    if collector is not None:
        # unique: one run per tick across every worker (a second would find nothing new,
        # the watermarks see to that, but would cost every key a call).
        crons.append(
            cron(
                collect,
                name="collect",
                unique=True,
                timeout=job_timeout,
                **_every(collector.interval_seconds),
            )
        )
    catch_up_minutes = config.stripe.catch_up_interval_minutes
    if catch_up_minutes:
        # unique: one run per tick across every worker (a second would only count
        # duplicates, but would list the window again).
        crons.append(
            cron(
                catch_up_job,
                name="catch_up",
                unique=True,
                timeout=job_timeout,
                **_every(catch_up_minutes * 60),
            )
        )
    return {
        "functions": [
            # The database counts attempts; arq's own try limit would silently drop an
            # intent that keeps meeting a busy license lock.
            func(
                run_intent,
                name=JOB_NAME,
                max_tries=1_000_000,
                timeout=job_timeout,
            ),
        ],
        "cron_jobs": crons,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        # One try: BridgeWorker waits for Redis itself (with backoff, for as long as it
        # takes), where arq's own retries would give up after a few seconds.
        "redis_settings": dataclasses.replace(
            RedisSettings.from_dsn(settings.redis_url), conn_retries=0
        ),
        "poll_delay": settings.worker_poll_delay,
        "job_completion_wait": settings.worker_shutdown_wait,
        "keep_result": 0,
        "max_jobs": settings.worker_max_jobs,
        "handle_signals": True,
    }


#: Waiting for Redis: the first probe soon after a failure, then backing off to this.
REDIS_RETRY_BASE = 0.2
REDIS_RETRY_CAP = 5.0


class BridgeWorker(Worker):
    """arq's worker, riding out a Redis outage of any length.

    arq lets a Redis error escape its main loop and the worker process ends: with Redis
    restarted, nothing would run the relay that re-queues what the database holds. Here
    a Redis error in the loop (or at start-up) is an outage: logged once, shown in
    metrics (:mod:`bridge.core.outage`), Redis probed with backoff until it answers,
    its end logged, and then the relay re-queues every intent that is due, since a
    restarted Redis may have lost its jobs. Jobs already running carry on meanwhile
    (the database, not Redis, records their outcome). A restart policy is the second
    line, not the first.

    This extends ``main``, ``_poll_iteration``, ``start_jobs`` and ``close`` of arq 0.28
    (pinned below 0.29 in pyproject.toml): tests/jobs/test_worker.py covers each, and
    tests/scenarios/test_resilience.py the whole outage with a worker process.
    """

    def __init__(self, *args: Any, outage: RedisOutage | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = outage or RedisOutage("worker")

    async def main(self) -> None:
        while True:
            try:
                await super().main()
                return
            except Exception as exc:
                if self.burst or not redis_down(exc):
                    raise
                # Redis away at start-up (no pool, or on_startup's relay failed): wait
                # for it, then start again (on_startup relays then).
                await self._wait_for_redis(exc)

    async def _poll_iteration(self) -> None:
        self._forget_failed_jobs()
        try:
            await super()._poll_iteration()
        except Exception as exc:
            if self.burst or not redis_down(exc):
                raise
            error: BaseException | None = exc
            while error is not None:
                await self._wait_for_redis(error)
                error = await self._relay()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except Exception as exc:
            if not redis_down(exc):
                raise
            # arq takes a job's slot (its semaphore, its counter) before asking Redis
            # about the job, and gives it back when the job's task ends: this job got no
            # task, so its slot is given back here, else each outage would shrink
            # max_jobs for good.
            self._release_sem_dec_counter_on_complete()
            raise

    def _forget_failed_jobs(self) -> None:
        """Drop the jobs that ended on a Redis error (arq's own calls around them: the
        job's outcome is in the database), so that arq does not raise their errors
        again once Redis is back."""
        for job_id, task in list(self.tasks.items()):
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None and redis_down(error):
                    del self.tasks[job_id]

    async def _wait_for_redis(self, exc: BaseException) -> None:
        """Until Redis answers: the outage logged once, then probes with backoff."""
        self.outage.failed(exc)
        attempt = 0
        while True:
            try:
                await self._probe()
            except Exception as error:
                if not redis_down(error):
                    raise
                attempt += 1
                await asyncio.sleep(backoff(attempt, base=REDIS_RETRY_BASE, cap=REDIS_RETRY_CAP))
            else:
                self.outage.answered()
                return

    async def _probe(self) -> None:
        if self.redis_settings is None:  # made with a pool of the caller's
            await self.pool.ping()
            return
        probe = await create_pool(self.redis_settings)  # connects and pings, once
        await probe.aclose()

    async def _relay(self) -> BaseException | None:
        """Re-queue what is due, since Redis may have come back empty; the error if
        Redis failed again meanwhile."""
        runtime: Runtime | None = self.ctx.get("runtime")
        if runtime is None:
            return None
        try:
            await relay_once(runtime)
        except Exception as exc:
            if redis_down(exc):
                return exc
            # The database, say: not a reason to end the worker; the relay's cron
            # comes round again.
            log.exception("relay after the redis outage failed; the next relay retries")
        return None

    async def close(self) -> None:
        try:
            await super().close()
        except Exception as exc:
            if not redis_down(exc):
                raise
            # arq deletes its health-check key before on_shutdown: with Redis away,
            # the rest of the shutdown still happens (jobs ended, clients closed).
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            if self.on_shutdown is not None:
                await self.on_shutdown(self.ctx)
            if self._pool is not None:
                await self._pool.aclose()
                self._pool = None


def _every(seconds: int) -> dict[str, Any]:
    """arq cron fields for "every ``seconds``", on the clock's round values: under a minute
    by seconds, under an hour by minutes, else by hours (rounded to what divides a day)."""
    if seconds < 60:
        return {"second": set(range(0, 60, seconds))}
    if seconds < 3600:
        return {"second": {0}, "minute": set(range(0, 60, max(seconds // 60, 1)))}
    return {"second": {0}, "minute": {0}, "hour": set(range(0, 24, max(seconds // 3600, 1)))}


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def serve_metrics(settings: Settings) -> None:
    """This process's metrics (Cryptolens calls, retries) on BRIDGE_WORKER_METRICS_PORT,
    bound to BRIDGE_WORKER_METRICS_ADDRESS: this host only unless the operator says
    otherwise, since they are the operator's and not the network's."""
    if settings.worker_metrics_port:
        prometheus_client.start_http_server(
            settings.worker_metrics_port, addr=settings.worker_metrics_address
        )


@click.command("worker")
@click.option("--burst", is_flag=True, help="Process what is queued, then exit.")
def command(burst: bool) -> None:
    """Run the worker (BRIDGE_DATABASE_URL, BRIDGE_REDIS_URL, CRYPTOLENS_TOKEN, ...)."""
    settings = Settings()
    logs.configure(settings.log_level)
    logs.register_secrets([settings.cryptolens_token.get_secret_value()])
    settings.token()  # fail fast on an empty or placeholder token
    # arq binds the worker to the event loop current at construction; run() drives it.
    # uvloop (installed with uvicorn[standard]) halves the event loop's share of a job.
    asyncio.set_event_loop(_new_loop())
    serve_metrics(settings)
    worker = BridgeWorker(**worker_options(settings), burst=burst)
    log.info(
        "worker starting",
        redis=settings.redis_url.split("@")[-1],
        cryptolens=settings.cryptolens_api_url,
    )
    worker.run()
