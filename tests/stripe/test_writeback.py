"""The key written back to Stripe (``[stripe] write_back``): metadata on the payment
intent or the subscription, exactly once through lost replies, never over another
value. The whole bridge over HTTP, the Stripe stand-in served over HTTP and the official
``stripe`` library talking to it, on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from bridge.core.settings import Settings
from bridge.store.tables import Attempt
from bridge.stripe.writeback import KEY_FIELD, PRODUCT_FIELD, found, wanted
from tests.fixtures import stripe_builders as sb
from tests.fixtures.fake_stripe import API_KEY, FakeStripe
from tests.fixtures.pipeline import CONFIG, Pipeline, make_settings
from tests.fixtures.servers import SandboxServer

PI_INTENT = f"stripe:pi:{sb.ONE_OFF_PI}:stripe_write_back"
SUB_INTENT = f"stripe:sub:{sb.SUB}:stripe_write_back"


@pytest.fixture
def bridge_settings(
    database_url: str,
    redis_url: str,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    fake_stripe: FakeStripe,
) -> Settings:
    config = tmp_path / "bridge.toml"
    config.write_text(CONFIG.replace("[stripe]\n", "[stripe]\nwrite_back = true\n", 1))
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        sandbox_url=sandbox_server.url,
        config_path=config,
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=fake_stripe.url,
    )


def attempts(bridge: Pipeline, intent_id: str) -> list[str | None]:
    with Session(bridge.engine) as s:
        rows = s.exec(select(Attempt).where(Attempt.intent_id == intent_id)).all()
        return [a.outcome for a in sorted(rows, key=lambda a: a.id or 0)]


def purchase() -> dict[str, Any]:
    # Its template named: the worker needs no line items from Stripe.
    return sb.checkout_session(metadata={"cryptolens_template_id": "1"})


async def buy_once(bridge: Pipeline) -> dict[str, Any]:
    assert (await bridge.post(purchase())).status_code == 200
    await bridge.drain()
    return bridge.only_key()


class TestDecision:
    def test_found(self) -> None:
        want = wanted("AAAAA-BBBBB-CCCCC-DDDDD", 1001)
        assert found({**want, "order": "7"}, want) == "present"
        assert found({"order": "7"}, want) == "absent"
        assert found({KEY_FIELD: "AAAAA-BBBBB-CCCCC-DDDDD"}, want) == "absent"
        assert found({KEY_FIELD: ""}, want) == "absent"
        assert found({KEY_FIELD: "ZZZZZ-BBBBB-CCCCC-DDDDD"}, want) == "conflict"
        assert found({**want, PRODUCT_FIELD: "9"}, want) == "conflict"


class TestWriteBack:
    async def test_one_off_purchase_writes_the_key_onto_its_payment_intent(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        fake_stripe.metadata[sb.ONE_OFF_PI] = {"order": "42"}
        key = await buy_once(bridge)
        bridge.assert_all_done()
        assert fake_stripe.metadata[sb.ONE_OFF_PI] == {
            "order": "42",  # the vendor's own metadata stays
            KEY_FIELD: key["key"],
            PRODUCT_FIELD: "1001",
        }
        assert fake_stripe.metadata_updates == 1
        assert attempts(bridge, PI_INTENT) == ["applied"]
        # A redelivery plans nothing new, and nothing is sent again.
        assert (await bridge.post(purchase())).json()["duplicate"] is True
        await bridge.drain()
        assert fake_stripe.metadata_updates == 1

    async def test_subscription_writes_the_key_onto_the_subscription(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        fake_stripe.subscriptions[sb.SUB] = sb.CUSTOMER
        for event in (
            sb.checkout_session(mode="subscription"),
            sb.subscription(),
            sb.invoice(billing_reason="subscription_create"),
        ):
            assert (await bridge.post(event)).status_code == 200
        await bridge.drain()
        bridge.assert_all_done()
        key = bridge.only_key()
        assert fake_stripe.metadata[sb.SUB] == {KEY_FIELD: key["key"], PRODUCT_FIELD: "1001"}
        assert fake_stripe.metadata_updates == 1
        assert sb.ONE_OFF_PI not in fake_stripe.metadata

    async def test_lost_reply_is_read_back_not_sent_again(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        fake_stripe.metadata[sb.ONE_OFF_PI] = {}
        fake_stripe.metadata_script = ["lost_reply"]  # applied, then answered 500
        key = await buy_once(bridge)
        bridge.assert_all_done()
        assert fake_stripe.metadata_updates == 1  # the read-back found it: no second send
        assert fake_stripe.metadata[sb.ONE_OFF_PI][KEY_FIELD] == key["key"]
        assert attempts(bridge, PI_INTENT) == ["applied"]
        result = bridge.intents()[PI_INTENT].result or ""
        assert '"written": true' in result

    async def test_failed_send_is_read_back_then_sent_once_more(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        fake_stripe.metadata[sb.ONE_OFF_PI] = {}
        fake_stripe.metadata_script = ["fail"]  # answered 500, not applied
        key = await buy_once(bridge)
        bridge.assert_all_done()
        assert fake_stripe.metadata_updates == 2
        assert fake_stripe.metadata[sb.ONE_OFF_PI][KEY_FIELD] == key["key"]
        assert attempts(bridge, PI_INTENT) == ["not_applied", "applied"]

    async def test_a_different_value_is_never_overwritten(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        other = "QWERT-YUIOP-ASDFG-HJKLZ"
        fake_stripe.metadata[sb.ONE_OFF_PI] = {KEY_FIELD: other}
        await buy_once(bridge)
        intent = bridge.intents()[PI_INTENT]
        assert intent.status == "needs_review"
        assert other not in (intent.last_error or "")
        assert fake_stripe.metadata[sb.ONE_OFF_PI] == {KEY_FIELD: other}
        assert fake_stripe.metadata_updates == 0
        # Everything else of the purchase went through.
        others = [i for i in bridge.intents().values() if i.id != PI_INTENT]
        assert {i.status for i in others} == {"done"}

    async def test_without_an_api_key_it_fails_saying_why(
        self, bridge: Pipeline, fake_stripe: FakeStripe
    ) -> None:
        bridge.settings = bridge.settings.model_copy(update={"stripe_api_key": None})
        fake_stripe.metadata[sb.ONE_OFF_PI] = {}
        await buy_once(bridge)
        intent = bridge.intents()[PI_INTENT]
        assert intent.status == "failed" and "STRIPE_API_KEY" in (intent.last_error or "")
        assert fake_stripe.metadata_updates == 0
