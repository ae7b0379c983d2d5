"""POST /usage over real HTTP: tokens, records, batches, duplicates, refusals, OpenAPI."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from bridge.app import create_app
from bridge.core.intents import key_digest
from bridge.usage.endpoint import token_refusal
from tests.fixtures.servers import SandboxServer, run_asgi
from tests.fixtures.usage import (
    METER_PRODUCT,
    OLD_TOKEN,
    T0,
    UsageBridge,
    add_license,
    record,
    usage_settings,
)

KEY = "ABCDE-FGHIJ-KLMNO-PQRST"


class TestAuthentication:
    async def test_no_tokens_configured_means_no_endpoint(
        self,
        database_url: str,
        redis_url: str,
        engine: Engine,
        sandbox_server: SandboxServer,
        tmp_path: Path,
    ) -> None:
        settings = usage_settings(
            database_url=database_url,
            redis_url=redis_url,
            sandbox_url=sandbox_server.url,
            tmp_path=tmp_path,
            BRIDGE_USAGE_TOKENS="",
        )
        with run_asgi(create_app(settings, engine=engine)) as url:
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{url}/usage", json=record(1, key=KEY), headers={"Authorization": "Bearer x"}
                )
        assert response.status_code == 404

    async def test_wrong_or_missing_token_is_401_and_stores_nothing(
        self, usage_bridge: UsageBridge
    ) -> None:
        bad = await usage_bridge.usage(record(1, key=KEY), token="not-a-token-at-all-000")
        missing = await usage_bridge.http.post(f"{usage_bridge.url}/usage", json=record(1, key=KEY))
        assert (bad.status_code, missing.status_code) == (401, 401)
        assert usage_bridge.ledger_total() == 0

    async def test_every_token_of_a_rotation_is_accepted(self, usage_bridge: UsageBridge) -> None:
        old = await usage_bridge.usage(record(1, key=KEY), token=OLD_TOKEN)
        assert old.status_code == 202
        assert old.json()["accepted"] == 1

    def test_a_token_needs_the_bearer_scheme_and_to_be_exact(self) -> None:
        tokens = ("a" * 20, "b" * 20)
        assert token_refusal("Bearer " + "b" * 20, tokens) is None
        assert token_refusal("bearer " + "a" * 20, tokens) is None
        assert token_refusal("a" * 20, tokens) == "malformed_header"
        assert token_refusal("Bearer " + "a" * 19, tokens) == "no_match"
        assert token_refusal(None, tokens) == "no_header"
        assert token_refusal("  ", tokens) == "no_header"


class TestRecords:
    async def test_one_record_is_accepted_into_its_window_aggregate(
        self, usage_bridge: UsageBridge
    ) -> None:
        response = await usage_bridge.usage(record(1, key=KEY, quantity=5))
        assert response.status_code == 202
        body = response.json()
        aggregate = f"usage:1001:{key_digest(KEY)}:-:{T0}"
        assert body == {
            "accepted": 1,
            "duplicate": 0,
            "conflict": 0,
            "refused": 0,
            "results": [
                {
                    "index": 0,
                    "outcome": "accepted",
                    "idempotency_key": "rec-00001",
                    "aggregate": aggregate,
                }
            ],
        }
        [agg] = usage_bridge.aggregates()
        assert (agg.id, agg.quantity, agg.records, agg.sink) == (aggregate, 5, 1, "cryptolens")
        intent = usage_bridge.usage_intents()[aggregate]
        assert intent.status == "pending"
        assert intent.license_ref == f"key:1001:{key_digest(KEY)}"

    async def test_a_key_s_own_license_from_before_key_digests_is_kept(
        self, usage_bridge: UsageBridge
    ) -> None:
        legacy = f"key:1001:{KEY}"  # what the previous release made for the key
        add_license(usage_bridge.engine, legacy, 1001, KEY)
        await usage_bridge.usage(record(1, key=KEY, quantity=5))
        [intent] = usage_bridge.usage_intents().values()
        assert intent.license_ref == legacy  # one license per key: its runs never overlap

    async def test_a_record_seen_before_changes_nothing(self, usage_bridge: UsageBridge) -> None:
        await usage_bridge.usage(record(1, key=KEY, quantity=5))
        again = await usage_bridge.usage(record(1, key=KEY, quantity=5))
        assert again.json()["results"][0]["outcome"] == "duplicate"
        assert usage_bridge.ledger_total() == 5
        [agg] = usage_bridge.aggregates()
        assert agg.quantity == 5

    @pytest.mark.parametrize(
        "change",
        [{"quantity": 7}, {"key": "OTHER-KEY"}, {"product_id": METER_PRODUCT}, {"meter": "cpu"}],
        ids=["quantity", "key", "product", "meter"],
    )
    async def test_a_key_reused_for_other_content_is_a_conflict(
        self, usage_bridge: UsageBridge, change: dict[str, Any]
    ) -> None:
        # Answered "duplicate" it would look billed to the sender, and never be.
        await usage_bridge.usage(record(1, key=KEY, quantity=5))
        other = {**record(1, key=KEY, quantity=5), **change}
        again = await usage_bridge.usage([other, record(2, key=KEY, quantity=1)])
        body = again.json()
        assert (body["accepted"], body["duplicate"], body["conflict"]) == (1, 0, 1)
        [result, _] = body["results"]
        assert result["outcome"] == "conflict" and "another" in result["reason"]
        assert usage_bridge.ledger_total() == 6

    async def test_a_key_twice_in_one_batch_with_other_content_is_a_conflict(
        self, usage_bridge: UsageBridge
    ) -> None:
        batch = [record(1, key=KEY, quantity=5), record(1, key=KEY, quantity=5)]
        batch.append(record(1, key=KEY, quantity=6))
        outcomes = [r["outcome"] for r in (await usage_bridge.usage(batch)).json()["results"]]
        assert outcomes == ["accepted", "duplicate", "conflict"]
        assert usage_bridge.ledger_total() == 5

    async def test_a_timestamp_at_the_edge_of_the_calendar_is_refused_alone(
        self, usage_bridge: UsageBridge
    ) -> None:
        # Year 1 at +01:00 is before year 1 in UTC: once a 500 that lost the whole batch.
        edges = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
        batch = [record(n, key=KEY) for n in range(1, 999)]
        batch += [{**record(1000 + n, key=KEY), "timestamp": t} for n, t in enumerate(edges)]
        response = await usage_bridge.usage(batch)
        assert response.status_code == 202
        body = response.json()
        assert (body["accepted"], body["refused"]) == (998, 2)
        assert "out of range" in body["results"][-1]["reason"]
        assert usage_bridge.ledger_total() == 998

    async def test_bad_records_are_refused_each_with_a_reason_and_good_ones_stored(
        self, usage_bridge: UsageBridge
    ) -> None:
        batch = [
            record(1, key=KEY, quantity=2),
            {**record(2, key=KEY), "quantity": 0},
            {**record(3, key=KEY), "quantity": 1.5},
            {**record(4, key=KEY), "timestamp": "2026-12-01T14:00:00"},
            {**record(5, key=KEY), "product_id": 4242},
            {**record(6, key=KEY), "extra": 1},
            "not an object",
            {**record(7, key=KEY), "meter": "has space"},
            record(8, key=KEY, product_id=METER_PRODUCT, meter="storage"),
            record(1, key=KEY, quantity=2),  # the same record again, in the same batch
        ]
        response = await usage_bridge.usage(batch)
        assert response.status_code == 202
        body = response.json()
        outcomes = [r["outcome"] for r in body["results"]]
        assert outcomes == ["accepted"] + ["refused"] * 7 + ["accepted", "duplicate"]
        reasons = [r.get("reason", "") for r in body["results"]]
        assert "positive integer" in reasons[1]
        assert "integer" in reasons[2]
        assert "zone" in reasons[3]
        assert "4242" in reasons[4]
        assert "extra" in reasons[5]
        assert "object" in reasons[6]
        assert "meter" in reasons[7]
        assert (body["accepted"], body["duplicate"], body["refused"]) == (2, 1, 7)
        assert usage_bridge.ledger_total() == 3

    async def test_a_batch_for_one_key_and_window_is_one_aggregate(
        self, usage_bridge: UsageBridge
    ) -> None:
        batch = [record(n, key=KEY, quantity=n) for n in range(1, 101)]
        response = await usage_bridge.usage(batch)
        assert response.json()["accepted"] == 100
        [agg] = usage_bridge.aggregates()
        assert (agg.quantity, agg.records) == (5050, 100)
        assert len(usage_bridge.usage_intents()) == 1

    async def test_meters_and_windows_aggregate_apart(self, usage_bridge: UsageBridge) -> None:
        await usage_bridge.usage(
            [
                record(1, key=KEY, product_id=METER_PRODUCT),
                record(2, key=KEY, product_id=METER_PRODUCT, meter="storage"),
            ]
        )
        usage_bridge.clock.at = T0 + 60  # the next window
        await usage_bridge.usage(record(3, key=KEY, product_id=METER_PRODUCT))
        assert [a.id for a in usage_bridge.aggregates()] == [
            f"usage:1002:{key_digest(KEY)}:-:{T0}",
            f"usage:1002:{key_digest(KEY)}:-:{T0 + 60}",
            f"usage:1002:{key_digest(KEY)}:storage:{T0}",
        ]

    async def test_concurrent_posts_of_the_same_records_store_each_once(
        self, usage_bridge: UsageBridge
    ) -> None:
        batch = [record(n, key=f"KEY-{n % 3}", quantity=n) for n in range(1, 301)]
        first, second = await asyncio.gather(usage_bridge.usage(batch), usage_bridge.usage(batch))
        accepted = first.json()["accepted"] + second.json()["accepted"]
        duplicates = first.json()["duplicate"] + second.json()["duplicate"]
        assert (accepted, duplicates) == (300, 300)
        assert usage_bridge.ledger_total() == sum(range(1, 301))
        assert sum(a.quantity for a in usage_bridge.aggregates()) == sum(range(1, 301))
        assert len(usage_bridge.aggregates()) == 3


class TestBadRequests:
    async def test_not_json_empty_and_too_many(self, usage_bridge: UsageBridge) -> None:
        headers = {"Authorization": f"Bearer {usage_bridge.token}"}
        url = f"{usage_bridge.url}/usage"
        garbled = await usage_bridge.http.post(url, content=b"{nope", headers=headers)
        empty = await usage_bridge.http.post(url, json=[], headers=headers)
        scalar = await usage_bridge.http.post(url, json=3, headers=headers)
        many = await usage_bridge.usage([record(n, key=KEY) for n in range(1001)])
        assert [garbled.status_code, empty.status_code, scalar.status_code] == [400, 400, 400]
        assert many.status_code == 413
        assert usage_bridge.ledger_total() == 0


class TestOpenApi:
    async def test_the_description_is_served(self, usage_bridge: UsageBridge) -> None:
        response = await usage_bridge.http.get(f"{usage_bridge.url}/usage/openapi.json")
        assert response.status_code == 200
        spec = response.json()
        assert spec["openapi"].startswith("3.")
        post = spec["paths"]["/usage"]["post"]
        assert set(post["responses"]) == {"202", "400", "401", "404", "413", "503"}
        assert spec["components"]["schemas"]["UsageRecord"]["required"] == [
            "key",
            "product_id",
            "quantity",
            "idempotency_key",
            "timestamp",
        ]
