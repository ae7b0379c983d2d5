"""The promise: every payment change becomes exactly one effect in Cryptolens.

Duplicates, reordering and lost replies, against the sandbox over HTTP, on SQLite and
PostgreSQL. (Worker crashes and Redis outages: test_resilience.py.)
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import Pipeline, now, shifted

DAY = 86400


def timeline() -> int:
    """Shift the fixtures' subscription timeline so that T0 (its start) is now."""
    return now() - sb.T0


def one_off(n: int) -> dict[str, Any]:
    """A paid one-off checkout with its own session, payment intent and event id."""
    event = sb.checkout_session(payment_intent=f"pi_test_{n:04d}", amount_total=1000 + n)
    event["id"] = f"evt_test_oneoff_{n:04d}"
    sb.obj(event)["id"] = f"cs_test_{n:04d}"
    sb.obj(event)["customer_details"]["email"] = f"buyer{n % 3}@example.com"
    return event


class TestDuplicates:
    async def test_same_event_three_times_concurrently_is_one_effect(
        self, bridge: Pipeline
    ) -> None:
        event = sb.load("checkout.session.completed.payment")
        responses = await asyncio.gather(*(bridge.post(event) for _ in range(3)))
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert sorted(r.json()["duplicate"] for r in responses) == [False, True, True]
        await bridge.drain()
        bridge.assert_all_done()
        counts = bridge.counts()
        assert (counts["keys_created"], counts["events"], counts["customers"]) == (1, 1, 1)
        assert len(bridge.events()) == 1

    async def test_redelivery_after_processing_changes_nothing(self, bridge: Pipeline) -> None:
        event = sb.load("checkout.session.completed.payment")
        await bridge.post(event)
        await bridge.drain()
        before = bridge.counts()
        again = await bridge.post(event)
        assert again.json() == {"received": True, "duplicate": True, "intents": 0}
        await bridge.drain()
        assert bridge.counts() == {**before, "calls_received": before["calls_received"]}

    async def test_both_events_of_one_paid_invoice_extend_once(self, bridge: Pipeline) -> None:
        delta = timeline()
        await bridge.post(shifted(sb.load("customer.subscription.created"), delta))
        await bridge.drain()
        extensions_at_start = bridge.counts()["extensions"]

        paid = shifted(sb.load("invoice.paid.subscription_cycle"), delta)
        succeeded = shifted(sb.load("invoice.payment_succeeded.subscription_cycle"), delta)
        await asyncio.gather(bridge.post(paid), bridge.post(succeeded))
        await bridge.drain()

        bridge.assert_all_done()
        counts = bridge.counts()
        assert counts["extensions"] == extensions_at_start + 1
        assert counts["events"] == 1  # one renewal event, not two
        target = sb.T2 + delta + 3 * DAY
        assert target <= bridge.expires_of(f"stripe:sub:{sb.SUB}") < target + DAY

    async def test_the_three_subscription_start_events_make_one_key(self, bridge: Pipeline) -> None:
        delta = timeline()
        first_invoice = sb.invoice(billing_reason="subscription_create")
        first_invoice["id"] = "evt_test_first_invoice"
        events = [
            shifted(sb.load("checkout.session.completed.subscription"), delta),
            shifted(sb.load("customer.subscription.created"), delta),
            shifted(first_invoice, delta),
        ]
        await asyncio.gather(*(bridge.post(e) for e in events))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.counts()["keys_created"] == 1


class TestReordering:
    async def test_renewal_before_the_key_exists_converges(self, bridge: Pipeline) -> None:
        delta = timeline()
        await bridge.post(shifted(sb.load("invoice.paid.subscription_cycle"), delta))
        await bridge.drain()
        assert {i.status for i in bridge.intents().values()} == {"waiting"}
        assert bridge.counts()["calls_received"] == 0

        await bridge.post(shifted(sb.load("customer.subscription.created"), delta))
        await bridge.drain()
        bridge.assert_all_done()
        target = sb.T2 + delta + 3 * DAY
        assert target <= bridge.expires_of(f"stripe:sub:{sb.SUB}") < target + DAY
        assert bridge.counts()["keys_created"] == 1

    async def test_renewal_before_the_checkout_converges(self, bridge: Pipeline) -> None:
        delta = timeline()
        await bridge.post(shifted(sb.load("invoice.paid.subscription_cycle"), delta))
        await bridge.drain()
        await bridge.post(shifted(sb.load("checkout.session.completed.subscription"), delta))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.counts()["keys_created"] == 1
        target = sb.T2 + delta + 3 * DAY
        assert target <= bridge.expires_of(f"stripe:sub:{sb.SUB}") < target + DAY

    async def test_an_older_renewal_after_a_newer_one_does_not_extend(
        self, bridge: Pipeline
    ) -> None:
        delta = timeline()
        await bridge.post(shifted(sb.load("customer.subscription.created"), delta))
        await bridge.post(shifted(sb.load("invoice.paid.subscription_cycle"), delta))
        await bridge.drain()
        extensions = bridge.counts()["extensions"]
        expires = bridge.expires_of(f"stripe:sub:{sb.SUB}")
        # The subscription.created target (the first period end) arrives again, late:
        late = shifted(sb.load("customer.subscription.created"), delta)
        late["id"] = "evt_test_late_redelivery_of_created"
        await bridge.post(late)
        await bridge.drain()
        assert bridge.counts()["extensions"] == extensions
        assert bridge.expires_of(f"stripe:sub:{sb.SUB}") == expires

    async def test_unpaid_then_active_in_any_order_ends_unblocked(self, bridge: Pipeline) -> None:
        delta = timeline()
        await bridge.post(shifted(sb.load("customer.subscription.created"), delta))
        await bridge.drain()
        unpaid = sb.status_change(
            status="unpaid",
            previous="past_due",
            created=sb.T1 + 10,
            event_id="evt_test_unpaid",
        )
        active = sb.status_change(
            status="active",
            previous="unpaid",
            created=sb.T1 + 20,
            event_id="evt_test_active_again",
        )
        # The newer "active again" arrives first; the older "unpaid" must not block after it.
        await bridge.post(shifted(active, delta))
        await bridge.drain()
        await bridge.post(shifted(unpaid, delta))
        await bridge.drain()
        bridge.assert_all_done()
        key = bridge.sandbox.state()["keys"][0]
        assert key["block"] is False
        assert bridge.counts()["blocks"] == 0


class TestLostRepliesFromTemplate:
    """CreateKeyFromTemplate mode: the creation, its tag and its link are separate calls."""

    @pytest.fixture
    def bridge_config(self) -> str:
        return (
            "[stripe]\ndefault_template_id = 1\n\n[cryptolens]\n"
            "create_from_template = [1001]\nsole_key_maker = [1001]\n"
        )

    async def test_lost_reply_on_each_mutating_call_is_settled_by_read_back(
        self, bridge: Pipeline
    ) -> None:
        script = [
            {"method": "key/CreateKeyFromTemplate", "fault": "lost_reply"},
            {"method": "key/ChangeNotes", "fault": "drop"},
            {"method": "customer/AddCustomer", "fault": "lost_reply"},
            {"method": "key/ChangeCustomer", "fault": "drop"},
            {"method": "ai/RegisterEvent", "fault": "lost_reply"},
        ]
        bridge.sandbox.set_faults(script=script)
        await bridge.post(sb.load("checkout.session.completed.payment"))
        await bridge.drain()
        bridge.assert_all_done()
        counts = bridge.counts()
        assert (counts["keys_created"], counts["customers"], counts["events"]) == (1, 1, 1)
        assert bridge.sandbox.state()["faults"]["script"] == []  # every fault was hit


class TestLostReplies:
    async def test_lost_reply_on_each_mutating_call_is_settled_by_read_back(
        self, bridge: Pipeline
    ) -> None:
        script = [
            {"method": "key/CreateKey", "fault": "lost_reply"},
            {"method": "product/GetKeys", "fault": "drop"},
            {"method": "ai/RegisterEvent", "fault": "lost_reply"},
        ]
        bridge.sandbox.set_faults(script=script)
        await bridge.post(sb.load("checkout.session.completed.payment"))
        await bridge.drain()
        bridge.assert_all_done()
        counts = bridge.counts()
        assert (counts["keys_created"], counts["customers"], counts["events"]) == (1, 1, 1)
        assert bridge.sandbox.state()["faults"]["script"] == []  # every fault was hit

    async def test_lost_extension_reply_extends_once(self, bridge: Pipeline) -> None:
        delta = timeline()
        await bridge.post(shifted(sb.load("customer.subscription.created"), delta))
        await bridge.drain()
        extensions = bridge.counts()["extensions"]
        bridge.sandbox.set_faults(script=[{"method": "key/ExtendLicense", "fault": "lost_reply"}])
        await bridge.post(shifted(sb.load("invoice.paid.subscription_cycle"), delta))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.counts()["extensions"] == extensions + 1

    async def test_random_faults_drain_to_exactly_the_expected_effects(
        self, bridge: Pipeline
    ) -> None:
        bridge.settings = bridge.settings.model_copy(update={"max_attempts": 200})
        bridge.sandbox.set_faults(
            fail_rate=0.15, lost_reply_rate=0.15, lost_reply_mode="mixed", seed=7
        )
        purchases = [one_off(n) for n in range(12)]
        for event in purchases:
            response = await bridge.post(event)
            assert response.status_code == 200
        delta = timeline()
        await bridge.post(shifted(sb.load("customer.subscription.created"), delta))
        await bridge.drain()
        # The renewal after the start has settled, so that both extensions are needed.
        await bridge.post(shifted(sb.load("invoice.paid.subscription_cycle"), delta))
        await bridge.drain()
        bridge.sandbox.set_faults(fail_rate=0, lost_reply_rate=0)

        bridge.assert_all_done()
        state = bridge.sandbox.state()
        counts = state["counts"]
        assert counts["keys_created"] == 13
        assert counts["events"] == 13  # 12 purchases + 1 renewal
        # buyer0..2; subscription events carry only Stripe's customer id, no email.
        assert counts["customers"] == 3
        assert counts["extensions"] == 2
        purchase_keys = [k for k in state["keys"] if k["customer_id"]]
        assert len(purchase_keys) == 12
        values = sorted(e["value"] for e in state["events"] if e["event_name"] == "purchase")
        assert values == sorted(copy.deepcopy([1000 + n for n in range(12)]))
        target = sb.T2 + delta + 3 * DAY
        assert target <= bridge.expires_of(f"stripe:sub:{sb.SUB}") < target + DAY
