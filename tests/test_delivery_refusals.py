"""Every endpoint's refusals and duplicates in the delivery log: HubSpot, Pipedrive, the
generic CRM contract and ``POST /usage`` (Stripe's are in ``test_admin``). Each cause is
recorded once, with the peer's address and never a body, secret, signature or token;
the admin page lists them by provider, with their counts.

The log is written off the request path; leaving ``run_asgi`` runs the app's shutdown,
which writes what is left, so the rows are read after it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.core.settings import Settings
from bridge.core.signing import sign
from bridge.hubspot.signature import sign_v1, sign_v2
from bridge.pipedrive.webhook import auth_refusal
from bridge.store.tables import DeliveryCount, LoggedDelivery
from tests.fixtures import stripe_builders as sb
from tests.fixtures.admin import ADMIN_TOKEN, sign_in
from tests.fixtures.crm import (
    CONFIG,
    CRM_SECRET,
    HUBSPOT_SECRET,
    PIPEDRIVE_AUTH,
    PUBLIC_URL,
    CrmPipeline,
    serve_crm,
)
from tests.fixtures.pipeline import SECRET, Clock
from tests.fixtures.servers import SandboxServer

NOW = 1_780_000_000
USAGE_TOKEN = "usage-token-for-refusals-0001"
USAGE = """
[[usage.product]]
id = 1001
sink = "cryptolens"
window_seconds = 60
"""
# The causes shared by every signed endpoint, and by every one behind a password or token.
SIGNED = ("no_header", "malformed_header", "timestamp", "no_match")
AUTH = ("no_header", "malformed_header", "no_match")
# Whatever a request carries that proves who sent it: never in the log.
PROOFS = ("authorization", "x-hubspot-signature-v3", "x-hubspot-signature", "x-bridge-signature")
SECRETS = (
    HUBSPOT_SECRET,
    "hubspot-next-secret",
    CRM_SECRET,
    PIPEDRIVE_AUTH[1],
    USAGE_TOKEN,
    SECRET,
    ADMIN_TOKEN,
)


@pytest.fixture
def settings(crm_settings: Settings, tmp_path: Path) -> Settings:
    """HubSpot, Pipedrive and the contract's sources (``tests.fixtures.crm``), usage
    tokens and a product, and the admin page."""
    config = tmp_path / "refusals.toml"
    config.write_text(CONFIG + USAGE)
    update = {
        "config_path": config,
        "usage_tokens": SecretStr(USAGE_TOKEN),
        "admin_token": SecretStr(ADMIN_TOKEN),
    }
    return crm_settings.model_copy(update=update)


def bridge(settings: Settings, engine: Engine, sandbox: SandboxServer) -> Any:
    clock = Clock()
    clock.at = NOW
    return serve_crm(settings, engine, sandbox, clock)


def logged(engine: Engine, provider: str) -> tuple[list[LoggedDelivery], dict[str, int]]:
    """The provider's logged rows, and its counts by cause."""
    with Session(engine) as s:
        rows = s.exec(
            select(LoggedDelivery)
            .where(col(LoggedDelivery.provider) == provider)
            .order_by(col(LoggedDelivery.id))
        ).all()
        counts = s.exec(select(DeliveryCount).where(col(DeliveryCount.provider) == provider))
        return list(rows), {c.cause: c.count for c in counts}


def answered(
    engine: Engine, provider: str, sent: list[httpx.Response], statuses: list[int], *causes: str
) -> dict[str, LoggedDelivery]:
    """Check the answers, and that each of ``causes`` was logged once, from this client;
    the logged rows by cause."""
    assert [r.status_code for r in sent] == statuses
    rows, counts = logged(engine, provider)
    assert counts == dict.fromkeys(causes, 1)
    assert {r.client for r in rows} == {"127.0.0.1"}
    return {row.cause: row for row in rows}


def assert_nothing_secret(
    rows: Iterable[LoggedDelivery], sent: Iterable[httpx.Response], body_words: Iterable[str]
) -> None:
    """No secret, no header that proves the sender, no word of a body in any row."""
    proofs = [
        value
        for response in sent
        for name, value in response.request.headers.items()
        if name.lower() in PROOFS
    ]
    for row in rows:
        text = f"{row.detail or ''} {row.external_id or ''} {row.client or ''}"
        for secret in (*SECRETS, *proofs, *body_words):
            assert secret not in text, (row.cause, secret)


def hubspot_event(event_id: int) -> dict[str, Any]:
    return {
        "objectId": 1246990,
        "changeSource": "CRM_UI",
        "eventId": event_id,
        "subscriptionId": 27,
        "portalId": 33,
        "appId": 1160452,
        "occurredAt": NOW * 1000,
        "subscriptionType": "deal.propertyChange",
        "propertyName": "dealstage",
        "propertyValue": "closedwon",
        "attemptNumber": 0,
    }


HUBSPOT_WORDS = ("CRM_UI", "closedwon", "dealstage", "1246990")


async def post_as(
    b: CrmPipeline, path: str, body: Any, authorization: str | None
) -> httpx.Response:
    """``body`` (JSON, or bytes as they are) with that Authorization header, or none."""
    headers = {"Authorization": authorization} if authorization else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await b.http.post(f"{b.url}{path}", content=content, headers=headers)


class TestHubSpot:
    async def test_each_refusal_cause_once(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        batch = [hubspot_event(7)]
        public = f"{PUBLIC_URL}/webhooks/hubspot"
        async with bridge(settings, engine, sandbox_server) as b:
            own = f"{b.url}/webhooks/hubspot"
            sent = [
                await post_as(b, "/webhooks/hubspot", batch, None),
                await b.post_hubspot(batch, headers={"X-HubSpot-Request-Timestamp": "soon"}),
                await b.post_hubspot(batch, timestamp_ms=(NOW - 301) * 1000),
                await b.post_hubspot(batch, secret="a-forged-client-secret"),
                # Signed for the URL the bridge hears, not BRIDGE_PUBLIC_URL: a wrong
                # setting (or a request made for another URL), refused and named.
                await b.post_hubspot(batch, uri=own),
            ]
        causes = (*SIGNED, "url_mismatch")
        found = answered(engine, "hubspot", sent, [400, 400, 401, 401, 401], *causes)
        assert {r.outcome for r in found.values()} == {"refused"}
        mismatch = found["url_mismatch"].detail or ""
        assert mismatch.startswith(f"signed for {own}, not {public}")
        assert "BRIDGE_PUBLIC_URL" in mismatch
        assert_nothing_secret(found.values(), sent, HUBSPOT_WORDS)

    async def test_the_other_scheme_is_a_mismatch_another_host_no_match(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        batch = [hubspot_event(7)]
        async with bridge(settings, engine, sandbox_server) as b:
            https = b.url.replace("http://", "https://") + "/webhooks/hubspot"
            sent = [
                await b.post_hubspot(batch, uri=https),
                await b.post_hubspot(batch, uri="https://evil.example.com/webhooks/hubspot"),
            ]
        found = answered(engine, "hubspot", sent, [401, 401], "url_mismatch", "no_match")
        assert https in (found["url_mismatch"].detail or "")
        assert_nothing_secret(found.values(), sent, HUBSPOT_WORDS)

    async def test_legacy_v1_and_v2_signatures(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        legacy = settings.model_copy(update={"hubspot_accept_legacy_signatures": True})
        body = json.dumps([hubspot_event(7)]).encode()
        v1 = {"X-HubSpot-Signature-Version": "v1"}
        async with bridge(legacy, engine, sandbox_server) as b:
            url = f"{b.url}/webhooks/hubspot"
            v2 = {
                "X-HubSpot-Signature": sign_v2(HUBSPOT_SECRET, "POST", url, body),
                "X-HubSpot-Signature-Version": "v2",
            }
            unversioned = {"X-HubSpot-Signature": sign_v1(HUBSPOT_SECRET, body)}
            sent = [
                await b.http.post(url, content=body, headers=unversioned),
                await b.http.post(
                    url,
                    content=body,
                    headers={**v1, "X-HubSpot-Signature": sign_v1("a-forged-secret", body)},
                ),
                await b.http.post(url, content=body, headers=v2),
            ]
        found = answered(
            engine, "hubspot", sent, [400, 401, 401], "malformed_header", "no_match", "url_mismatch"
        )
        assert "v1 signature" in (found["no_match"].detail or "")
        assert_nothing_secret(found.values(), sent, HUBSPOT_WORDS)

    async def test_a_legacy_signature_alone_is_refused_unless_turned_on(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        # HubSpot sends v1 beside v3: a captured request stripped of its v3 headers.
        body = json.dumps([hubspot_event(7)]).encode()
        v1 = {
            "X-HubSpot-Signature-Version": "v1",
            "X-HubSpot-Signature": sign_v1(HUBSPOT_SECRET, body),
        }
        async with bridge(settings, engine, sandbox_server) as b:
            sent = [await b.http.post(f"{b.url}/webhooks/hubspot", content=body, headers=v1)]
        found = answered(engine, "hubspot", sent, [401], "legacy_signature")
        assert "HUBSPOT_ACCEPT_LEGACY_SIGNATURES" in (found["legacy_signature"].detail or "")
        assert b.events() == []

    async def test_bad_events_once_per_batch_and_each_duplicate(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        mixed: list[Any] = [hubspot_event(7), {"eventId": "x"}, "not an event"]
        async with bridge(settings, engine, sandbox_server) as b:
            sent = [
                await b.post_hubspot(mixed),
                await b.post_hubspot([hubspot_event(7), hubspot_event(8)]),
            ]
        assert sent[0].json() == {"received": 1, "duplicates": 0, "refused": 2}
        assert sent[1].json() == {"received": 2, "duplicates": 1, "refused": 0}
        found = answered(engine, "hubspot", sent, [200, 200], "bad_event", "duplicate")
        assert (found["bad_event"].outcome, found["bad_event"].detail) == (
            "refused",
            "2 of 3 events skipped (#1: eventId must be a positive integer;"
            " #2: an event must be an object)",
        )
        assert (found["duplicate"].outcome, found["duplicate"].external_id) == ("duplicate", "7")
        assert_nothing_secret(found.values(), sent, HUBSPOT_WORDS)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def pipedrive_delivery(delivery_id: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        (Path(__file__).parent / "fixtures" / "pipedrive" / "deal.change.won.v2.json").read_text()
    )
    body["meta"]["id"] = delivery_id
    return body


class TestPipedrive:
    @pytest.mark.parametrize(
        "header,cause",
        [
            (None, "no_header"),
            ("   ", "no_header"),
            ("Bearer abc", "malformed_header"),
            ("Basic not base64!", "malformed_header"),
            ("Basic " + base64.b64encode(b"no colon").decode(), "malformed_header"),
            (basic("bridge-hook", "wrong"), "no_match"),
            (basic("someone", PIPEDRIVE_AUTH[1]), "no_match"),
            (basic(*PIPEDRIVE_AUTH), None),
            ("basic " + basic(*PIPEDRIVE_AUTH)[6:], None),
        ],
    )
    def test_the_cause_of_each_authorization(self, header: str | None, cause: str | None) -> None:
        assert auth_refusal(header, *PIPEDRIVE_AUTH) == cause

    async def test_each_refusal_cause_once_and_a_duplicate(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        delivery = pipedrive_delivery("delivery-1")
        good = basic(*PIPEDRIVE_AUTH)
        async with bridge(settings, engine, sandbox_server) as b:
            path = "/webhooks/pipedrive"
            sent = [
                await post_as(b, path, delivery, None),
                await post_as(b, path, delivery, f"Bearer {PIPEDRIVE_AUTH[1]}"),
                await post_as(b, path, delivery, basic(PIPEDRIVE_AUTH[0], "not-the-password")),
                await post_as(b, path, b'{"meta": ', good),
                await post_as(b, path, {"meta": {"action": "change"}}, good),
                await b.post_pipedrive(delivery),
                await b.post_pipedrive(delivery),
            ]
        causes = (*AUTH, "bad_json", "bad_payload", "duplicate")
        found = answered(engine, "pipedrive", sent, [401, 401, 401, 400, 400, 200, 200], *causes)
        assert found["duplicate"].external_id == "delivery-1"
        assert_nothing_secret(found.values(), sent, (PIPEDRIVE_AUTH[0], "not-the-password"))

    async def test_a_nul_in_the_id_or_type_is_stored_escaped_never_a_5xx(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        # PostgreSQL refuses a NUL in text: a 503 on every retry, and Pipedrive disables a
        # webhook that keeps failing. Stored escaped, acted on never, the reason kept.
        nul_id = pipedrive_delivery("delivery\u0000-1")
        nul_type = pipedrive_delivery("delivery-2")
        nul_type["meta"]["entity"] = "deal\u0000"
        async with bridge(settings, engine, sandbox_server) as b:
            sent = [
                await b.post_pipedrive(nul_id),
                await b.post_pipedrive(nul_id),
                await b.post_pipedrive(nul_type),
            ]
            events = {e.external_id: e for e in b.events()}
            assert b.intents() == {}
        assert [r.status_code for r in sent] == [200, 200, 200]
        assert [r.json()["duplicate"] for r in sent] == [False, True, False]
        assert sorted(events) == ["delivery-2", "delivery\\u0000-1"]
        assert events["delivery-2"].type == "deal\\u0000.change"
        assert {e.outcome for e in events.values()} == {"ignored"}
        assert all("NUL" in (e.note or "") for e in events.values())
        rows, _ = logged(engine, "pipedrive")
        assert [r.external_id for r in rows] == ["delivery\\u0000-1"]


def contract_event(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "occurred_at": "2026-05-28T10:00:00+02:00",
        "type": "deal.won",
        "deal": {"id": "D-42", "amount": 25.30, "currency": "EUR", "product": "pro"},
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
    }


class TestCrmContract:
    async def test_each_refusal_cause_once_and_a_duplicate(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        event = contract_event("evt-1")
        async with bridge(settings, engine, sandbox_server) as b:
            sent = [
                await b.post_contract(event, headers={}),
                await b.post_contract(event, headers={"X-Bridge-Signature": "t=1,garbage"}),
                await b.post_contract(event, timestamp=NOW - 3600),
                await b.post_contract(event, secret="a-forged-signing-secret"),
                await b.post_contract({**event, "type": "deal.maybe"}),
                await b.post_contract(event),
                await b.post_contract(event),
            ]
            unknown = [await b.post_contract(event, source="nosuch")]
        causes = (*SIGNED, "bad_payload", "duplicate")
        found = answered(engine, "crm:zoho", sent, [400, 400, 401, 401, 400, 200, 200], *causes)
        assert found["duplicate"].external_id == "evt-1"
        # Counted as "crm" until the source is known.
        nosuch = answered(engine, "crm", unknown, [404], "no_such_source")
        assert "'nosuch'" in (nosuch["no_such_source"].detail or "")
        words = ("ada@example.com", "Lovelace", "D-42")
        assert_nothing_secret([*found.values(), *nosuch.values()], sent + unknown, words)

    async def test_a_source_name_that_is_no_name_is_not_echoed(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        async with bridge(settings, engine, sandbox_server) as b:
            sent = await b.post_contract(contract_event("evt-1"), source="Robert'); DROP")
        found = answered(engine, "crm", [sent], [404], "no_such_source")
        assert found["no_such_source"].detail == "no CRM source by that name is configured"


def usage_record(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "key": "ABCDE-FGHIJ-KLMNO-PQRST",
        "product_id": 1001,
        "quantity": 3,
        "idempotency_key": f"usage-record-{n}",
        "timestamp": "2026-05-28T10:00:00Z",
        **fields,
    }


class TestUsage:
    async def test_each_refusal_cause_once_and_batches_noted_once(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        bearer = f"Bearer {USAGE_TOKEN}"
        one = [usage_record(1)]
        batch = [usage_record(1), usage_record(2, quantity=0), usage_record(3, extra="x")]
        async with bridge(settings, engine, sandbox_server) as b:
            sent = [
                await post_as(b, "/usage", one, None),
                await post_as(b, "/usage", one, f"Token {USAGE_TOKEN}"),
                await post_as(b, "/usage", one, "Bearer usage-token-not-ours-000"),
                await post_as(b, "/usage", b"[{", bearer),
                await post_as(b, "/usage", batch, bearer),
                await post_as(b, "/usage", [usage_record(1), usage_record(4)], bearer),
            ]
        assert sent[4].json()["refused"] == 2 and sent[5].json()["duplicate"] == 1
        causes = (*AUTH, "bad_json", "bad_records", "duplicate")
        found = answered(engine, "usage", sent, [401, 401, 401, 400, 202, 202], *causes)
        assert found["bad_records"].detail == "2 of 3 records refused"
        assert (found["duplicate"].detail, found["duplicate"].external_id) == (
            "1 of 2 records seen before",
            "usage-record-1",
        )
        assert_nothing_secret(found.values(), sent, ("ABCDE-FGHIJ-KLMNO-PQRST", "extra"))


ROW = re.compile(r'<tr class="outcome-(\w+)" data-provider="([^"]*)" data-cause="([^"]*)">')
COUNT = re.compile(
    r'<tr data-provider="([^"]*)" data-cause="([^"]*)"><td>[^<]*</td><td>[^<]*</td>'
    r'<td>[^<]*</td><td class="num">(\d+)</td>'
)


class TestAdminPage:
    async def test_deliveries_lists_every_providers_refusals_with_causes_and_counts(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        checkout = json.dumps(sb.checkout_session()).encode()
        async with bridge(settings, engine, sandbox_server) as b:
            own = f"{b.url}/webhooks/hubspot"  # not BRIDGE_PUBLIC_URL's
            await b.post_hubspot([hubspot_event(7)], uri=own)
            await b.post_hubspot([hubspot_event(7)], uri=own)
            await b.post_pipedrive(pipedrive_delivery("d-1"), auth=(PIPEDRIVE_AUTH[0], "wrong"))
            await b.post_contract(contract_event("evt-1"), timestamp=NOW - 3600)
            await b.post_contract(contract_event("evt-1"))
            await b.post_contract(contract_event("evt-1"))
            await b.http.post(f"{b.url}/usage", json=[usage_record(1)])
            stripe = {"Stripe-Signature": sign(checkout, "whsec_not_ours", NOW)}
            await b.http.post(f"{b.url}/webhooks/stripe", content=checkout, headers=stripe)
        expected = {
            ("hubspot", "url_mismatch"): 2,
            ("pipedrive", "no_match"): 1,
            ("crm:zoho", "timestamp"): 1,
            ("crm:zoho", "duplicate"): 1,
            ("usage", "no_header"): 1,
            ("stripe", "no_match"): 1,
        }
        # The operator reaches the page over plain HTTP here: under the public URL
        # (https) its cookie would be Secure, and rightly never sent back. HubSpot, which
        # needs that URL, is off for this second look.
        local = settings.model_copy(
            update={"public_url": None, "hubspot_client_secret": SecretStr("")}
        )
        async with bridge(local, engine, sandbox_server) as admin:
            await sign_in(admin, admin.http)
            page = await admin.http.get(f"{admin.url}/admin/")
            hubspot = await admin.http.get(f"{admin.url}/admin/", params={"provider": "hubspot"})
            crm = await admin.http.get(f"{admin.url}/admin/", params={"provider": "crm:zoho"})
        assert page.status_code == hubspot.status_code == crm.status_code == 200
        listed = ROW.findall(page.text)
        assert {(p, c) for o, p, c in listed if o != "stored"} == set(expected)
        assert {(p, c): int(n) for p, c, n in COUNT.findall(page.text)} == expected
        for provider in ("hubspot", "pipedrive", "crm:zoho", "usage", "stripe"):
            assert f'<option value="{provider}"' in page.text
        assert "signed for http://127.0.0.1:" in page.text
        # Filtered: the list and the counts are the provider's alone.
        assert {(o, p, c) for o, p, c in ROW.findall(hubspot.text)} == {
            ("refused", "hubspot", "url_mismatch")
        }
        assert COUNT.findall(hubspot.text) == [("hubspot", "url_mismatch", "2")]
        assert {(o, c) for o, p, c in ROW.findall(crm.text)} == {
            ("refused", "timestamp"),
            ("duplicate", "duplicate"),
            ("stored", ""),
        }
        assert {p for _, p, _ in ROW.findall(crm.text)} == {"crm:zoho"}
        for text in (page.text, hubspot.text, crm.text):
            for secret in SECRETS:
                assert secret not in text
