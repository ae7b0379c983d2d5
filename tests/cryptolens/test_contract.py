"""The client against the sandbox over real HTTP: one contract, every method, every fault.

If the sandbox is faithful (test_sandbox_official_sdk.py holds it to the official SDK),
passing here means the client speaks the real protocol.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bridge.cryptolens import (
    AccessDenied,
    CryptolensClient,
    InvalidInput,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Transient,
    make_http_client,
)
from bridge.cryptolens.models import EventInput, TimeRange
from tests.fixtures.servers import SandboxServer

PRODUCT = 1001


@pytest.fixture
async def client(sandbox_server: SandboxServer) -> AsyncIterator[CryptolensClient]:
    http = make_http_client(connect_timeout=2, read_timeout=2)
    try:
        yield CryptolensClient(http, token=sandbox_server.token, base_url=sandbox_server.url)
    finally:
        await http.aclose()


class TestKeys:
    async def test_create_get_extend_block_unblock_notes(self, client: CryptolensClient) -> None:
        created = await client.create_key_from_template(1)
        key = await client.get_key(PRODUCT, created.key)
        assert key.key == created.key
        assert key.period == 30
        before = key.expires

        await client.extend_license(PRODUCT, created.key, 10)
        assert (await client.get_key(PRODUCT, created.key)).expires == before + timedelta(days=10)

        assert await client.block_key(PRODUCT, created.key) is True
        assert await client.block_key(PRODUCT, created.key) is False  # "Not changed"
        assert (await client.get_key(PRODUCT, created.key)).block is True
        assert await client.unblock_key(PRODUCT, created.key) is True

        await client.change_notes(PRODUCT, created.key, "tagged")
        assert (await client.get_key(PRODUCT, created.key)).notes == "tagged"

    async def test_create_key_with_a_templates_parameters_notes_and_buyer(
        self, client: CryptolensClient
    ) -> None:
        [template] = [t for t in await client.get_license_templates() if t.id == 2]
        created = await client.create_key(
            PRODUCT,
            {**template.key_parameters(), "CustomerId": 99, "Notes": "theirs"},
            notes="ours-1",
            email="bo@example.com",
            name="Bo",
        )
        assert created.customer_id is not None
        [key] = (await client.get_keys(PRODUCT, 'notes.contains("ours-1")')).keys
        assert (key.key, key.period, key.f1, key.notes) == (created.key, 365, True, "ours-1")
        assert key.customer is not None and key.customer.id == created.customer_id

    async def test_get_keys_pages_99_at_a_time(self, client: CryptolensClient) -> None:
        for _ in range(100):
            await client.create_key(PRODUCT, {}, notes="bulk")
        first = await client.get_keys(PRODUCT, 'notes.contains("bulk")')
        second = await client.get_keys(PRODUCT, 'notes.contains("bulk")', page=2)
        assert (len(first.keys), len(second.keys), first.page_count, first.total) == (99, 1, 2, 100)
        with pytest.raises(InvalidInput):
            await client.get_keys(PRODUCT, "customer.email == 1")

    async def test_customers(self, client: CryptolensClient) -> None:
        created = await client.create_key_from_template(1)
        added = await client.add_customer(name="Ada", email="ada@example.com", company_name="AE")
        await client.change_customer(PRODUCT, created.key, added.customer_id)
        found = await client.get_customers(search="ada@example.com")
        assert [c.id for c in found] == [added.customer_id]
        key = await client.get_key(PRODUCT, created.key)
        assert key.customer is not None and key.customer.email == "ada@example.com"

    async def test_templates_name_their_product(self, client: CryptolensClient) -> None:
        templates = {t.id: t for t in await client.get_license_templates()}
        assert templates[1].product_id == PRODUCT
        assert templates[1].period() == 30

    async def test_record_usage(
        self, client: CryptolensClient, sandbox_server: SandboxServer
    ) -> None:
        created = await client.create_key_from_template(1)
        sandbox_server.link_subscription_item(PRODUCT, created.key)
        await client.record_usage(PRODUCT, created.key, 5)
        await client.record_usage(PRODUCT, created.key, 2)
        assert sandbox_server.state()["counts"]["usage_total"] == 7


class TestAnalytics:
    async def test_register_and_find_by_metadata(self, client: CryptolensClient) -> None:
        created = await client.create_key_from_template(1)
        metadata = json.dumps({"intent": "x:1"})
        await client.register_event(
            product_id=PRODUCT,
            key=created.key,
            event_name="purchase",
            value=2530,
            currency="USD",
            metadata=metadata,
        )
        await client.register_events(
            [EventInput(event_name="renewal", value=100), EventInput(event_name="refund")],
            product_id=PRODUCT,
            key=created.key,
        )
        found = await client.get_events(product_id=PRODUCT, key=created.key, metadata=metadata)
        assert [(e.event_name, e.value, e.currency) for e in found] == [("purchase", 2530, "USD")]
        since = await client.get_events(
            product_id=PRODUCT, time=TimeRange(gte=int(time.time()) - 60), limit=100
        )
        assert len(since) == 3

    async def test_web_api_log_states_and_time(self, client: CryptolensClient) -> None:
        start = int(time.time()) - 1
        created = await client.create_key_from_template(1)
        await client.extend_license(PRODUCT, created.key, 1)
        logs = await client.get_web_api_log(
            product_id=PRODUCT, states=[3010], time=TimeRange(gte=start), limit=1000
        )
        assert [(entry.key, entry.state) for entry in logs] == [(created.key, 3010)]
        every = await client.get_web_api_log(product_id=PRODUCT, key=created.key)
        assert [entry.state for entry in every] == [3010, 7015]


class TestRefusals:
    async def test_wrong_token_is_access_denied(self, sandbox_server: SandboxServer) -> None:
        http = make_http_client()
        try:
            client = CryptolensClient(http, token="not-a-token", base_url=sandbox_server.url)
            with pytest.raises(AccessDenied):
                await client.get_license_templates()
        finally:
            await http.aclose()

    async def test_unknown_key_and_template_are_not_found(self, client: CryptolensClient) -> None:
        with pytest.raises(NotFound):
            await client.get_key(PRODUCT, "NOPE-NOPE")
        with pytest.raises(NotFound):
            await client.create_key_from_template(999)

    async def test_long_notes_are_invalid_input(self, client: CryptolensClient) -> None:
        created = await client.create_key_from_template(1)
        with pytest.raises(InvalidInput):
            await client.change_notes(PRODUCT, created.key, "x" * 501)


class TestFaults:
    """Each injected fault surfaces as the error class the retry logic acts on."""

    async def test_fail_before_is_transient_and_not_applied(
        self, client: CryptolensClient, sandbox_server: SandboxServer
    ) -> None:
        sandbox_server.set_faults(
            script=[{"method": "key/CreateKeyFromTemplate", "fault": "fail_before"}]
        )
        with pytest.raises(Transient) as caught:
            await client.create_key_from_template(1)
        assert not isinstance(caught.value, OutcomeUnknown)
        assert sandbox_server.state()["counts"]["keys_created"] == 0

    async def test_rate_limit_is_rate_limited_and_not_applied(
        self, client: CryptolensClient, sandbox_server: SandboxServer
    ) -> None:
        sandbox_server.set_faults(script=[{"method": "*", "fault": "rate_limit"}])
        with pytest.raises(RateLimited) as caught:
            await client.create_key_from_template(1)
        assert caught.value.retry_after == 1.0
        assert sandbox_server.state()["counts"]["keys_created"] == 0

    @pytest.mark.parametrize("fault", ["lost_reply", "drop"])
    async def test_lost_reply_is_outcome_unknown_and_applied(
        self, client: CryptolensClient, sandbox_server: SandboxServer, fault: str
    ) -> None:
        sandbox_server.set_faults(script=[{"method": "key/CreateKeyFromTemplate", "fault": fault}])
        with pytest.raises(OutcomeUnknown):
            await client.create_key_from_template(1)
        assert sandbox_server.state()["counts"]["keys_created"] == 1

    async def test_reply_slower_than_the_read_timeout_is_outcome_unknown(
        self, sandbox_server: SandboxServer
    ) -> None:
        sandbox_server.set_faults(reply_delay_ms=600)
        http = make_http_client(connect_timeout=1, read_timeout=0.2)
        try:
            client = CryptolensClient(http, token=sandbox_server.token, base_url=sandbox_server.url)
            with pytest.raises(OutcomeUnknown):
                await client.create_key_from_template(1)
        finally:
            await http.aclose()
        assert sandbox_server.state()["counts"]["keys_created"] == 1

    async def test_connection_refused_is_transient(self) -> None:
        http = make_http_client(connect_timeout=1)
        try:
            client = CryptolensClient(http, token="t", base_url="http://127.0.0.1:9/api/")
            with pytest.raises(Transient):
                await client.get_license_templates()
        finally:
            await http.aclose()


def test_dates_are_utc(sandbox_server: SandboxServer) -> None:
    body = sandbox_server.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)
    key = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=body["key"])["licenseKey"]
    created = datetime.fromisoformat(key["created"]).replace(tzinfo=UTC)
    assert abs((created - datetime.now(UTC)).total_seconds()) < 120
