"""Stripe events -> intents, flow by flow, from the vendor fixtures and builders."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from bridge.core.intents import TEMPLATE_RANKS, Effect, IntentSpec, Plan, merge_start
from bridge.stripe.config import PriceMapping, StripeConfig
from bridge.stripe.plan import HANDLED_TYPES, PayloadError, plan
from tests.fixtures import stripe_builders as b

CONFIG = StripeConfig()  # grace_days 3, unpaid_policy "unpaid", no price mapping
MAPPED = StripeConfig(price=(PriceMapping(id=b.PRICE, template_id=7, grace_days=5),))
SUB_REF = f"stripe:sub:{b.SUB}"
FIRST_EXPIRES = b.T1 + 3 * b.DAY
RENEW_EXPIRES = b.T2 + 3 * b.DAY


def by_effect(result: Plan, effect: Effect) -> list[IntentSpec]:
    return [i for i in result.intents if i.effect == effect]


def one(result: Plan, effect: Effect) -> IntentSpec:
    [intent] = by_effect(result, effect)
    return intent


class TestDispatch:
    def test_handled_types(self) -> None:
        assert {
            "checkout.session.completed",
            "checkout.session.async_payment_succeeded",
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "invoice.paid",
            "invoice.payment_succeeded",
            "charge.refunded",
            "charge.dispute.created",
            "charge.dispute.closed",
        } == HANDLED_TYPES

    def test_unhandled_type_is_ignored(self) -> None:
        event = b.envelope("customer.created", {"id": "cus_1"}, created=1)
        assert plan(event, CONFIG) == Plan(ignored="unhandled type customer.created")

    @pytest.mark.parametrize("event", [[], "x", None, {}, {"type": 5}])
    def test_not_an_event_is_a_payload_error(self, event: Any) -> None:
        with pytest.raises(PayloadError):
            plan(event, CONFIG)

    def test_missing_created_is_a_payload_error(self) -> None:
        event = b.load("customer.subscription.deleted")
        del event["created"]
        with pytest.raises(PayloadError, match="created is missing"):
            plan(event, CONFIG)

    def test_message_names_the_object_and_field(self) -> None:
        event = b.load("invoice.paid.subscription_cycle")
        del b.obj(event)["amount_paid"]
        with pytest.raises(PayloadError, match=f"invoice {b.RENEW_INVOICE}: amount_paid"):
            plan(event, CONFIG)

    @pytest.mark.parametrize("name", sorted(p.stem for p in b.FIXTURES.glob("*.json")))
    def test_damaged_fields_raise_only_payload_error(self, name: str) -> None:
        # Every field of the object removed, nulled or given a wrong type, one at a time:
        # the planner answers with a plan or a PayloadError, never KeyError/TypeError.
        for key in b.obj(b.load(name)):
            damages: list[Any] = ["delete", None, [], {"odd": 1}, "x", 7]
            for damage in damages:
                event = b.load(name)
                if damage == "delete":
                    del b.obj(event)[key]
                else:
                    b.obj(event)[key] = damage
                with contextlib.suppress(PayloadError):
                    plan(event, CONFIG)

    @pytest.mark.parametrize("name", sorted(p.stem for p in b.FIXTURES.glob("*.json")))
    def test_params_are_json_able(self, name: str) -> None:
        for intent in plan(b.load(name), MAPPED).intents:
            assert json.loads(json.dumps(intent.params)) == intent.params

    @pytest.mark.parametrize("name", sorted(p.stem for p in b.FIXTURES.glob("*.json")))
    def test_ids_start_with_the_license_ref(self, name: str) -> None:
        for intent in plan(b.load(name), CONFIG).intents:
            assert intent.id.startswith(intent.license_ref + ":")


class TestCheckoutOneOff:
    REF = f"stripe:pi:{b.ONE_OFF_PI}"

    def test_paid_session_creates_a_key(self) -> None:
        result = plan(b.load("checkout.session.completed.payment"), CONFIG)
        assert one(result, Effect.CREATE_KEY) == IntentSpec(
            id=f"{self.REF}:create_key",
            effect=Effect.CREATE_KEY,
            license_ref=self.REF,
            params={
                "template_id": None,
                "template_rank": None,
                "template_source": None,
                "price_id": None,
                "product_id_stripe": None,
                "checkout_session": b.SESSION,
                "customer": {
                    "email": "example@example.com",
                    "name": None,
                    "stripe_customer": None,
                },
                "expires_at": None,
                "start": "payment",
            },
            occurred_at=1234567890,
        )

    def test_paid_session_registers_the_purchase(self) -> None:
        result = plan(b.load("checkout.session.completed.payment"), CONFIG)
        intent_id = f"{self.REF}:event:purchase:{b.SESSION}"
        assert one(result, Effect.REGISTER_EVENT) == IntentSpec(
            id=intent_id,
            effect=Effect.REGISTER_EVENT,
            license_ref=self.REF,
            params={
                "event_name": "purchase",
                "value": 1099,
                "currency": "USD",
                "metadata": {
                    "session": b.SESSION,
                    "payment_intent": b.ONE_OFF_PI,
                    "intent": intent_id,
                },
            },
            occurred_at=1234567890,
        )
        assert result.aliases == []

    def test_purchase_event_carries_no_personal_data(self) -> None:
        event = b.checkout_session(customer_name="Jenny Rosen")
        params = one(plan(event, CONFIG), Effect.REGISTER_EVENT).params
        text = json.dumps(params)
        assert "example@example.com" not in text
        assert "Jenny" not in text

    def test_customer_name_goes_to_the_key(self) -> None:
        event = b.checkout_session(customer_name="Jenny Rosen")
        params = one(plan(event, CONFIG), Effect.CREATE_KEY).params
        assert params["customer"]["name"] == "Jenny Rosen"

    def test_unpaid_session_is_ignored(self) -> None:
        result = plan(b.checkout_session(payment_status="unpaid"), CONFIG)
        assert result.intents == []
        assert result.ignored is not None and "unpaid" in result.ignored

    def test_async_payment_succeeded_plans_the_same_as_completed(self) -> None:
        completed = plan(b.checkout_session(), CONFIG)
        succeeded = plan(
            b.checkout_session(event_type="checkout.session.async_payment_succeeded"), CONFIG
        )
        assert succeeded == completed

    def test_zero_decimal_amount_is_scaled(self) -> None:
        event = b.checkout_session(amount_total=1000, currency="jpy")
        params = one(plan(event, CONFIG), Effect.REGISTER_EVENT).params
        assert (params["value"], params["currency"]) == (100000, "JPY")

    def test_free_checkout_creates_a_key_without_an_event(self) -> None:
        event = b.checkout_session(
            payment_status="no_payment_required", payment_intent=None, amount_total=0
        )
        result = plan(event, CONFIG)
        assert [i.id for i in result.intents] == [f"stripe:cs:{b.SESSION}:create_key"]

    def test_setup_mode_is_ignored(self) -> None:
        result = plan(b.checkout_session(mode="setup"), CONFIG)
        assert result.ignored is not None and "setup" in result.ignored

    def test_unknown_payment_status_is_a_payload_error(self) -> None:
        with pytest.raises(PayloadError, match="payment_status"):
            plan(b.checkout_session(payment_status="maybe"), CONFIG)


class TestTemplateHints:
    def test_session_metadata_wins(self) -> None:
        event = b.checkout_session(
            metadata={"cryptolens_template_id": "11"},
            line_items=[{"price": b.price_object(metadata={"cryptolens_template_id": "12"})}],
        )
        assert one(plan(event, MAPPED), Effect.CREATE_KEY).params["template_id"] == 11

    def test_price_metadata_beats_product_and_mapping(self) -> None:
        price = b.price_object(
            metadata={"cryptolens_template_id": "12"},
            product_metadata={"cryptolens_template_id": "13"},
        )
        event = b.checkout_session(line_items=[{"price": price}])
        params = one(plan(event, MAPPED), Effect.CREATE_KEY).params
        assert (params["template_id"], params["price_id"], params["product_id_stripe"]) == (
            12,
            b.PRICE,
            b.PRODUCT,
        )

    def test_expanded_product_metadata_beats_mapping(self) -> None:
        price = b.price_object(product_metadata={"cryptolens_template_id": "13"})
        event = b.subscription(price=price)
        assert one(plan(event, MAPPED), Effect.CREATE_KEY).params["template_id"] == 13

    def test_price_mapping_applies_by_price_id(self) -> None:
        event = b.load("customer.subscription.created")
        assert one(plan(event, MAPPED), Effect.CREATE_KEY).params["template_id"] == 7

    def test_subscription_metadata_wins(self) -> None:
        event = b.subscription(metadata={"cryptolens_template_id": "21"})
        assert one(plan(event, MAPPED), Effect.CREATE_KEY).params["template_id"] == 21

    def test_invoice_subscription_metadata_snapshot_wins(self) -> None:
        event = b.invoice(
            billing_reason="subscription_create",
            subscription_metadata={"cryptolens_template_id": "22"},
        )
        assert one(plan(event, MAPPED), Effect.CREATE_KEY).params["template_id"] == 22

    def test_no_hint_leaves_it_to_the_worker(self) -> None:
        params = one(plan(b.checkout_session(), CONFIG), Effect.CREATE_KEY).params
        assert (params["template_id"], params["checkout_session"]) == (None, b.SESSION)

    @pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5"])
    def test_bad_template_metadata_is_a_payload_error(self, value: str) -> None:
        event = b.checkout_session(metadata={"cryptolens_template_id": value})
        with pytest.raises(PayloadError, match="cryptolens_template_id"):
            plan(event, CONFIG)


class TestSubscriptionStart:
    def starts(self, config: StripeConfig = CONFIG) -> dict[str, Plan]:
        return {
            "checkout": plan(b.load("checkout.session.completed.subscription"), config),
            "created": plan(b.load("customer.subscription.created"), config),
            "invoice": plan(b.invoice(billing_reason="subscription_create"), config),
        }

    def test_three_start_events_share_one_create_key_id(self) -> None:
        ids = {name: one(p, Effect.CREATE_KEY).id for name, p in self.starts().items()}
        assert set(ids.values()) == {f"{SUB_REF}:create_key"}

    def test_subscription_created_extends_to_period_end_plus_grace(self) -> None:
        result = self.starts()["created"]
        assert one(result, Effect.EXTEND) == IntentSpec(
            id=f"{SUB_REF}:expires:{FIRST_EXPIRES}",
            effect=Effect.EXTEND,
            license_ref=SUB_REF,
            params={"expires_at": FIRST_EXPIRES, "invoice": None, "period_end": b.T1},
            occurred_at=b.T0,
        )
        assert one(result, Effect.CREATE_KEY).params["expires_at"] == FIRST_EXPIRES

    def test_first_invoice_extends_to_the_same_target(self) -> None:
        starts = self.starts()
        assert one(starts["invoice"], Effect.EXTEND).id == one(starts["created"], Effect.EXTEND).id

    def test_grace_comes_from_the_price_mapping(self) -> None:
        result = self.starts(MAPPED)["created"]
        assert one(result, Effect.EXTEND).params["expires_at"] == b.T1 + 5 * b.DAY

    def test_checkout_creates_the_key_and_links_the_buyer_without_extend_or_event(
        self,
    ) -> None:
        result = self.starts()["checkout"]
        assert [i.effect for i in result.intents] == [Effect.CREATE_KEY, Effect.LINK_CUSTOMER]
        assert one(result, Effect.LINK_CUSTOMER).id == f"{SUB_REF}:link_customer"
        params = one(result, Effect.CREATE_KEY).params
        assert params["start"] == "subscription"
        assert params["customer"] == {
            "email": "example@example.com",
            "name": None,
            "stripe_customer": b.CUSTOMER,
        }
        assert params["expires_at"] is None

    def test_only_the_first_invoice_registers_the_purchase(self) -> None:
        events = {name: by_effect(p, Effect.REGISTER_EVENT) for name, p in self.starts().items()}
        assert events["checkout"] == events["created"] == []
        [purchase] = events["invoice"]
        assert purchase.id == f"{SUB_REF}:event:purchase:{b.FIRST_INVOICE}"
        assert purchase.params["event_name"] == "purchase"
        assert purchase.params["value"] == 2000
        assert purchase.params["metadata"] == {
            "invoice": b.FIRST_INVOICE,
            "subscription": b.SUB,
            "payment_intent": b.FIRST_PI,
            "charge": b.FIRST_CHARGE,
            "intent": purchase.id,
        }

    def test_first_invoice_aliases_its_payment_to_the_subscription(self) -> None:
        assert self.starts()["invoice"].aliases == [
            (f"stripe:pi:{b.FIRST_PI}", SUB_REF),
            (f"stripe:ch:{b.FIRST_CHARGE}", SUB_REF),
        ]

    def test_trialing_subscription_creates_a_key(self) -> None:
        result = plan(b.subscription(status="trialing"), CONFIG)
        assert one(result, Effect.CREATE_KEY).id == f"{SUB_REF}:create_key"

    def test_incomplete_subscription_is_ignored(self) -> None:
        result = plan(b.subscription(status="incomplete"), CONFIG)
        assert result.intents == []
        assert result.ignored is not None and "incomplete" in result.ignored

    def test_incomplete_to_active_starts_the_subscription(self) -> None:
        event = b.subscription(
            event_type="customer.subscription.updated",
            previous_attributes={"status": "incomplete"},
        )
        result = plan(event, CONFIG)
        assert [i.id for i in result.intents] == [
            f"{SUB_REF}:create_key",
            f"{SUB_REF}:expires:{FIRST_EXPIRES}",
        ]

    def test_zero_amount_first_invoice_extends_without_an_event(self) -> None:
        result = plan(b.invoice(billing_reason="subscription_create", amount_paid=0), CONFIG)
        assert [i.effect for i in result.intents] == [Effect.CREATE_KEY, Effect.EXTEND]

    def test_first_invoice_customer_comes_from_the_invoice(self) -> None:
        event = b.invoice(billing_reason="subscription_create", customer_email="a@example.com")
        customer = one(plan(event, CONFIG), Effect.CREATE_KEY).params["customer"]
        assert customer == {"email": "a@example.com", "name": None, "stripe_customer": b.CUSTOMER}


class TestRenewal:
    def test_invoice_paid_extends_and_registers_a_renewal(self) -> None:
        result = plan(b.load("invoice.paid.subscription_cycle"), CONFIG)
        event_id = f"{SUB_REF}:event:renewal:{b.RENEW_INVOICE}"
        paid_at = b.T1 + 3601
        assert result.intents == [
            IntentSpec(
                id=f"{SUB_REF}:expires:{RENEW_EXPIRES}",
                effect=Effect.EXTEND,
                license_ref=SUB_REF,
                params={
                    "expires_at": RENEW_EXPIRES,
                    "invoice": b.RENEW_INVOICE,
                    "period_end": b.T2,
                },
                occurred_at=paid_at,
            ),
            IntentSpec(
                id=event_id,
                effect=Effect.REGISTER_EVENT,
                license_ref=SUB_REF,
                params={
                    "event_name": "renewal",
                    "value": 2000,
                    "currency": "USD",
                    "metadata": {
                        "invoice": b.RENEW_INVOICE,
                        "subscription": b.SUB,
                        "payment_intent": b.RENEW_PI,
                        "charge": b.RENEW_CHARGE,
                        "intent": event_id,
                    },
                },
                occurred_at=paid_at,
            ),
        ]

    def test_paid_and_payment_succeeded_plan_identically(self) -> None:
        paid = plan(b.load("invoice.paid.subscription_cycle"), CONFIG)
        succeeded = plan(b.load("invoice.payment_succeeded.subscription_cycle"), CONFIG)
        assert paid == succeeded

    def test_identical_even_when_the_envelopes_differ_in_time(self) -> None:
        paid = b.invoice(event_type="invoice.paid")
        succeeded = b.invoice(event_type="invoice.payment_succeeded")
        succeeded["created"] += 5
        assert plan(paid, CONFIG) == plan(succeeded, CONFIG)

    def test_renewal_aliases_payment_intent_and_charge(self) -> None:
        result = plan(b.load("invoice.paid.subscription_cycle"), CONFIG)
        assert result.aliases == [
            (f"stripe:pi:{b.RENEW_PI}", SUB_REF),
            (f"stripe:ch:{b.RENEW_CHARGE}", SUB_REF),
        ]

    def test_subscription_update_invoice_also_renews(self) -> None:
        result = plan(b.invoice(billing_reason="subscription_update"), CONFIG)
        assert one(result, Effect.EXTEND).params["expires_at"] == RENEW_EXPIRES
        assert one(result, Effect.REGISTER_EVENT).params["event_name"] == "renewal"

    def test_grace_comes_from_the_price_mapping(self) -> None:
        result = plan(b.load("invoice.paid.subscription_cycle"), MAPPED)
        assert one(result, Effect.EXTEND).id == f"{SUB_REF}:expires:{b.T2 + 5 * b.DAY}"

    def test_zero_amount_extends_without_an_event(self) -> None:
        result = plan(b.invoice(amount_paid=0), CONFIG)
        assert [i.effect for i in result.intents] == [Effect.EXTEND]

    def test_three_decimal_currency_is_rescaled(self) -> None:
        result = plan(b.invoice(amount_paid=5130, currency="kwd"), CONFIG)
        params = one(result, Effect.REGISTER_EVENT).params
        assert (params["value"], params["currency"]) == (513, "KWD")

    def test_one_off_invoice_is_ignored(self) -> None:
        result = plan(b.invoice(one_off=True), CONFIG)
        assert result.ignored is not None and "not for a subscription" in result.ignored

    def test_manual_invoice_is_ignored(self) -> None:
        result = plan(b.invoice(billing_reason="manual"), CONFIG)
        assert result.ignored is not None and "manual" in result.ignored

    def test_renewal_without_a_subscription_line_is_a_payload_error(self) -> None:
        event = b.invoice()
        b.obj(event)["lines"]["data"] = []
        with pytest.raises(PayloadError, match="no line of subscription"):
            plan(event, CONFIG)

    def test_renewal_period_rollover_on_subscription_updated_plans_nothing(self) -> None:
        result = plan(b.load("customer.subscription.updated.renewal"), CONFIG)
        assert result.intents == []
        assert result.ignored is not None and "invoice extends" in result.ignored


class TestCancelAndNonPayment:
    def updated(self, old: str, new: str, *, created: int = b.T1 + 100) -> dict[str, Any]:
        return b.subscription(
            "customer.subscription.updated.renewal",
            status=new,
            previous_attributes={"status": old},
            created=created,
        )

    def test_deleted_blocks_as_canceled(self) -> None:
        result = plan(b.load("customer.subscription.deleted"), CONFIG)
        assert result.intents == [
            IntentSpec(
                id=f"{SUB_REF}:block:canceled",
                effect=Effect.BLOCK,
                license_ref=SUB_REF,
                params={"reason": "canceled"},
                occurred_at=b.T2,
            )
        ]

    def test_cancel_at_period_end_alone_is_ignored(self) -> None:
        result = plan(b.load("customer.subscription.updated.cancel_at_period_end"), CONFIG)
        assert result.intents == []
        assert result.ignored is not None and "deleted" in result.ignored

    def test_updated_to_canceled_uses_the_deleted_id(self) -> None:
        result = plan(self.updated("active", "canceled"), CONFIG)
        assert one(result, Effect.BLOCK).id == f"{SUB_REF}:block:canceled"

    def test_unpaid_blocks(self) -> None:
        created = b.T1 + 100
        result = plan(self.updated("past_due", "unpaid", created=created), CONFIG)
        assert result.intents == [
            IntentSpec(
                id=f"{SUB_REF}:block:unpaid:{created}",
                effect=Effect.BLOCK,
                license_ref=SUB_REF,
                params={"reason": "unpaid"},
                occurred_at=created,
            )
        ]

    def test_past_due_does_not_block_under_the_unpaid_policy(self) -> None:
        result = plan(self.updated("active", "past_due"), CONFIG)
        assert result.intents == []
        assert result.ignored is not None

    def test_past_due_blocks_under_the_past_due_policy(self) -> None:
        created = b.T1 + 100
        config = StripeConfig(unpaid_policy="past_due")
        result = plan(self.updated("active", "past_due", created=created), config)
        assert one(result, Effect.BLOCK).id == f"{SUB_REF}:block:past_due:{created}"
        assert one(result, Effect.BLOCK).params == {"reason": "past_due"}

    def test_past_due_to_unpaid_is_already_blocked_under_the_past_due_policy(self) -> None:
        config = StripeConfig(unpaid_policy="past_due")
        assert plan(self.updated("past_due", "unpaid"), config).intents == []

    @pytest.mark.parametrize("new", ["active", "trialing"])
    def test_back_to_active_unblocks(self, new: str) -> None:
        created = b.T1 + 200
        result = plan(self.updated("unpaid", new, created=created), CONFIG)
        assert result.intents == [
            IntentSpec(
                id=f"{SUB_REF}:unblock:{created}",
                effect=Effect.UNBLOCK,
                license_ref=SUB_REF,
                params={"reason": "active"},
                occurred_at=created,
            )
        ]

    def test_past_due_to_active_does_not_unblock_what_was_never_blocked(self) -> None:
        # Under the unpaid policy past_due never blocked; an unblock here could lift a
        # dispute or refund block instead.
        assert plan(self.updated("past_due", "active"), CONFIG).intents == []

    def test_past_due_to_active_unblocks_under_the_past_due_policy(self) -> None:
        config = StripeConfig(unpaid_policy="past_due")
        result = plan(self.updated("past_due", "active"), config)
        assert [i.effect for i in result.intents] == [Effect.UNBLOCK]

    def test_redelivery_plans_the_same_id_and_a_later_change_a_new_one(self) -> None:
        first = one(plan(self.updated("past_due", "unpaid", created=10), CONFIG), Effect.BLOCK)
        again = one(plan(self.updated("past_due", "unpaid", created=10), CONFIG), Effect.BLOCK)
        later = one(plan(self.updated("past_due", "unpaid", created=20), CONFIG), Effect.BLOCK)
        assert first == again
        assert later.id != first.id

    def test_metadata_only_change_is_ignored(self) -> None:
        event = b.subscription(
            "customer.subscription.updated.renewal", previous_attributes={"metadata": {}}
        )
        result = plan(event, CONFIG)
        assert result.intents == [] and result.ignored is not None


class TestRefundAndDispute:
    def test_full_refund_of_a_one_off_blocks_and_registers(self) -> None:
        result = plan(b.load("charge.refunded"), CONFIG)
        ref = "stripe:pi:pi_11111"
        event_id = f"{ref}:event:refund:ch_11111"
        assert result.intents == [
            IntentSpec(
                id=f"{ref}:block:refund:ch_11111",
                effect=Effect.BLOCK,
                license_ref=ref,
                params={"reason": "refund"},
                occurred_at=1717531265,
            ),
            IntentSpec(
                id=event_id,
                effect=Effect.REGISTER_EVENT,
                license_ref=ref,
                params={
                    "event_name": "refund",
                    "value": 34500,
                    "currency": "MXN",
                    "metadata": {
                        "charge": "ch_11111",
                        "payment_intent": "pi_11111",
                        "intent": event_id,
                    },
                },
                occurred_at=1717531265,
            ),
        ]

    def test_partial_refund_is_ignored(self) -> None:
        result = plan(b.charge_refunded(amount_refunded=1000), CONFIG)
        assert result.intents == []
        assert result.ignored is not None and "partly" in result.ignored

    def test_refund_of_a_subscription_invoice_is_ignored(self) -> None:
        result = plan(b.charge_refunded(invoice=b.RENEW_INVOICE), CONFIG)
        assert result.intents == []
        assert result.ignored is not None and b.RENEW_INVOICE in result.ignored

    def test_refund_without_payment_intent_uses_the_charge(self) -> None:
        result = plan(b.charge_refunded(payment_intent=None), CONFIG)
        assert one(result, Effect.BLOCK).license_ref == "stripe:ch:ch_11111"

    def test_dispute_blocks_the_payment_intent(self) -> None:
        result = plan(b.dispute(payment_intent=b.RENEW_PI), CONFIG)
        ref = f"stripe:pi:{b.RENEW_PI}"
        assert result.intents == [
            IntentSpec(
                id=f"{ref}:block:dispute:dp_1OPoujJN5vQBdWExZXzZC5oN",
                effect=Effect.BLOCK,
                license_ref=ref,
                params={"reason": "dispute", "dispute": "dp_1OPoujJN5vQBdWExZXzZC5oN"},
                occurred_at=1234567890,
            )
        ]

    @pytest.mark.parametrize("status", ["won", "warning_closed"])
    def test_a_dispute_closed_in_the_vendors_favour_lifts_that_disputes_block(
        self, status: str
    ) -> None:
        result = plan(
            b.dispute_closed(status, payment_intent=b.RENEW_PI, created=1234569999), CONFIG
        )
        ref = f"stripe:pi:{b.RENEW_PI}"
        assert result.intents == [
            IntentSpec(
                id=f"{ref}:unblock:dispute_won:dp_1OPoujJN5vQBdWExZXzZC5oN",
                effect=Effect.UNBLOCK,
                license_ref=ref,
                params={"reason": "dispute_won", "dispute": "dp_1OPoujJN5vQBdWExZXzZC5oN"},
                occurred_at=1234569999,
            )
        ]

    def test_a_lost_dispute_keeps_the_block(self) -> None:
        result = plan(b.dispute_closed("lost", payment_intent=b.RENEW_PI), CONFIG)
        assert result.intents == []
        assert result.ignored is not None and "lost" in result.ignored

    def test_dispute_without_payment_intent_blocks_the_charge(self) -> None:
        # The vendor fixture's dispute names only its charge.
        result = plan(b.load("charge.dispute.created"), CONFIG)
        assert one(result, Effect.BLOCK).license_ref == "stripe:ch:ch_1OPoueJN5vQBdWExHvNS496R"

    def test_dispute_of_a_renewal_reaches_the_subscription_through_an_alias(self) -> None:
        aliases = dict(plan(b.load("invoice.paid.subscription_cycle"), CONFIG).aliases)
        block = one(plan(b.dispute(payment_intent=b.RENEW_PI), CONFIG), Effect.BLOCK)
        assert aliases[block.license_ref] == SUB_REF

    def test_dispute_naming_nothing_is_a_payload_error(self) -> None:
        event = b.dispute()
        b.obj(event)["charge"] = None
        with pytest.raises(PayloadError, match="neither"):
            plan(event, CONFIG)


class TestBasilShapes:
    def test_basil_subscription_created_plans_like_2024(self) -> None:
        old = plan(b.load("customer.subscription.created"), MAPPED)
        new = plan(b.subscription(basil=True), MAPPED)
        assert new == old

    def test_basil_items_with_different_periods_extend_to_the_latest(self) -> None:
        event = b.subscription(basil=True)
        items = b.obj(event)["items"]["data"]
        items.append({**items[0], "id": "si_second", "current_period_end": b.T2})
        assert one(plan(event, CONFIG), Effect.EXTEND).params["period_end"] == b.T2

    def test_basil_renewal_invoice_plans_like_2024_without_payment_ids(self) -> None:
        result = plan(b.invoice(basil=True), MAPPED)
        old = plan(b.invoice(), MAPPED)
        assert one(result, Effect.EXTEND) == one(old, Effect.EXTEND)
        metadata = one(result, Effect.REGISTER_EVENT).params["metadata"]
        assert "payment_intent" not in metadata and "charge" not in metadata
        assert result.aliases == []

    def test_basil_invoice_payments_give_the_alias(self) -> None:
        result = plan(b.invoice(basil=True, with_payments=True), CONFIG)
        assert result.aliases == [(f"stripe:pi:{b.RENEW_PI}", SUB_REF)]

    def test_basil_first_invoice_creates_the_same_key(self) -> None:
        old = plan(b.invoice(billing_reason="subscription_create"), MAPPED)
        new = plan(b.invoice(billing_reason="subscription_create", basil=True), MAPPED)
        old_params, new_params = (
            one(old, Effect.CREATE_KEY).params,
            one(new, Effect.CREATE_KEY).params,
        )
        # basil lines name their price by id: its metadata is not in the payload, so
        # customer.subscription.created may still name a richer template.
        assert old_params.pop("hints_from") == ["price", "purchase"]
        assert new_params.pop("hints_from") == ["purchase"]
        assert new_params == old_params

    def test_basil_invoice_subscription_metadata_snapshot_wins(self) -> None:
        event = b.invoice(
            billing_reason="subscription_create",
            subscription_metadata={"cryptolens_template_id": "31"},
            basil=True,
        )
        assert one(plan(event, MAPPED), Effect.CREATE_KEY).params["template_id"] == 31

    def test_basil_period_rollover_on_subscription_updated_plans_nothing(self) -> None:
        event = b.subscription("customer.subscription.updated.renewal", basil=True)
        result = plan(event, CONFIG)
        assert result.intents == []
        assert result.ignored is not None and "invoice extends" in result.ignored

    def test_basil_one_off_invoice_is_ignored(self) -> None:
        event = b.invoice(basil=True)
        b.obj(event)["parent"] = None
        assert plan(event, CONFIG).ignored is not None


class TestStartHints:
    """What each start event of a subscription carries in full (``hints_from``): the
    worker waits, without STRIPE_API_KEY, only for a source none of them carried."""

    def test_the_session_names_its_own_source_above_the_subscription(self) -> None:
        event = b.checkout_session(mode="subscription", metadata={"cryptolens_template_id": "5"})
        params = one(plan(event, CONFIG), Effect.CREATE_KEY).params
        assert (params["template_id"], params["template_source"]) == (5, "session")
        assert params["template_rank"] > TEMPLATE_RANKS["purchase"]
        assert params["hints_from"] == ["session"]

    def test_the_subscription_carries_its_metadata_and_prices(self) -> None:
        params = one(plan(b.subscription(), CONFIG), Effect.CREATE_KEY).params
        assert params["hints_from"] == ["price", "purchase"]

    def test_a_one_off_payment_has_no_other_event(self) -> None:
        event = b.checkout_session(metadata={"cryptolens_template_id": "5"})
        params = one(plan(event, CONFIG), Effect.CREATE_KEY).params
        assert params["template_source"] == "purchase" and "hints_from" not in params

    def test_merging_keeps_what_every_delivery_carried(self) -> None:
        first = {"template_id": None, "hints_from": ["session"]}
        later = {"template_id": 7, "template_rank": 1, "hints_from": ["price", "purchase"]}
        merged = merge_start(first, later)
        assert merged["hints_from"] == ["price", "purchase", "session"]
        assert merge_start(merged, later) == merged
        assert merge_start(later, first)["hints_from"] == merged["hints_from"]
