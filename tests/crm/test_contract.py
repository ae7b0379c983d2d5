"""``POST /webhooks/crm/{source}``: the generic signed contract, end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.app import create_app
from bridge.core.errors import ConfigError
from bridge.core.settings import Settings
from tests.fixtures.crm import CLOSE_SECRET, CRM_SECRET, CrmPipeline
from tests.fixtures.pipeline import SECRET, make_settings

NOW = 1_780_000_000  # the app's clock in these tests (2026-05-28)


def deal_event(
    event_id: str,
    type_: str = "deal.won",
    *,
    at: str = "2026-05-28T10:00:00+02:00",
    deal: dict[str, Any] | None = None,
    customer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "occurred_at": at,
        "type": type_,
        "deal": deal
        if deal is not None
        else {"id": "D-42", "amount": 25.30, "currency": "EUR", "product": "pro"},
        "customer": customer
        if customer is not None
        else {"email": "ada@example.com", "name": "Ada Lovelace", "company": "Analytical Engines"},
    }


@pytest.fixture
def crm_now(crm: CrmPipeline) -> CrmPipeline:
    crm.clock.at = NOW
    return crm


def customers_by_id(crm: CrmPipeline) -> dict[int, dict[str, Any]]:
    return {c["id"]: c for c in crm.sandbox.state()["customers"]}


class TestDealWon:
    async def test_key_customer_and_event_from_one_won_deal(self, crm_now: CrmPipeline) -> None:
        response = await crm_now.post_contract(deal_event("evt-1"))
        assert response.status_code == 200, response.text
        # create_key, register_event, and (lost_policy "block") the unblock that lifts a loss
        assert response.json() == {"received": True, "duplicate": False, "intents": 3}
        await crm_now.drain()
        crm_now.assert_all_done()
        state = crm_now.sandbox.state()
        [key] = state["keys"]
        assert key["template_id"] == 3  # the product table maps "pro" to 3
        customer = customers_by_id(crm_now)[key["customer_id"]]
        assert (customer["email"], customer["company_name"]) == (
            "ada@example.com",
            "Analytical Engines",
        )
        [event] = state["events"]
        assert (event["event_name"], event["value"], event["currency"]) == ("deal_won", 2530, "EUR")
        assert "ada@example.com" not in event["metadata"]

    async def test_the_deals_own_template_id_wins_and_the_amount_may_be_a_string(
        self, crm_now: CrmPipeline
    ) -> None:
        deal = {"id": 7, "amount": "1000", "currency": "jpy", "template_id": 2, "product": "pro"}
        assert (await crm_now.post_contract(deal_event("evt-1", deal=deal))).status_code == 200
        await crm_now.drain()
        state = crm_now.sandbox.state()
        assert state["keys"][0]["template_id"] == 2
        assert state["events"][0]["value"] == 100000  # JPY 1000 x 100, as RegisterEvent asks

    async def test_won_twice_redelivered_and_reordered_is_still_one_key(
        self, crm_now: CrmPipeline
    ) -> None:
        for event in (
            deal_event("evt-2", at="2026-05-28T12:00:00Z"),
            deal_event("evt-1", at="2026-05-28T10:00:00Z"),
            deal_event("evt-2", at="2026-05-28T12:00:00Z"),
        ):
            assert (await crm_now.post_contract(event)).status_code == 200
        await crm_now.drain()
        crm_now.assert_all_done()
        counts = crm_now.counts()
        assert (counts["keys_created"], counts["events"], counts["customers"]) == (1, 1, 1)
        assert [e.external_id for e in crm_now.events()] == ["evt-2", "evt-1"]


class TestCustomerChanged:
    async def test_the_newest_change_wins_whatever_the_order(self, crm_now: CrmPipeline) -> None:
        await crm_now.post_contract(deal_event("won", at="2026-05-28T10:00:00Z"))
        newer = {"email": "grace@example.com", "name": "Grace Hopper", "company": "Navy"}
        older = {"email": "old@example.com", "name": "Old Contact"}
        # The newer change is applied first, the older one arrives late: it must not undo it.
        await crm_now.post_contract(
            deal_event("c2", "deal.customer_changed", at="2026-05-28T12:00:00Z", customer=newer)
        )
        await crm_now.drain()
        await crm_now.post_contract(
            deal_event("c1", "deal.customer_changed", at="2026-05-28T11:00:00Z", customer=older)
        )
        await crm_now.drain()
        crm_now.assert_all_done()
        key = crm_now.only_key()
        assert customers_by_id(crm_now)[key["customer_id"]]["email"] == "grace@example.com"
        # The win's buyer (ada) came inside CreateKey, then grace: one change per applied
        # change.
        assert crm_now.counts()["customer_changes"] == 1
        superseded = crm_now.intents()["crm:zoho:deal:D-42:customer:1779966000000"]
        assert superseded.result is not None and "superseded_by" in superseded.result

    async def test_changes_stored_together_end_on_the_newest(self, crm_now: CrmPipeline) -> None:
        for event_id, at, email in (
            ("c2", "2026-05-28T12:00:00Z", "grace@example.com"),
            ("c1", "2026-05-28T11:00:00Z", "old@example.com"),
            ("won", "2026-05-28T10:00:00Z", "ada@example.com"),
        ):
            type_ = "deal.won" if event_id == "won" else "deal.customer_changed"
            await crm_now.post_contract(
                deal_event(event_id, type_, at=at, customer={"email": email})
            )
        await crm_now.drain()
        crm_now.assert_all_done()
        key = crm_now.only_key()
        assert customers_by_id(crm_now)[key["customer_id"]]["email"] == "grace@example.com"
        assert crm_now.counts()["customer_changes"] <= 3  # never more than one per change

    async def test_the_same_customer_again_changes_nothing(self, crm_now: CrmPipeline) -> None:
        await crm_now.post_contract(deal_event("won", at="2026-05-28T10:00:00Z"))
        await crm_now.post_contract(
            deal_event("c1", "deal.customer_changed", at="2026-05-28T11:00:00Z")
        )
        await crm_now.drain()
        crm_now.assert_all_done()
        # The buyer came inside CreateKey; the same customer again changes nothing.
        assert crm_now.counts()["customer_changes"] == 0


class TestLost:
    async def test_lost_blocks_and_won_again_lifts_the_block(self, crm_now: CrmPipeline) -> None:
        await crm_now.post_contract(deal_event("won-1", at="2026-05-28T10:00:00Z"))
        await crm_now.post_contract(deal_event("lost", "deal.lost", at="2026-05-28T11:00:00Z"))
        await crm_now.drain()
        assert crm_now.only_key()["block"] is True
        await crm_now.post_contract(deal_event("won-2", at="2026-05-28T12:00:00Z"))
        await crm_now.drain()
        crm_now.assert_all_done()
        key = crm_now.only_key()
        assert key["block"] is False
        counts = crm_now.counts()
        assert (counts["keys_created"], counts["blocks"], counts["unblocks"]) == (1, 1, 1)

    async def test_an_older_win_arriving_late_does_not_lift_a_newer_loss(
        self, crm_now: CrmPipeline
    ) -> None:
        await crm_now.post_contract(deal_event("lost", "deal.lost", at="2026-05-28T11:00:00Z"))
        await crm_now.post_contract(deal_event("won", at="2026-05-28T10:00:00Z"))
        await crm_now.drain()
        crm_now.assert_all_done()
        assert crm_now.only_key()["block"] is True

    async def test_lost_policy_none_leaves_the_key_alone(self, crm_now: CrmPipeline) -> None:
        await crm_now.post_contract(deal_event("won", at="2026-05-28T10:00:00Z"), source="close")
        response = await crm_now.post_contract(
            deal_event("lost", "deal.lost", at="2026-05-28T11:00:00Z"), source="close"
        )
        assert response.json()["intents"] == 0
        await crm_now.drain()
        assert crm_now.only_key()["block"] is False


class TestRefused:
    def nothing_stored(self, crm: CrmPipeline) -> None:
        assert crm.events() == [] and crm.intents() == {}

    async def test_forged_is_401(self, crm_now: CrmPipeline) -> None:
        response = await crm_now.post_contract(deal_event("evt-1"), secret="forged")
        assert (response.status_code, response.json()["error"]) == (401, "bad_signature")
        self.nothing_stored(crm_now)

    @pytest.mark.parametrize("offset", [-301, 301])
    async def test_stale_or_future_is_401(self, crm_now: CrmPipeline, offset: int) -> None:
        response = await crm_now.post_contract(deal_event("evt-1"), timestamp=NOW + offset)
        assert response.status_code == 401
        self.nothing_stored(crm_now)

    async def test_replayed_is_stored_once(self, crm_now: CrmPipeline) -> None:
        first = await crm_now.post_contract(deal_event("evt-1"), timestamp=NOW - 10)
        again = await crm_now.post_contract(deal_event("evt-1"), timestamp=NOW - 10)
        assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
        assert len(crm_now.events()) == 1

    async def test_a_source_without_a_secret_is_404(self, crm_now: CrmPipeline) -> None:
        for source in ("salesforce", "Bad-Name", "x" * 17):
            response = await crm_now.post_contract(deal_event("evt-1"), source=source)
            assert response.status_code == 404
        self.nothing_stored(crm_now)

    async def test_secrets_are_read_once_when_the_app_is_built(
        self, crm_now: CrmPipeline, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("CRM_SECRET_ZOHO")  # too late: the app has its secrets
        assert (await crm_now.post_contract(deal_event("evt-1"))).status_code == 200

    async def test_a_placeholder_secret_is_no_secret(
        self, crm_now: CrmPipeline, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CRM_SECRET_LAZY", "changeme")
        response = await crm_now.post_contract(deal_event("e"), source="lazy", secret="changeme")
        assert response.status_code == 404
        self.nothing_stored(crm_now)

    @pytest.mark.parametrize(
        "headers", [{}, {"X-Bridge-Signature": "garbage"}, {"X-Bridge-Signature": "t=1"}]
    )
    async def test_a_missing_or_garbled_header_is_400(
        self, crm_now: CrmPipeline, headers: dict[str, str]
    ) -> None:
        response = await crm_now.post_contract(deal_event("evt-1"), headers=headers)
        assert (response.status_code, response.json()["error"]) == (400, "bad_signature_header")
        self.nothing_stored(crm_now)

    @pytest.mark.parametrize(
        "change",
        [
            {"type": "deal.maybe"},
            {"occurred_at": "2026-05-28T10:00:00"},  # no zone
            {"deal": {"id": "D-1", "amount": 10, "currency": "euro"}},
            {"deal": {"id": "D-1", "amount": "ten", "currency": "EUR"}},
            {"deal": {"id": "D-1", "template_id": 0}},
            {"id": ""},
            {"type": "deal.customer_changed", "customer": {"name": "no email"}},
            # Ahead of the clock (NOW) by more than the tolerance: it would order after
            # every real change of the deal, for ever.
            {"occurred_at": "2026-05-28T20:31:41Z"},
            {"occurred_at": "2099-12-31T00:00:00Z"},
            {"occurred_at": "0001-01-01T00:00:00+01:00"},
        ],
    )
    async def test_signed_but_not_the_contract_is_400(
        self, crm_now: CrmPipeline, change: dict[str, Any]
    ) -> None:
        response = await crm_now.post_contract({**deal_event("evt-1"), **change})
        assert (response.status_code, response.json()["error"]) == (400, "bad_payload")
        self.nothing_stored(crm_now)

    async def test_an_escaped_surrogate_pair_is_a_character(self, crm_now: CrmPipeline) -> None:
        customer = {"email": "a@b.c", "name": "Ada \U0001f600"}  # sent as \ud83d\ude00
        body = json.dumps(deal_event("evt-1", customer=customer)).encode()
        assert b"\\ud83d\\ude00" in body
        assert (await crm_now.post_contract(body)).status_code == 200

    async def test_up_to_the_tolerance_ahead_is_taken(self, crm_now: CrmPipeline) -> None:
        event = deal_event("evt-1", at="2026-05-28T20:31:40Z")  # NOW + 300 s
        assert (await crm_now.post_contract(event)).status_code == 200

    async def test_bad_json_is_400(self, crm_now: CrmPipeline) -> None:
        for body in (
            b"{",
            b"\xef\xbb\xbf{}",
            b'{"amount": NaN}',
            '{"a":"\u00e9"}'.encode("utf-16"),
            # A lone surrogate: no character, once a 500 on every retry (it reached the
            # intent's params, which no encoder takes).
            json.dumps(
                deal_event("evt-1", customer={"email": "a@b.c", "name": "Ada\ud800"})
            ).encode(),
        ):
            response = await crm_now.post_contract(body)
            assert response.status_code == 400, body
        self.nothing_stored(crm_now)


def test_the_signature_uses_the_real_clock_by_default() -> None:
    # The fixture's clock runs on time.time() unless a test sets it.
    assert abs(time.time() - NOW) > 0
    assert CRM_SECRET


class TestSecretsApart:
    """The signature covers the body, not the source: two sources sharing a secret would
    each take the other's events, so the bridge refuses to start."""

    def settings(self, tmp_path: Path, **env: str) -> Settings:
        return make_settings(
            database_url="sqlite://",
            redis_url="redis://127.0.0.1:1/0",
            sandbox_url="http://127.0.0.1:1/api/",
            config_path=tmp_path / "missing.toml",
            **env,
        )

    def test_two_sources_with_one_secret(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CRM_SECRET_ZOHO", "old-zoho-secret-0001,shared-secret-0001")
        monkeypatch.setenv("CRM_SECRET_CLOSE", "shared-secret-0001")
        with pytest.raises(ConfigError, match="CRM_SECRET_ZOHO and CRM_SECRET_CLOSE") as refused:
            create_app(self.settings(tmp_path))
        assert "shared-secret-0001" not in str(refused.value)

    def test_a_source_with_stripes_secret(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CRM_SECRET_ZOHO", SECRET)
        with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
            create_app(self.settings(tmp_path))

    def test_each_its_own(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CRM_SECRET_ZOHO", CRM_SECRET)
        monkeypatch.setenv("CRM_SECRET_CLOSE", CLOSE_SECRET)
        sources = self.settings(tmp_path).webhook_sources()
        assert sorted(sources) == ["crm:close", "crm:zoho", "stripe"]
