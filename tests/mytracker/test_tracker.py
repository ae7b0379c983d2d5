"""The myTracker sink: planned beside the events only when configured, sent in batches to
a local myTracker over HTTP (tests/fixtures/mytracker.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from bridge.core.intents import Effect, IntentSpec, Plan
from bridge.core.settings import Settings
from bridge.crm.deals import DealEvent, Kind
from bridge.crm.deals import plan as plan_deal
from bridge.mytracker import api
from bridge.mytracker.config import TrackerConfig
from bridge.stripe.config import StripeConfig
from bridge.stripe.plan import plan
from tests.fixtures.mytracker import APP_ID, KEY, FakeTracker
from tests.fixtures.pipeline import CONFIG, make_settings
from tests.fixtures.runs import add_intent, attempts, finish, intent, runtime, step
from tests.fixtures.servers import SandboxServer
from tests.fixtures.stripe_builders import (
    CUSTOMER,
    ONE_OFF_PI,
    RENEW_INVOICE,
    SESSION,
    charge_refunded,
    checkout_session,
    invoice,
)

ON = TrackerConfig(app_id=APP_ID)
STRIPE = StripeConfig(default_template_id=1)


def tracked(p: Plan) -> list[IntentSpec]:
    return [i for i in p.intents if i.effect in (Effect.TRACK_REVENUE, Effect.TRACK_EVENT)]


def won_deal(**overrides: Any) -> DealEvent:
    values: dict[str, Any] = {
        "source": "crm:acme",
        "deal_id": "D-7",
        "kind": Kind.WON,
        "occurred_at_ms": 1_700_000_000_123,
        "lost_policy": "none",
        "amount": Decimal("25.30"),
        "currency": "eur",
    }
    values.update(overrides)
    return DealEvent(**values)


class TestPlan:
    def test_nothing_is_planned_for_mytracker_unless_it_is_configured(self) -> None:
        for event in (checkout_session(), invoice(), charge_refunded()):
            assert tracked(plan(event, STRIPE)) == []
        assert tracked(plan_deal(won_deal())) == []

    def test_a_guest_purchase_is_revenue_of_its_session(self) -> None:
        [item] = tracked(plan(checkout_session(), STRIPE, ON))
        assert item.effect is Effect.TRACK_REVENUE
        assert item.params["item"] == {
            "customUserId": SESSION,  # no Stripe customer: a guest checkout
            "idTransaction": SESSION,
            "total": "10.99",
            "currency": "USD",
            "eventTimestamp": item.occurred_at,
        }

    def test_a_renewal_is_revenue_of_its_invoice_and_customer(self) -> None:
        [item] = tracked(plan(invoice(), STRIPE, ON))
        assert item.params["item"]["idTransaction"] == RENEW_INVOICE
        assert item.params["item"]["customUserId"] == CUSTOMER
        assert item.params["item"]["total"] == "20.00"
        # invoice.paid and invoice.payment_succeeded plan one intent.
        [same] = tracked(plan(invoice(event_type="invoice.payment_succeeded"), STRIPE, ON))
        assert same.id == item.id

    def test_zero_decimal_and_three_decimal_totals_are_in_major_units(self) -> None:
        [yen] = tracked(plan(invoice(amount_paid=1000, currency="jpy"), STRIPE, ON))
        [kwd] = tracked(plan(invoice(amount_paid=5130, currency="kwd"), STRIPE, ON))
        assert (yen.params["item"]["total"], kwd.params["item"]["total"]) == ("1000", "5.130")
        assert tracked(plan(invoice(amount_paid=0), STRIPE, ON)) == []

    def test_a_refund_and_a_won_deal_are_custom_events_with_ids_only(self) -> None:
        [refund] = tracked(plan(charge_refunded(), STRIPE, ON))
        assert refund.effect is Effect.TRACK_EVENT
        assert refund.params["item"]["customEventName"] == "refund"
        assert refund.params["item"]["customEventParams"] == {
            "charge": "ch_11111",
            "payment_intent": "pi_11111",
            "amount": "345.00",
            "currency": "MXN",
        }
        [won] = tracked(plan_deal(won_deal(), ON))
        assert won.params["item"]["customEventName"] == "deal_won"
        assert won.params["item"]["eventTimestamp"] == 1_700_000_000
        assert won.params["item"]["customEventParams"]["amount"] == "25.30"

    def test_no_email_or_name_ever_reaches_an_item(self) -> None:
        from bridge.core.providers import Buyer

        buyer = Buyer(email="ada@example.com", name="Ada Lovelace", company="ACME")
        plans = [
            plan(checkout_session(customer_name="Ada Lovelace"), STRIPE, ON),
            plan(invoice(customer_email="ada@example.com"), STRIPE, ON),
            plan_deal(won_deal(buyer=buyer), ON),
        ]
        for p in plans:
            text = json.dumps([i.params["item"] for i in tracked(p)])
            assert "@" not in text and "Ada" not in text and "ACME" not in text


class TestApi:
    async def test_a_batch_within_limits_is_imported(self, fake_tracker: FakeTracker) -> None:
        items = [revenue_item(f"in_{n}") for n in range(20)]
        async with client_for(fake_tracker.url) as client:
            await api.send(client, APP_ID, api.Kind.REVENUE, items)
        assert len(fake_tracker.revenues) == 20
        assert not api.fits([*items, revenue_item("in_21")])

    async def test_403_is_a_configuration_error_without_the_key(
        self, fake_tracker: FakeTracker
    ) -> None:
        async with client_for(fake_tracker.url, key="wrong-key-0000") as client:
            with pytest.raises(api.TrackerConfigError) as raised:
                await api.send(client, APP_ID, api.Kind.REVENUE, [revenue_item("in_1")])
        assert "403 Forbidden" in str(raised.value) and "wrong-key" not in str(raised.value)

    async def test_a_bad_item_fails_its_batch_with_the_reason(
        self, fake_tracker: FakeTracker
    ) -> None:
        items = [revenue_item("in_1"), {**revenue_item("in_2"), "currency": "DOLLARS"}]
        async with client_for(fake_tracker.url) as client:
            with pytest.raises(api.TrackerRefused, match="400 Bad Request"):
                await api.send(client, APP_ID, api.Kind.REVENUE, items)
        assert fake_tracker.revenues == {}

    async def test_a_5xx_is_an_unknown_outcome(self, fake_tracker: FakeTracker) -> None:
        fake_tracker.script = ["fail"]
        async with client_for(fake_tracker.url) as client:
            with pytest.raises(api.TrackerUnknown):
                await api.send(client, APP_ID, api.Kind.EVENT, [event_item()])


def revenue_item(transaction: str) -> dict[str, Any]:
    return {
        "customUserId": "cus_1",
        "idTransaction": transaction,
        "total": "9.99",
        "currency": "USD",
        "eventTimestamp": 1_700_000_000,
    }


def event_item() -> dict[str, Any]:
    return {"customUserId": "cus_1", "customEventName": "refund", "eventTimestamp": 1}


def client_for(url: str, key: str = KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": key})


# --- the sink, through the worker ------------------------------------------------------


@pytest.fixture
def tracker_settings(
    database_url: str,
    redis_url: str,
    sandbox_server: SandboxServer,
    fake_tracker: FakeTracker,
    tmp_path: Path,
) -> Settings:
    config = tmp_path / "bridge.toml"
    config.write_text(CONFIG + f"\n[mytracker]\napp_id = {APP_ID}\n")
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        sandbox_url=sandbox_server.url,
        config_path=config,
        MYTRACKER_API_KEY=KEY,
        MYTRACKER_API_URL=fake_tracker.url,
    )


def store(engine: Engine, p: Plan, *, effects: tuple[Effect, ...] = ()) -> list[str]:
    """The plan's intents as the webhook stores them (those of ``effects`` too); the
    ids of its myTracker ones."""
    ids = []
    for spec in p.intents:
        mine = spec.effect in (Effect.TRACK_REVENUE, Effect.TRACK_EVENT)
        if mine or spec.effect in effects:
            add_intent(
                engine, spec.id, spec.effect.value, spec.license_ref, spec.params, spec.occurred_at
            )
        if mine:
            ids.append(spec.id)
    return ids


class TestSink:
    async def test_a_purchase_a_renewal_and_a_refund(
        self, tracker_settings: Settings, engine: Engine, fake_tracker: FakeTracker
    ) -> None:
        """A guest's purchase, a renewal and the guest's refund: the two revenues go in
        one batch, and the refund names the session that bought the key (no key needed:
        nothing waits for one)."""
        [purchase] = store(
            engine, plan(checkout_session(), STRIPE, ON), effects=(Effect.CREATE_KEY,)
        )
        [renewal] = store(engine, plan(invoice(), STRIPE, ON))
        [refund] = store(engine, plan(charge_refunded(payment_intent=ONE_OFF_PI), STRIPE, ON))
        async with runtime(tracker_settings, engine) as rt:
            assert await step(rt, purchase) == "done"
            assert await step(rt, renewal) == "intent is done"  # sent with the purchase
            assert await step(rt, refund) == "done"
        assert fake_tracker.calls == [("customRevenueBatch", 2), ("customEventBatch", 1)]
        assert set(fake_tracker.revenues) == {SESSION, RENEW_INVOICE}
        assert fake_tracker.revenues[SESSION]["total"] == 10.99
        assert fake_tracker.revenues[RENEW_INVOICE]["customUserId"] == CUSTOMER
        [event] = fake_tracker.events
        assert event["customUserId"] == SESSION
        assert event["customEventName"] == "refund"
        for i in (purchase, renewal, refund):
            assert intent(engine, i).status == "done"

    async def test_a_revenue_resent_after_a_lost_reply_is_deduped(
        self, tracker_settings: Settings, engine: Engine, fake_tracker: FakeTracker
    ) -> None:
        [renewal] = store(engine, plan(invoice(), STRIPE, ON))
        fake_tracker.script = ["lost_reply"]
        async with runtime(tracker_settings, engine) as rt:
            assert await finish(rt, renewal) == {renewal: "done"}
        assert fake_tracker.calls == [("customRevenueBatch", 1)] * 2
        assert list(fake_tracker.revenues) == [RENEW_INVOICE]
        method = "mytracker/customRevenueBatch"
        assert attempts(engine, renewal) == [(method, "resent"), (method, "applied")]

    async def test_a_lost_custom_event_reply_goes_to_a_person(
        self, tracker_settings: Settings, engine: Engine, fake_tracker: FakeTracker
    ) -> None:
        [refund] = store(engine, plan(charge_refunded(), STRIPE, ON))
        fake_tracker.script = ["lost_reply"]
        async with runtime(tracker_settings, engine) as rt:
            assert await finish(rt, refund) == {refund: "needs_review"}
        assert len(fake_tracker.events) == 1 and len(fake_tracker.calls) == 1
        assert "not sent again" in (intent(engine, refund).last_error or "")
        assert attempts(engine, refund) == [("mytracker/customEventBatch", "unknown")]

    async def test_a_bad_item_fails_alone_with_the_reason(
        self, tracker_settings: Settings, engine: Engine, fake_tracker: FakeTracker
    ) -> None:
        """myTracker refuses the whole batch for one bad item: each is then sent alone,
        the good one is imported and only the bad one fails."""
        [good] = store(engine, plan(invoice(), STRIPE, ON))
        bad_plan = plan(checkout_session(), STRIPE, ON)
        [spec] = tracked(bad_plan)
        item = {**spec.params["item"], "currency": "DOLLARS"}  # not ISO 4217
        bad = add_intent(engine, spec.id, spec.effect.value, spec.license_ref, {"item": item}, 1)
        async with runtime(tracker_settings, engine) as rt:
            # One run at a time: the good one's run takes the bad one along (a run racing
            # it on PostgreSQL would keep it, SKIP LOCKED, and there would be no batch).
            await finish(rt, good)
            if intent(engine, bad).status not in ("done", "failed"):
                await finish(rt, bad)
        assert intent(engine, bad).status == "failed"
        assert intent(engine, good).status == "done"
        assert "400 Bad Request" in (intent(engine, bad).last_error or "")
        assert list(fake_tracker.revenues) == [RENEW_INVOICE]
        assert fake_tracker.calls[0] == ("customRevenueBatch", 2)
        assert sorted(fake_tracker.calls[1:]) == [("customRevenueBatch", 1)] * 2

    async def test_403_surfaces_as_a_configuration_error(
        self,
        database_url: str,
        redis_url: str,
        sandbox_server: SandboxServer,
        fake_tracker: FakeTracker,
        tmp_path: Path,
        engine: Engine,
    ) -> None:
        config = tmp_path / "bridge.toml"
        config.write_text(CONFIG + f"\n[mytracker]\napp_id = {APP_ID}\n")
        settings = make_settings(
            database_url=database_url,
            redis_url=redis_url,
            sandbox_url=sandbox_server.url,
            config_path=config,
            MYTRACKER_API_KEY="revoked-key-1234",
            MYTRACKER_API_URL=fake_tracker.url,
        )
        [renewal] = store(engine, plan(invoice(), STRIPE, ON))
        async with runtime(settings, engine) as rt:
            assert await step(rt, renewal) == "failed"
        error = intent(engine, renewal).last_error or ""
        assert error.startswith("configuration:") and "MYTRACKER_API_KEY" in error
        assert "revoked-key" not in error
        assert fake_tracker.revenues == {}

    async def test_a_won_deal_without_a_crm_contact_is_its_deal(
        self, tracker_settings: Settings, engine: Engine, fake_tracker: FakeTracker
    ) -> None:
        [won] = store(engine, plan_deal(won_deal(), ON))
        async with runtime(tracker_settings, engine) as rt:
            assert await step(rt, won) == "done"
        [event] = fake_tracker.events
        assert event["customUserId"] == "crm:acme:deal:D-7"
        assert event["customEventParams"] == {
            "source": "crm:acme",
            "deal": "D-7",
            "amount": "25.30",
            "currency": "EUR",
        }


class TestRaces:
    async def test_items_racing_on_two_workers_are_each_imported_once(
        self, tracker_settings: Settings, engine: Engine, fake_tracker: FakeTracker
    ) -> None:
        """Custom events are not deduped by myTracker: a second send would show here."""
        import asyncio

        refunds = [
            spec
            for n in range(4)
            for spec in tracked(plan(charge_refunded(payment_intent=f"pi_race{n}"), STRIPE, ON))
        ]
        ids = []
        for n, spec in enumerate(refunds):
            item = {**spec.params["item"], "customUserId": f"cus_{n}"}
            ids.append(
                add_intent(
                    engine, f"{spec.id}:{n}", spec.effect.value, spec.license_ref, {"item": item}, 1
                )
            )
        async with (
            runtime(tracker_settings, engine) as one,
            runtime(tracker_settings, engine) as two,
        ):
            await asyncio.gather(finish(one, *ids[:2]), finish(two, *ids[2:]))
        assert {intent(engine, i).status for i in ids} == {"done"}
        assert sorted(e["customUserId"] for e in fake_tracker.events) == [
            f"cus_{n}" for n in range(4)
        ]
        assert sum(n for _, n in fake_tracker.calls) == 4
