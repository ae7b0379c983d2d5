"""Each Stripe flow end to end: signed webhook in, exactly the expected effects in the sandbox."""

from __future__ import annotations

import json

from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import Pipeline


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
        assert f"[cryptolens-bridge {intent_id}]" in key["notes"]
        event = state["events"][0]
        assert (event["product_id"], event["key"]) == (key["product_id"], key["key"])
        assert event["event_name"] == "purchase"
        assert event["value"] == 1099
        assert event["currency"] == "USD"
        metadata = json.loads(event["metadata"])
        assert metadata["payment_intent"] == sb.ONE_OFF_PI
        assert "example@example.com" not in event["metadata"]
