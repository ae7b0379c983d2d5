"""The usage collector: Cryptolens counters on keys, turned into ledger records.

Usage-based licensing in Cryptolens is often a data object on each key (``usage``) that
the licensed app raises with IncrementIntValueToKey. For every product in
``[usage.collector] products``, the collector reads each key's counter (one
ListDataObjectsToKey per key: the general listing cannot filter one product's keys) and
bills each increase since the last reading (``bridge.store.counters.record_reading``: the
watermark moves in the transaction that adds the records, so a second run, or a run
after a restart, never counts an increase twice; a counter that went down is reported,
not billed). The keys are those the bridge knows for the product (its licenses).

It runs inside the worker every ``interval_seconds`` (an arq cron, one run per tick
across workers) and by hand as ``cryptolens-bridge collect``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import click

from bridge.config import BridgeConfig
from bridge.core import logs
from bridge.core.logs import get_logger
from bridge.core.queue import connect, enqueue_deferred
from bridge.core.settings import Settings
from bridge.cryptolens import CryptolensError
from bridge.store import counters, ledger, licenses
from jobs.dbcall import in_thread
from jobs.runtime import Runtime

log = get_logger(__name__)

# Keys read at once: enough to hide Cryptolens' latency, few enough to stay polite.
CONCURRENCY = 8


@dataclass
class Summary:
    keys: int = 0
    billed: int = 0  # units added to the ledger
    records: int = 0
    unchanged: int = 0
    missing: int = 0  # keys without the counter
    decreased: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0


async def collect_once(rt: Runtime) -> Summary:
    usage = rt.config.usage
    summary = Summary()
    if usage.collector is None:
        return summary
    name = usage.collector.data_object
    gate = asyncio.Semaphore(CONCURRENCY)
    opened: list[tuple[str, Any]] = []

    async def one(product_id: int, key: str) -> None:
        async with gate:
            read_at = rt.now()  # before the call: a later reading wins over this one
            try:
                objects = await rt.client.list_data_objects_to_key(product_id, key, contains=name)
            except CryptolensError as exc:
                summary.errors += 1
                log.warning("counter not read", product=product_id, error=str(exc))
                return
        found = sorted((o for o in objects if o.name == name), key=lambda o: o.id)
        if not found:
            summary.missing += 1
            return
        counter = found[0]  # the oldest of that name, as Cryptolens resolves a name
        reading = await in_thread(
            counters.record_reading,
            rt.engine,
            product_id=product_id,
            key=key,
            name=name,
            object_id=counter.id,
            value=counter.int_value,
            read_at=read_at,
            config=usage,
        )
        if reading.decrease is not None:
            was, now = reading.decrease
            # The key string stays out of logs; the watermark row keeps the note.
            log.warning("usage counter went down: not billed", product=product_id, was=was, now=now)
            summary.decreased.append({"product_id": product_id, "from": was, "to": now})
        elif reading.billed:
            summary.billed += reading.billed
            summary.records += 1
            opened.extend(reading.stored.opened)
        else:
            summary.unchanged += 1

    jobs = []
    for product_id in usage.collector.products:
        keys = await in_thread(licenses.keys_of_product, rt.engine, product_id)
        summary.keys += len(keys)
        jobs += [one(product_id, key) for key in keys]
    await asyncio.gather(*jobs)
    await _enqueue(rt, opened)
    if summary.billed or summary.decreased or summary.errors:
        log.info("usage collected", **{k: v for k, v in asdict(summary).items() if v})
    return summary


async def _enqueue(rt: Runtime, opened: list[tuple[str, Any]]) -> None:
    """The new aggregates' jobs, deferred to their windows' ends (else the relay)."""
    if rt.redis is None or not opened:
        return
    now = rt.now()
    await enqueue_deferred(rt.redis, [(i, ledger.due_in(due, now)) for i, due in opened])


async def collect(ctx: dict[str, Any]) -> dict[str, Any]:
    """arq cron entry point."""
    rt: Runtime = ctx["runtime"]
    return asdict(await collect_once(rt))


async def _run_by_hand(settings: Settings) -> Summary:
    rt = Runtime.build(settings)
    rt.redis = connect(settings.redis_url)
    try:
        return await collect_once(rt)
    finally:
        await rt.redis.aclose()
        await rt.close()
        rt.engine.dispose()  # its own engine, made by Runtime.build


@click.command("collect")
def command() -> None:
    """Read the usage counters once ([usage.collector]) and bill what increased."""
    settings = Settings()
    logs.configure(settings.log_level)
    logs.register_secrets([settings.cryptolens_token.get_secret_value()])
    settings.token()
    if BridgeConfig.load(settings.config_path).usage.collector is None:
        raise click.ClickException("no [usage.collector] in BRIDGE_CONFIG: nothing to collect")
    summary = asyncio.run(_run_by_hand(settings))
    click.echo(json.dumps(asdict(summary), sort_keys=True))
