"""The arq worker: configuration as data, clients made at start-up and kept in ``ctx``.

``worker_options(settings)`` is the whole configuration, so the CLI, ``dev`` and the
tests (burst-mode workers) all run the same worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click
import prometheus_client
from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker, func
from sqlalchemy import Engine

from bridge.core import logs
from bridge.core.logs import get_logger
from bridge.core.queue import JOB_NAME
from bridge.core.settings import Settings
from jobs.collector import collect
from jobs.relay import relay, relay_once
from jobs.runner import run_intent
from jobs.runtime import Runtime

log = get_logger(__name__)


def worker_options(
    settings: Settings, *, engine: Engine | None = None, relay_at_startup: bool = True
) -> dict[str, Any]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        runtime = Runtime.build(settings, engine=engine)
        runtime.redis = ctx["redis"]
        ctx["runtime"] = runtime
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
    ]
    collector = settings.bridge_config().usage.collector
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
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "poll_delay": settings.worker_poll_delay,
        "job_completion_wait": settings.worker_shutdown_wait,
        "keep_result": 0,
        "max_jobs": settings.worker_max_jobs,
        "handle_signals": True,
    }


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
    worker = Worker(**worker_options(settings), burst=burst)
    log.info(
        "worker starting",
        redis=settings.redis_url.split("@")[-1],
        cryptolens=settings.cryptolens_api_url,
    )
    worker.run()
