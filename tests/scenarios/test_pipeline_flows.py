"""Each Stripe flow end to end: signed webhook in, exactly the expected effects in the sandbox."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from bridge.core.intents import notes_tag
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import Pipeline, now, shifted
from tests.fixtures.servers import run_asgi
from tests.stripe import test_api as fake_stripe_api

DAY = 86400


class TestOneOffPurchase:
    async def test_checkout_creates_key_links_customer_registers_purchase(
        self, bridge: Pipeline
    ) -> None:
        response = await bridge.post(sb.load("checkout.session.completed.payment"))
        assert response.status_code == 200, response.text
        await bridge.drain()

        intents = bridge.intents()
        intent_id = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
        assert intent_id in intents
        assert {i.status for i in intents.values()} == {"done"}, {
            i.id: (i.status, i.last_error) for i in intents.values()
        }
        state = bridge.sandbox.state()
        assert state["counts"]["keys_created"] == 1
        assert state["counts"]["events"] == 1
        key = state["keys"][0]
        customer = next(c for c in state["customers"] if c["id"] == key["customer_id"])
        assert customer["email"] == "example@example.com"
        assert notes_tag(intent_id) in key["notes"]
        event = state["events"][0]
        assert (event["product_id"], event["key"]) == (key["product_id"], key["key"])
        assert event["event_name"] == "purchase"
        assert event["value"] == 1099
        assert event["currency"] == "USD"
        metadata = json.loads(event["metadata"])
        assert metadata["payment_intent"] == sb.ONE_OFF_PI
        assert "example@example.com" not in event["metadata"]


class TestSubscriptionLifecycle:
    async def test_start_renew_cancel_at_period_end_then_deleted(self, bridge: Pipeline) -> None:
        delta = now() - sb.T0
        for name in (
            "checkout.session.completed.subscription",
            "customer.subscription.created",
            "invoice.paid.subscription_cycle",
            "customer.subscription.updated.renewal",
        ):
            response = await bridge.post(shifted(sb.load(name), delta))
            assert response.status_code == 200
        await bridge.drain()
        bridge.assert_all_done()
        key = bridge.only_key()
        assert key["block"] is False
        expected = sb.T2 + delta + 3 * DAY
        assert expected <= key["expires"] < expected + DAY

        before = bridge.counts()
        await bridge.post(
            shifted(sb.load("customer.subscription.updated.cancel_at_period_end"), delta)
        )
        await bridge.drain()
        assert bridge.counts()["calls_received"] == before["calls_received"]  # nothing to do

        await bridge.post(shifted(sb.load("customer.subscription.deleted"), delta))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["block"] is True
        assert bridge.counts()["blocks"] == 1
        events = [e["event_name"] for e in bridge.sandbox.state()["events"]]
        assert events == ["renewal"]  # the start's purchase comes with its first invoice

    async def test_unpaid_blocks_and_active_again_unblocks(self, bridge: Pipeline) -> None:
        delta = now() - sb.T0
        await bridge.post(shifted(sb.load("customer.subscription.created"), delta))
        unpaid = sb.status_change(
            status="unpaid",
            previous="past_due",
            created=sb.T1 + 10,
            event_id="evt_flow_unpaid",
        )
        await bridge.post(shifted(unpaid, delta))
        await bridge.drain()
        assert bridge.only_key()["block"] is True

        active = sb.status_change(
            status="active",
            previous="unpaid",
            created=sb.T1 + 20,
            event_id="evt_flow_active",
        )
        await bridge.post(shifted(active, delta))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["block"] is False
        counts = bridge.counts()
        assert (counts["blocks"], counts["unblocks"]) == (1, 1)

    async def test_first_invoice_registers_the_purchase(self, bridge: Pipeline) -> None:
        delta = now() - sb.T0
        await bridge.post(shifted(sb.invoice(billing_reason="subscription_create"), delta))
        await bridge.drain()
        bridge.assert_all_done()
        [event] = bridge.sandbox.state()["events"]
        assert (event["event_name"], event["value"], event["currency"]) == ("purchase", 2000, "USD")

    async def test_basil_shaped_renewal_extends(self, bridge: Pipeline) -> None:
        delta = now() - sb.T0
        await bridge.post(shifted(sb.subscription(basil=True), delta))
        await bridge.post(shifted(sb.invoice(basil=True, with_payments=True), delta))
        await bridge.drain()
        bridge.assert_all_done()
        expected = sb.T2 + delta + 3 * DAY
        assert expected <= bridge.only_key()["expires"] < expected + DAY


class TestRefundAndDispute:
    async def test_full_refund_blocks_and_registers_refund(self, bridge: Pipeline) -> None:
        purchase = sb.checkout_session(payment_intent="pi_11111")
        await bridge.post(purchase)
        await bridge.post(sb.charge_refunded())
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["block"] is True
        events = sorted((e["event_name"], e["currency"]) for e in bridge.sandbox.state()["events"])
        assert events == [("purchase", "USD"), ("refund", "MXN")]

    async def test_partial_refund_changes_nothing(self, bridge: Pipeline) -> None:
        await bridge.post(sb.checkout_session(payment_intent="pi_11111"))
        await bridge.drain()
        before = bridge.counts()
        refund = sb.charge_refunded(amount_refunded=1)
        await bridge.post(refund)
        await bridge.drain()
        assert bridge.counts()["blocks"] == before["blocks"] == 0
        assert bridge.counts()["events"] == before["events"]

    async def test_dispute_blocks_the_one_off_key(self, bridge: Pipeline) -> None:
        await bridge.post(sb.checkout_session(payment_intent="pi_disputed"))
        await bridge.post(sb.dispute(payment_intent="pi_disputed"))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["block"] is True

    async def test_dispute_on_a_subscription_payment_blocks_its_key(self, bridge: Pipeline) -> None:
        delta = now() - sb.T0
        await bridge.post(shifted(sb.load("customer.subscription.created"), delta))
        await bridge.post(shifted(sb.load("invoice.paid.subscription_cycle"), delta))
        await bridge.post(sb.dispute(payment_intent=sb.RENEW_PI))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["block"] is True
        # A later "active again" must not lift a dispute block.
        active = sb.status_change(
            status="active",
            previous="unpaid",
            created=now() + 60,
            event_id="evt_flow_active_after_dispute",
        )
        await bridge.post(active)
        await bridge.drain()
        assert bridge.only_key()["block"] is True


class TestTemplates:
    async def test_metadata_template_wins(self, bridge: Pipeline) -> None:
        await bridge.post(sb.checkout_session(metadata={"cryptolens_template_id": "2"}))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["period"] == 365  # template 2 (Yearly)

    async def test_line_items_fetched_from_stripe_when_the_payload_names_no_template(
        self, bridge: Pipeline, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(
            fake_stripe_api.SESSIONS,
            "cs_pipeline",
            [fake_stripe_api.line_item(7, price_metadata={"cryptolens_template_id": "3"})],
        )
        event = sb.checkout_session()
        sb.obj(event)["id"] = "cs_pipeline"
        with run_asgi(fake_stripe_api.fake_stripe()) as stripe_url:
            bridge.settings = bridge.settings.model_copy(
                update={
                    "stripe_api_key": SecretStr(fake_stripe_api.API_KEY),
                    "stripe_api_base": stripe_url,
                }
            )
            await bridge.post(event)
            await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["period"] == 0  # template 3 (Perpetual)

    async def test_default_template_without_stripe_api_key(self, bridge: Pipeline) -> None:
        await bridge.post(sb.checkout_session())
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["period"] == 30  # template 1 (Monthly)
