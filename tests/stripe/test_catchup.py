"""Catch-up from Stripe's Events API (bridge.stripe.catchup, ``catch-up``, the worker's
periodic run): the official ``stripe`` library lists the stand-in's events over HTTP;
a gap is recorded through the inbox, a second run and late redeliveries are duplicates,
unhandled types are neither asked for nor stored. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.config import BridgeConfig
from bridge.core.queue import connect
from bridge.core.settings import Settings
from bridge.ops.catchup import command
from bridge.stripe import api
from bridge.stripe.catchup import Summary, catch_up
from bridge.stripe.plan import HANDLED_TYPES
from jobs.catchup import catch_up_job
from jobs.runtime import Runtime
from jobs.worker import worker_options
from tests.fixtures import stripe_builders as sb
from tests.fixtures.fake_stripe import API_KEY, FakeStripe
from tests.fixtures.pipeline import CONFIG, Pipeline, make_settings
from tests.fixtures.servers import SandboxServer

SINCE = datetime.fromtimestamp(sb.obj(sb.subscription())["created"] - 3600, UTC)


@pytest.fixture
def bridge_config() -> str:
    return CONFIG.replace("[stripe]\n", "[stripe]\ncatch_up_interval_minutes = 30\n", 1)


@pytest.fixture
def bridge_settings(
    database_url: str,
    redis_url: str,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    fake_stripe: FakeStripe,
    bridge_config: str,
) -> Settings:
    config = tmp_path / "bridge.toml"
    config.write_text(bridge_config)
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        sandbox_url=sandbox_server.url,
        config_path=config,
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=fake_stripe.url,
    )


def timeline() -> list[dict[str, Any]]:
    """A subscription's start (three events) and a one-off purchase, as Stripe lists them."""
    one_off = sb.checkout_session(metadata={"cryptolens_template_id": "1"})
    one_off["created"] = sb.obj(sb.subscription())["created"] + 10  # inside the window
    return [
        sb.checkout_session(mode="subscription"),
        sb.subscription(),
        sb.invoice(billing_reason="subscription_create"),
        one_off,
    ]


def unhandled() -> dict[str, Any]:
    event = sb.envelope("customer.created", {"id": sb.CUSTOMER, "object": "customer"}, created=0)
    event.update(id="evt_customer_created_1", created=sb.obj(sb.subscription())["created"])
    return event


async def run(bridge: Pipeline, fake: FakeStripe, *, page_size: int = 100) -> Summary:
    http = api.make_http_client()
    redis = connect(bridge.settings.redis_url)
    try:
        return await catch_up(
            bridge.engine,
            BridgeConfig.load(bridge.settings.config_path),
            since=SINCE,
            api_key=API_KEY,
            api_base=fake.url,
            http_client=http,
            redis=redis,
            page_size=page_size,
        )
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
        await redis.aclose()


class TestCatchUp:
    async def test_gap_is_recorded_and_made_once(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        events = timeline()
        fake_stripe.event_log = [*events, unhandled()]
        fake_stripe.subscriptions[sb.SUB] = sb.CUSTOMER
        # The first two were delivered; the webhook missed the rest (the gap).
        for event in events[:2]:
            assert (await bridge.post(event)).status_code == 200
        summary = await run(bridge, fake_stripe, page_size=2)
        assert (summary.duplicates, summary.recorded, summary.refused) == (2, 2, 0)
        assert sorted(summary.new_events) == sorted(e["id"] for e in events[2:])
        assert summary.pages == 2 and summary.listed == 4
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.sandbox.state()["counts"]["keys"] == 2  # one per purchase
        stored = {e.external_id for e in bridge.events()}
        assert stored == {e["id"] for e in events}  # the unhandled type is not stored

    async def test_paging_and_filters_as_stripe_takes_them(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        fake_stripe.event_log = [*timeline(), unhandled()]
        await run(bridge, fake_stripe, page_size=3)
        first, second = fake_stripe.event_queries
        asked = {v for k, v in first if k.startswith("types[")}
        assert asked == set(HANDLED_TYPES) and "customer.created" not in asked
        assert dict(first)["created[gte]"] == str(int(SINCE.timestamp()))
        assert "starting_after" not in dict(first)
        newest_first = fake_stripe.listing(first)["data"]
        assert dict(second)["starting_after"] == newest_first[-1]["id"]

    async def test_second_run_and_late_redeliveries_are_duplicates(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        events = timeline()
        fake_stripe.event_log = events
        fake_stripe.subscriptions[sb.SUB] = sb.CUSTOMER
        first = await run(bridge, fake_stripe)
        assert first.recorded == 4
        await bridge.drain()
        again = await run(bridge, fake_stripe)
        assert (again.recorded, again.duplicates, again.intents) == (0, 4, 0)
        for event in events:  # Stripe's own retries, late
            answer = await bridge.post(event)
            assert answer.json() == {"received": True, "duplicate": True, "intents": 0}
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.sandbox.state()["counts"]["keys"] == 2

    async def test_events_before_the_window_are_not_listed(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        old = sb.checkout_session()
        old["created"] = int(SINCE.timestamp()) - 1
        fake_stripe.event_log = [old]
        summary = await run(bridge, fake_stripe)
        assert (summary.listed, bridge.events()) == (0, [])


class TestPeriodic:
    def test_off_by_default(self, bridge_settings: Settings, tmp_path: Path) -> None:
        plain = tmp_path / "plain.toml"
        plain.write_text(CONFIG)
        off = bridge_settings.model_copy(update={"config_path": plain})
        names = {c.name for c in worker_options(off)["cron_jobs"]}
        assert "catch_up" not in names

    def test_scheduled_when_configured(self, bridge_settings: Settings) -> None:
        names = {c.name for c in worker_options(bridge_settings)["cron_jobs"]}
        assert "catch_up" in names

    async def test_looks_back_from_the_runtime_clock(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        fake_stripe.event_log = timeline()
        fake_stripe.subscriptions[sb.SUB] = sb.CUSTOMER
        rt = Runtime.build(bridge.settings, engine=bridge.engine)
        at = datetime.fromtimestamp(sb.obj(sb.subscription())["created"], UTC) + timedelta(hours=2)
        rt.clock = lambda: at
        try:
            await catch_up_job({"runtime": rt})
        finally:
            await rt.close()
        since = at - timedelta(hours=24)
        assert dict(fake_stripe.event_queries[0])["created[gte]"] == str(int(since.timestamp()))
        assert len(bridge.events()) == 4
        await bridge.drain()  # nothing was queued (no Redis handle): the relay finds them
        bridge.assert_all_done()


class TestCommand:
    def test_prints_what_it_recorded(
        self, bridge: Pipeline, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fake_stripe.event_log = timeline()
        settings = bridge.settings
        for name, value in {
            "BRIDGE_DATABASE_URL": settings.database_url,
            "BRIDGE_REDIS_URL": settings.redis_url,
            "BRIDGE_CONFIG": str(settings.config_path),
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": fake_stripe.url,
        }.items():
            monkeypatch.setenv(name, value)
        since = SINCE.strftime("%Y-%m-%dT%H:%M:%S")
        out = CliRunner().invoke(command, ["--since", since])
        assert out.exit_code == 0, out.output
        assert "4 recorded" in out.output and "0 already stored" in out.output
        for event in timeline():
            assert f"recorded {event['id']}" in out.output
        again = CliRunner().invoke(command, ["--since", since, "--json"])
        assert '"duplicates": 4' in again.output and '"recorded": 0' in again.output
        both = CliRunner().invoke(command, ["--since", since, "--hours", "3"])
        assert both.exit_code != 0 and "not both" in both.output
