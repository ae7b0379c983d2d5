"""``POST /webhooks/pipedrive`` end to end: Pipedrive's webhooks v2 payloads in, the fake
API v2 read over HTTP, the sandbox's keys out."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.crm import KEY_FIELD, CrmPipeline
from tests.fixtures.crm_fakes import FakeCrm

FIXTURES = Path(__file__).parent.parent / "fixtures" / "pipedrive"


def load(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return body


def won() -> dict[str, Any]:
    return load("deal.change.won.v2")


def changed(body: dict[str, Any], delivery: str, at: str, **data: Any) -> dict[str, Any]:
    """``body`` as another delivery: a new meta.id and timestamp, ``data`` changed, and
    ``previous`` holding what those fields were."""
    new = copy.deepcopy(body)
    new["meta"].update(id=delivery, timestamp=at)
    new["previous"] = {k: new["data"].get(k) for k in data}
    new["data"].update(data)
    return new


@pytest.fixture
def pipedrive(crm: CrmPipeline, fake_crm: FakeCrm) -> CrmPipeline:
    fake_crm.pipedrive_deal(won()["data"])
    fake_crm.pipedrive_person(8, "Ada Lovelace", "ada@example.com", 1)
    fake_crm.pipedrive_person(9, "Grace Hopper", "grace@example.com", None)
    fake_crm.pipedrive_org(1, "Sample Org")
    return crm


def customer_of(crm: CrmPipeline, key: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in crm.sandbox.state()["customers"] if c["id"] == key["customer_id"])


class TestWon:
    async def test_the_vendor_payload_makes_a_key_links_registers_and_writes_back(
        self, pipedrive: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        response = await pipedrive.post_pipedrive(won())
        assert response.status_code == 200, response.text
        await pipedrive.drain()
        pipedrive.assert_all_done()
        key = pipedrive.only_key()
        assert key["template_id"] == 2  # pipeline 1's template
        customer = customer_of(pipedrive, key)
        assert (customer["email"], customer["company_name"]) == ("ada@example.com", "Sample Org")
        [registered] = pipedrive.sandbox.state()["events"]
        assert (registered["event_name"], registered["value"], registered["currency"]) == (
            "deal_won",
            10000,  # EUR 100 x 100
            "EUR",
        )
        assert fake_crm.writes == [
            ("pipedrive", "/api/v2/deals/8", {"custom_fields": {KEY_FIELD: key["key"]}})
        ]

    async def test_redelivered_reordered_and_a_flaky_api_still_make_one_key(
        self, pipedrive: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        fake_crm.fail_next("/api/v2/deals/8", 429, 500)
        fake_crm.fail_next("/api/v2/persons/8", 503)
        created = load("deal.create.v2.docs-example")
        for body in (won(), created, won(), load("deal.change.v2.docs-example")):
            assert (await pipedrive.post_pipedrive(body)).status_code == 200
        await pipedrive.drain()
        pipedrive.assert_all_done()
        counts = pipedrive.counts()
        assert (counts["keys_created"], counts["events"], counts["customers"]) == (1, 1, 1)
        assert len(fake_crm.writes) == 1 and fake_crm.faults == []
        assert len(pipedrive.events()) == 3  # one per meta.id

    async def test_a_deal_id_spelled_with_zeros_is_the_same_deal(
        self, pipedrive: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        # Pipedrive's API reads "008" as deal 8: one license, not two keys for one deal.
        padded = won()
        padded["meta"].update(entity_id="008", id="delivery-padded")
        for body in (padded, won()):
            assert (await pipedrive.post_pipedrive(body)).status_code == 200
        assert {i.license_ref for i in pipedrive.intents().values()} == {"pipedrive:deal:8"}
        await pipedrive.drain()
        pipedrive.assert_all_done()
        assert pipedrive.counts()["keys_created"] == 1
        assert [path for _, path, _ in fake_crm.writes] == ["/api/v2/deals/8"]

    async def test_a_value_that_is_no_amount_registers_no_value(
        self, pipedrive: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        body = won()
        body["data"].update(currency="€€€", value=1e300)
        fake_crm.pipedrive["deals"][8].update(currency="€€€", value=1e300)
        assert (await pipedrive.post_pipedrive(body)).status_code == 200
        await pipedrive.drain()
        pipedrive.assert_all_done()
        [registered] = pipedrive.sandbox.state()["events"]
        assert registered["value"] in (None, 0)
        assert pipedrive.counts()["keys_created"] == 1


class TestLaterChanges:
    async def test_a_new_person_on_the_deal_moves_the_key(
        self, pipedrive: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        await pipedrive.post_pipedrive(won())
        await pipedrive.drain()
        fake_crm.pipedrive["deals"][8]["person_id"] = 9
        moved = changed(won(), "delivery-person", "2022-11-24T16:00:00.000Z", person_id=9)
        await pipedrive.post_pipedrive(moved)
        await pipedrive.drain()
        pipedrive.assert_all_done()
        assert customer_of(pipedrive, pipedrive.only_key())["email"] == "grace@example.com"

    async def test_lost_blocks_won_again_lifts_it_and_deleted_blocks(
        self, pipedrive: CrmPipeline
    ) -> None:
        await pipedrive.post_pipedrive(won())
        lost = changed(won(), "delivery-lost", "2022-11-24T16:00:00.000Z", status="lost")
        await pipedrive.post_pipedrive(lost)
        await pipedrive.drain()
        assert pipedrive.only_key()["block"] is True
        again = changed(lost, "delivery-won-again", "2022-11-24T17:00:00.000Z", status="won")
        await pipedrive.post_pipedrive(again)
        await pipedrive.drain()
        assert pipedrive.only_key()["block"] is False
        deleted = copy.deepcopy(again)
        deleted["meta"].update(
            id="delivery-delete", action="delete", timestamp="2022-11-24T18:00:00Z"
        )
        deleted["data"], deleted["previous"] = None, again["data"]
        await pipedrive.post_pipedrive(deleted)
        await pipedrive.drain()
        pipedrive.assert_all_done()
        assert pipedrive.only_key()["block"] is True
        assert pipedrive.counts()["keys_created"] == 1


class TestRefused:
    @pytest.mark.parametrize(
        "auth",
        [("bridge-hook", "wrong"), ("someone", "pipedrive-hook-password-0001"), ("", "")],
    )
    async def test_wrong_credentials_are_401(
        self, pipedrive: CrmPipeline, auth: tuple[str, str]
    ) -> None:
        response = await pipedrive.post_pipedrive(won(), auth=auth)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert pipedrive.events() == []

    async def test_no_credentials_are_401(self, pipedrive: CrmPipeline) -> None:
        response = await pipedrive.http.post(f"{pipedrive.url}/webhooks/pipedrive", json=won())
        assert response.status_code == 401
        assert pipedrive.events() == []

    async def test_a_valid_delivery_not_acted_on_is_stored_not_refused(
        self, pipedrive: CrmPipeline
    ) -> None:
        person = load("deal.create.v2.docs-example")
        person["meta"].update(entity="person", id="person-delivery")
        response = await pipedrive.post_pipedrive(person)
        assert response.status_code == 200
        [stored] = pipedrive.events()
        assert (stored.outcome, stored.note) == (
            "ignored",
            "person.create: only deals concern keys",
        )

    async def test_a_change_dated_in_the_future_is_ignored(self, pipedrive: CrmPipeline) -> None:
        # It would order after every real change of the deal, for ever.
        body = won()
        body["meta"]["timestamp"] = "2099-01-01T00:00:00Z"
        assert (await pipedrive.post_pipedrive(body)).status_code == 200
        [stored] = pipedrive.events()
        assert (stored.outcome, stored.note) == ("ignored", "meta.timestamp is in the future")
        assert pipedrive.intents() == {}

    @pytest.mark.parametrize("entity_id", ["0", "000", "-8", "8.0", "8 "])
    async def test_an_entity_id_that_is_no_deal_id_is_ignored(
        self, pipedrive: CrmPipeline, entity_id: str
    ) -> None:
        body = won()
        body["meta"]["entity_id"] = entity_id
        assert (await pipedrive.post_pipedrive(body)).status_code == 200
        [stored] = pipedrive.events()
        assert stored.outcome == "ignored" and pipedrive.intents() == {}

    async def test_no_meta_id_is_400(self, pipedrive: CrmPipeline) -> None:
        body = won()
        del body["meta"]["id"]
        assert (await pipedrive.post_pipedrive(body)).status_code == 400
        assert pipedrive.events() == []
