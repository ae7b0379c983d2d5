"""Aggregates to sinks: RecordUsage in the sandbox, meter events in a fake Stripe."""

from __future__ import annotations

import asyncio

from bridge.core.intents import Effect
from bridge.core.models import utcnow
from bridge.usage import ledger
from jobs.effects.meter import identifier
from tests.fixtures.fake_stripe import FakeStripe
from tests.fixtures.runs import attempts, due_now, intent, later, runtime, step
from tests.fixtures.usage import (
    CRYPTOLENS_PRODUCT,
    METER_PRODUCT,
    T0,
    UsageBridge,
    add_license,
    record,
    recorded_usage,
    sandbox_key,
)

SUB, CUSTOMER, METER_KEY = "sub_usage_1", "cus_usage_1", "METER-KEY-0001"


def meter_customer(bridge: UsageBridge, fake: FakeStripe) -> None:
    add_license(bridge.engine, f"stripe:sub:{SUB}", METER_PRODUCT, METER_KEY)
    fake.subscriptions[SUB] = CUSTOMER


class TestCryptolensSink:
    async def test_n_records_in_a_window_become_one_record_usage_call(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        await usage_bridge.usage([record(n, key=key, quantity=n) for n in range(1, 51)])
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert recorded_usage(usage_bridge.sandbox) == {key: 1275}
        assert usage_bridge.sandbox.state()["calls"]["subscription/RecordUsage"]["received"] == 1
        assert usage_bridge.ledger_total() == 1275

    async def test_a_key_without_a_subscription_item_is_a_configuration_error_not_retried(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox, linked=False)
        await usage_bridge.usage(record(1, key=key, quantity=3))
        await usage_bridge.drain()
        [failed] = usage_bridge.usage_intents().values()
        assert failed.status == "failed"
        assert failed.last_error is not None
        assert "configuration:" in failed.last_error
        assert "subscription item" in failed.last_error
        assert usage_bridge.sandbox.state()["calls"]["subscription/RecordUsage"]["received"] == 1

    async def test_a_lost_reply_lands_in_needs_review_with_the_aggregate_shown(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        usage_bridge.sandbox.set_faults(
            script=[{"method": "subscription/RecordUsage", "fault": "lost_reply"}]
        )
        await usage_bridge.usage([record(1, key=key, quantity=4), record(2, key=key, quantity=3)])
        await usage_bridge.drain()
        [review] = usage_bridge.usage_intents().values()
        assert review.status == "needs_review"
        assert review.last_error is not None
        assert "7 unit(s) from 2 record(s)" in review.last_error
        # Applied once by the lost call, and never sent again.
        assert recorded_usage(usage_bridge.sandbox) == {key: 7}
        assert usage_bridge.sandbox.state()["calls"]["subscription/RecordUsage"]["received"] == 1

    async def test_two_aggregates_of_one_key_racing_are_both_billed_once(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        await usage_bridge.usage(record(1, key=key, quantity=2))
        usage_bridge.clock.at = T0 + 60
        await usage_bridge.usage(record(2, key=key, quantity=5))
        ids = sorted(usage_bridge.usage_intents())
        assert len(ids) == 2
        async with (
            runtime(usage_bridge.settings, usage_bridge.engine) as one,
            runtime(usage_bridge.settings, usage_bridge.engine) as two,
        ):

            async def until_done(rt: object, intent_id: str) -> str:
                for _ in range(200):
                    status = await step(rt, intent_id)  # type: ignore[arg-type]
                    if status != "retry":
                        return status
                    due_now(usage_bridge.engine, intent_id)
                    await asyncio.sleep(0.005)
                raise AssertionError("still retrying")

            statuses = await asyncio.gather(until_done(one, ids[0]), until_done(two, ids[1]))
        assert list(statuses) == ["done", "done"]
        assert recorded_usage(usage_bridge.sandbox) == {key: 7}


class TestWindows:
    async def test_a_record_arriving_after_its_window_was_sealed_joins_the_next(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        await usage_bridge.usage(record(1, key=key, quantity=2))
        first = ledger.aggregate_id(CRYPTOLENS_PRODUCT, key, "", T0)
        sealed = ledger.seal(usage_bridge.engine, first, utcnow())
        assert sealed is not None and sealed.quantity == 2
        # Still inside the first window by the web's clock, but that aggregate is sealed.
        usage_bridge.clock.at = T0 + 30
        body = (await usage_bridge.usage(record(2, key=key, quantity=5))).json()
        assert body["results"][0]["aggregate"] == ledger.aggregate_id(
            CRYPTOLENS_PRODUCT, key, "", T0 + 60
        )
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert recorded_usage(usage_bridge.sandbox) == {key: 7}
        assert [(a.quantity, a.records) for a in usage_bridge.aggregates()] == [(2, 1), (5, 1)]


class TestStripeMeterSink:
    async def test_meter_events_carry_the_aggregate_identifier_and_the_customer(
        self, usage_bridge: UsageBridge, fake_stripe: FakeStripe
    ) -> None:
        meter_customer(usage_bridge, fake_stripe)
        await usage_bridge.usage(
            [record(n, key=METER_KEY, product_id=METER_PRODUCT, quantity=n) for n in range(1, 11)]
            + [record(99, key=METER_KEY, product_id=METER_PRODUCT, quantity=4, meter="storage")]
        )
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert fake_stripe.totals() == {("api_calls", CUSTOMER): 55, ("storage_gb", CUSTOMER): 4}
        assert set(fake_stripe.events) == {
            f"usage:1002:{METER_KEY}:-:{T0}",
            f"usage:1002:{METER_KEY}:storage:{T0}",
        }
        assert fake_stripe.total() == usage_bridge.ledger_total(METER_PRODUCT)
        assert fake_stripe.events[f"usage:1002:{METER_KEY}:-:{T0}"]["timestamp"] == T0

    async def test_a_lost_reply_is_sent_again_and_stripe_dedupes_it(
        self, usage_bridge: UsageBridge, fake_stripe: FakeStripe
    ) -> None:
        for reply in ("error", "accept"):
            fake_stripe.duplicate_reply = reply
            fake_stripe.script = ["lost_reply"]
            meter_key = f"{METER_KEY}-{reply}"
            add_license(usage_bridge.engine, f"stripe:sub:{SUB}-{reply}", METER_PRODUCT, meter_key)
            fake_stripe.subscriptions[f"{SUB}-{reply}"] = CUSTOMER
            await usage_bridge.usage(
                record(1, key=meter_key, product_id=METER_PRODUCT, quantity=6, prefix=reply)
            )
            await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert fake_stripe.received == 4  # two sends of each aggregate...
        assert fake_stripe.total() == 12  # ...each counted once
        for intent_ in usage_bridge.usage_intents().values():
            outcomes = [o for _, o in attempts(usage_bridge.engine, intent_.id)]
            assert outcomes == ["resent", "applied"]

    async def test_an_unknown_outcome_older_than_the_dedupe_window_goes_to_a_person(
        self, usage_bridge: UsageBridge, fake_stripe: FakeStripe
    ) -> None:
        meter_customer(usage_bridge, fake_stripe)
        fake_stripe.script = ["lost_reply"]
        await usage_bridge.usage(record(1, key=METER_KEY, product_id=METER_PRODUCT, quantity=6))
        [intent_id] = usage_bridge.usage_intents()
        async with runtime(usage_bridge.settings, usage_bridge.engine) as rt:
            assert await step(rt, intent_id) == "retry"
            due_now(usage_bridge.engine, intent_id)
            rt.clock = later(24 * 3600)
            assert await step(rt, intent_id) == "needs_review"
        review = intent(usage_bridge.engine, intent_id)
        assert review.last_error is not None and identifier(intent_id) in review.last_error
        assert fake_stripe.received == 1

    async def test_a_key_with_no_known_subscription_is_a_configuration_error(
        self, usage_bridge: UsageBridge, fake_stripe: FakeStripe
    ) -> None:
        await usage_bridge.usage(record(1, key="NO-SUB-KEY", product_id=METER_PRODUCT))
        await usage_bridge.drain()
        [failed] = usage_bridge.usage_intents().values()
        assert failed.status == "failed"
        assert failed.last_error is not None and "subscription" in failed.last_error
        assert fake_stripe.received == 0

    def test_identifiers_fit_stripe_s_limit(self) -> None:
        long_id = "usage:1:" + "K" * 120 + ":-:60"
        assert len(identifier(long_id)) <= 100
        assert identifier(long_id) == identifier(long_id)
        assert identifier("usage:1:K:-:60") == "usage:1:K:-:60"
        assert Effect.REPORT_USAGE.value == "report_usage"
