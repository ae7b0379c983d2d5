"""``POST /webhooks/hubspot`` end to end: HubSpot's payloads in, the fake CRM v3 API read
over HTTP, the sandbox's keys out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine

from bridge.app import create_app
from bridge.core.errors import ConfigError
from bridge.core.settings import Settings
from bridge.hubspot.signature import sign_v3
from tests.fixtures.crm import HUBSPOT_SECRET, PUBLIC_URL, CrmPipeline
from tests.fixtures.crm_fakes import FakeCrm
from tests.fixtures.servers import run_asgi

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hubspot"
DEAL = 1246990  # the vendor fixtures' deal
WON_AT = 1462216412345  # its closedwon event's occurredAt
NOW = 1_780_000_000


def load(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((FIXTURES / f"{name}.json").read_text())
    return events


def event(event_id: int, type_: str, occurred_at: int, **fields: Any) -> dict[str, Any]:
    return {
        "objectId": DEAL,
        "changeSource": "CRM_UI",
        "eventId": event_id,
        "subscriptionId": 27,
        "portalId": 33,
        "appId": 1160452,
        "occurredAt": occurred_at,
        "subscriptionType": type_,
        "attemptNumber": 0,
        **fields,
    }


def stage(event_id: int, value: str, occurred_at: int) -> dict[str, Any]:
    return event(
        event_id, "deal.propertyChange", occurred_at, propertyName="dealstage", propertyValue=value
    )


@pytest.fixture
def hubspot(crm: CrmPipeline, fake_crm: FakeCrm) -> CrmPipeline:
    crm.clock.at = NOW
    fake_crm.hubspot_deal(DEAL, amount="25.30", currency="USD", contacts=(201,), companies=(301,))
    fake_crm.hubspot_contact(201, "ada@example.com", "Ada", "Lovelace")
    fake_crm.hubspot_contact(202, "grace@example.com", "Grace", "Hopper")
    fake_crm.hubspot_company(301, "Analytical Engines")
    return crm


def customer_of(crm: CrmPipeline, key: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in crm.sandbox.state()["customers"] if c["id"] == key["customer_id"])


class TestWon:
    async def test_the_vendor_payload_makes_a_key_links_registers_and_writes_back(
        self, hubspot: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        response = await hubspot.post_hubspot(load("deal.propertyChange.dealstage_closedwon"))
        assert response.status_code == 200, response.text
        assert response.json() == {"received": 1, "duplicates": 0, "refused": 0}
        await hubspot.drain()
        hubspot.assert_all_done()
        key = hubspot.only_key()
        assert key["template_id"] == 2  # the default pipeline's template
        customer = customer_of(hubspot, key)
        assert (customer["email"], customer["name"], customer["company_name"]) == (
            "ada@example.com",
            "Ada Lovelace",
            "Analytical Engines",
        )
        [registered] = hubspot.sandbox.state()["events"]
        assert (registered["event_name"], registered["value"], registered["currency"]) == (
            "deal_won",
            2530,
            "USD",
        )
        assert fake_crm.writes == [
            (
                "hubspot",
                f"/crm/v3/objects/deals/{DEAL}",
                {"properties": {"license_key": key["key"]}},
            )
        ]

    async def test_a_batch_twice_and_reordered_across_batches_is_one_key(
        self, hubspot: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        first = [event(1, "deal.creation", WON_AT - 1000), stage(2, "closedwon", WON_AT)]
        second = [stage(3, "closedwon", WON_AT + 5), *load("deal.creation")]
        for batch in (second, first, first, second):
            assert (await hubspot.post_hubspot(batch)).status_code == 200
        await hubspot.drain()
        hubspot.assert_all_done()
        counts = hubspot.counts()
        assert (counts["keys_created"], counts["events"], counts["customers"]) == (1, 1, 1)
        assert len(fake_crm.writes) == 1
        assert len(hubspot.events()) == 4  # each eventId stored once

    async def test_a_crm_api_answering_429_and_5xx_then_recovering(
        self, hubspot: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        fake_crm.fail_next("/crm/v3/objects/deals/", 429, 500, 503)
        fake_crm.fail_next("/crm/v3/objects/contacts/", 502)
        await hubspot.post_hubspot([stage(2, "closedwon", WON_AT)])
        await hubspot.drain()
        hubspot.assert_all_done()
        assert hubspot.counts()["keys_created"] == 1
        assert customer_of(hubspot, hubspot.only_key())["email"] == "ada@example.com"
        assert len(fake_crm.writes) == 1
        assert fake_crm.faults == []  # every fault was met, and recovered from


class TestLaterChanges:
    async def test_a_new_contact_on_the_deal_moves_the_key_to_its_customer(
        self, hubspot: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        await hubspot.post_hubspot([stage(2, "closedwon", WON_AT)])
        await hubspot.drain()
        fake_crm.hubspot_deal(DEAL, contacts=(202,), companies=(301,))
        change = event(
            9,
            "deal.associationChange",
            WON_AT + 60_000,
            fromObjectId=DEAL,
            toObjectId=202,
            associationType="DEAL_TO_CONTACT",
            associationRemoved=False,
        )
        mirrored = {**change, "eventId": 10, "fromObjectId": 202, "toObjectId": DEAL}
        mirrored["associationType"] = "CONTACT_TO_DEAL"
        await hubspot.post_hubspot([change, mirrored])
        await hubspot.drain()
        hubspot.assert_all_done()
        assert customer_of(hubspot, hubspot.only_key())["email"] == "grace@example.com"
        # The win's buyer came inside CreateKey: this change is the one ChangeCustomer.
        assert hubspot.counts()["customer_changes"] == 1

    async def test_lost_blocks_won_again_unblocks_and_an_older_event_undoes_nothing(
        self, hubspot: CrmPipeline
    ) -> None:
        await hubspot.post_hubspot(
            [stage(2, "closedwon", WON_AT), stage(3, "closedlost", WON_AT + 10)]
        )
        await hubspot.drain()
        assert hubspot.only_key()["block"] is True
        await hubspot.post_hubspot([stage(4, "closedwon", WON_AT + 20)])
        await hubspot.drain()
        assert hubspot.only_key()["block"] is False
        # A loss older than the newest win, delivered late, does not block again.
        await hubspot.post_hubspot([stage(5, "closedlost", WON_AT + 15)])
        await hubspot.drain()
        hubspot.assert_all_done()
        key = hubspot.only_key()
        assert key["block"] is False
        assert hubspot.counts()["keys_created"] == 1

    async def test_other_events_are_stored_and_ignored(self, hubspot: CrmPipeline) -> None:
        for name in (
            "contact.propertyChange+creation",
            "docs-example.contact.propertyChange+creation.eventType",
        ):
            response = await hubspot.post_hubspot(load(name))
            assert response.status_code == 200
        assert response.json()["duplicates"] == 2  # the same eventIds, either field name
        assert {e.outcome for e in hubspot.events()} == {"ignored"}
        assert hubspot.intents() == {}


class TestRefused:
    def nothing_stored(self, crm: CrmPipeline) -> None:
        assert crm.events() == [] and crm.intents() == {}

    async def test_forged_stale_and_wrong_uri_are_401(self, hubspot: CrmPipeline) -> None:
        batch = [stage(2, "closedwon", WON_AT)]
        forged = await hubspot.post_hubspot(batch, secret="forged")
        stale = await hubspot.post_hubspot(batch, timestamp_ms=(NOW - 301) * 1000)
        elsewhere = await hubspot.post_hubspot(
            batch, uri="https://evil.example.com/webhooks/hubspot"
        )
        assert [r.status_code for r in (forged, stale, elsewhere)] == [401, 401, 401]
        self.nothing_stored(hubspot)

    async def test_a_replayed_batch_stores_nothing_new(self, hubspot: CrmPipeline) -> None:
        batch = [stage(2, "closedwon", WON_AT)]
        await hubspot.post_hubspot(batch, timestamp_ms=NOW * 1000 - 1000)
        again = await hubspot.post_hubspot(batch, timestamp_ms=NOW * 1000 - 1000)
        assert again.json() == {"received": 1, "duplicates": 1, "refused": 0}
        assert len(hubspot.events()) == 1

    async def test_one_bad_event_does_not_lose_the_good_ones(self, hubspot: CrmPipeline) -> None:
        batch: list[Any] = [{"eventId": "x"}, stage(2, "closedwon", WON_AT), "not an event"]
        response = await hubspot.post_hubspot(batch)
        assert response.json() == {"received": 1, "duplicates": 0, "refused": 2}
        await hubspot.drain()
        assert hubspot.counts()["keys_created"] == 1

    async def test_an_event_from_the_future_is_refused(self, hubspot: CrmPipeline) -> None:
        # Dated ahead, a signed event would order after every real change of the deal.
        ahead = (NOW + 301) * 1000  # past BRIDGE_SIGNATURE_TOLERANCE (300 s)
        batch = [stage(2, "closedlost", ahead), stage(3, "closedwon", (NOW + 300) * 1000)]
        response = await hubspot.post_hubspot(batch)
        assert response.json() == {"received": 1, "duplicates": 0, "refused": 1}
        assert [e.external_id for e in hubspot.events()] == ["3"]

    @pytest.mark.parametrize("body", [b"{}", json.dumps([{}] * 101).encode(), b"[", b""])
    async def test_not_a_batch_is_400(self, hubspot: CrmPipeline, body: bytes) -> None:
        response = await hubspot.post_hubspot(body)
        assert response.status_code == 400
        self.nothing_stored(hubspot)

    async def test_no_signature_is_400(self, hubspot: CrmPipeline) -> None:
        response = await hubspot.http.post(f"{hubspot.url}/webhooks/hubspot", content=b"[]")
        assert response.status_code == 400
        self.nothing_stored(hubspot)


class TestTheSignedUrl:
    """HubSpot signs https://bridge.example.com/... (BRIDGE_PUBLIC_URL); the bridge hears
    http://127.0.0.1/... Only the configured URL counts, whatever the request names."""

    async def post_through(
        self, settings: Settings, engine: Engine, signed: str, headers: dict[str, str]
    ) -> httpx.Response:
        body = json.dumps([stage(2, "closedwon", WON_AT)]).encode()
        at = NOW * 1000
        sent = {
            "X-HubSpot-Request-Timestamp": str(at),
            "X-HubSpot-Signature-v3": sign_v3(HUBSPOT_SECRET, "POST", signed, body, at),
            **headers,
        }
        with run_asgi(create_app(settings, engine=engine, clock=lambda: NOW)) as url:
            async with httpx.AsyncClient() as client:
                return await client.post(f"{url}/webhooks/hubspot", content=body, headers=sent)

    async def test_the_configured_public_url(self, crm_settings: Settings, engine: Engine) -> None:
        signed = f"{PUBLIC_URL}/webhooks/hubspot"
        assert (await self.post_through(crm_settings, engine, signed, {})).status_code == 200

    @pytest.mark.parametrize("trusting", [False, True])
    async def test_a_signature_for_the_host_the_client_names_is_refused(
        self, crm_settings: Settings, engine: Engine, trusting: bool
    ) -> None:
        # Made for a staging bridge of the same app, replayed here naming its host.
        settings = crm_settings.model_copy(update={"trust_forwarded": trusting})
        signed = "https://staging.example.com/webhooks/hubspot"
        claims = {
            "Host": "staging.example.com",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "staging.example.com",
        }
        response = await self.post_through(settings, engine, signed, claims)
        assert response.status_code == 401

    async def test_a_proxy_appends_so_its_forwarded_host_is_the_last(
        self, crm_settings: Settings, engine: Engine
    ) -> None:
        # The client sent "X-Forwarded-Host: staging.example.com"; the proxy appended its own.
        settings = crm_settings.model_copy(
            update={"public_url": "https://bridge.other.example", "trust_forwarded": True}
        )
        signed = f"{PUBLIC_URL}/webhooks/hubspot"
        claims = {
            "X-Forwarded-Proto": "http, https",
            "X-Forwarded-Host": f"staging.example.com, {PUBLIC_URL.removeprefix('https://')}",
        }
        response = await self.post_through(settings, engine, signed, claims)
        assert response.status_code == 401  # named as the likely mistake, still refused
        assert f"signed for {signed}" in response.json()["detail"]

    def test_hubspot_without_a_public_url_does_not_start(self, crm_settings: Settings) -> None:
        settings = crm_settings.model_copy(update={"public_url": None})
        with pytest.raises(ConfigError, match="BRIDGE_PUBLIC_URL"):
            create_app(settings)

    @pytest.mark.parametrize(
        "url", ["bridge.example.com", "ftp://bridge.example.com", "https://b.example.com/?t=1"]
    )
    def test_a_public_url_must_be_one(self, url: str) -> None:
        with pytest.raises(ValidationError, match="BRIDGE_PUBLIC_URL"):
            Settings(_env_file=None, BRIDGE_PUBLIC_URL=url)
