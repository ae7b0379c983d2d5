"""The collector: counters on keys read from the sandbox, each increase billed once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta

from click.testing import CliRunner
from sqlmodel import Session, select

from bridge.cli import main
from bridge.store.tables import UsageCounter
from jobs.collector import collect_once
from jobs.worker import worker_options
from tests.fixtures.runs import runtime
from tests.fixtures.usage import (
    CRYPTOLENS_PRODUCT,
    T0,
    UsageBridge,
    add_license,
    recorded_usage,
    sandbox_key,
)


def ticking(start: int) -> Callable[[], datetime]:
    """A clock that moves a second on every reading (the collector's, not the wall's)."""
    at = [datetime.fromtimestamp(start).astimezone()]

    def now() -> datetime:
        at[0] += timedelta(seconds=1)
        return at[0]

    return now


def counter_key(bridge: UsageBridge, n: int, *, start: int = 0) -> str:
    key = sandbox_key(bridge.sandbox)
    add_license(bridge.engine, f"stripe:sub:sub_collect_{n}", CRYPTOLENS_PRODUCT, key)
    bridge.sandbox.call(
        "data/AddDataObjectToKey",
        ProductId=CRYPTOLENS_PRODUCT,
        Key=key,
        Name="usage",
        IntValue=start,
    )
    return key


def raise_counter(bridge: UsageBridge, key: str, by: int) -> None:
    bridge.sandbox.call(
        "data/IncrementIntValueToKey",
        ProductId=CRYPTOLENS_PRODUCT,
        Key=key,
        Name="usage",
        IntValue=by,
    )


class TestCollector:
    async def test_each_increase_is_billed_once_across_runs_and_restarts(
        self, usage_bridge: UsageBridge
    ) -> None:
        a, b = counter_key(usage_bridge, 1, start=5), counter_key(usage_bridge, 2)
        raise_counter(usage_bridge, b, 3)
        clock = ticking(T0)
        async with runtime(usage_bridge.settings, usage_bridge.engine) as rt:
            rt.clock = clock
            first = await collect_once(rt)
            again = await collect_once(rt)
        assert (first.keys, first.billed, first.records) == (2, 8, 2)
        assert (again.billed, again.unchanged) == (0, 2)

        raise_counter(usage_bridge, a, 4)
        # A restart: a new process, nothing in memory; and two runs at once.
        async with (
            runtime(usage_bridge.settings, usage_bridge.engine) as one,
            runtime(usage_bridge.settings, usage_bridge.engine) as two,
        ):
            one.clock = two.clock = clock
            runs = await asyncio.gather(collect_once(one), collect_once(two))
        assert sum(r.billed for r in runs) == 4

        assert usage_bridge.ledger_total() == 12
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert recorded_usage(usage_bridge.sandbox) == {a: 9, b: 3}

    async def test_a_counter_that_went_down_is_reported_not_billed(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = counter_key(usage_bridge, 1, start=10)
        async with runtime(usage_bridge.settings, usage_bridge.engine) as rt:
            rt.clock = ticking(T0)
            assert (await collect_once(rt)).billed == 10
            usage_bridge.sandbox.call(
                "data/SetIntValueToKey",
                ProductId=CRYPTOLENS_PRODUCT,
                Key=key,
                Name="usage",
                IntValue=2,
            )
            dropped = await collect_once(rt)
            assert dropped.billed == 0
            assert dropped.decreased == [{"product_id": CRYPTOLENS_PRODUCT, "from": 10, "to": 2}]
            # Counting again from the lower value, up through values billed before.
            raise_counter(usage_bridge, key, 9)
            assert (await collect_once(rt)).billed == 9
        assert usage_bridge.ledger_total() == 19
        with Session(usage_bridge.engine) as s:
            [counter] = s.exec(select(UsageCounter)).all()
        assert (counter.value, counter.epoch) == (11, 1)
        assert counter.note is not None and "went down from 10 to 2" in counter.note

    async def test_keys_without_the_counter_are_skipped(self, usage_bridge: UsageBridge) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        add_license(usage_bridge.engine, "stripe:sub:sub_plain", CRYPTOLENS_PRODUCT, key)
        async with runtime(usage_bridge.settings, usage_bridge.engine) as rt:
            summary = await collect_once(rt)
        assert (summary.keys, summary.missing, summary.billed) == (1, 1, 0)

    def test_the_worker_runs_it_on_a_cron(self, usage_bridge: UsageBridge) -> None:
        options = worker_options(usage_bridge.settings, engine=usage_bridge.engine)
        names = [c.name for c in options["cron_jobs"]]
        assert names == ["relay", "prune", "collect"]
        [collect] = [c for c in options["cron_jobs"] if c.name == "collect"]
        assert collect.second == {0} and collect.unique


class TestCommand:
    def test_collect_by_hand_prints_what_it_billed(self, usage_bridge: UsageBridge) -> None:
        key = counter_key(usage_bridge, 1, start=6)
        settings = usage_bridge.settings
        env = {
            "BRIDGE_DATABASE_URL": settings.database_url,
            "BRIDGE_REDIS_URL": settings.redis_url,
            "BRIDGE_CONFIG": str(settings.config_path),
            "CRYPTOLENS_API_URL": settings.cryptolens_api_url,
            "CRYPTOLENS_TOKEN": settings.cryptolens_token.get_secret_value(),
            "BRIDGE_LOG_LEVEL": "WARNING",
        }
        runner = CliRunner()
        first = runner.invoke(main, ["collect"], env=env)
        second = runner.invoke(main, ["collect"], env=env)
        assert first.exit_code == 0, first.output
        assert json.loads(first.output.strip().splitlines()[-1])["billed"] == 6
        assert json.loads(second.output.strip().splitlines()[-1])["billed"] == 0
        assert key in {a.key for a in usage_bridge.aggregates()}
