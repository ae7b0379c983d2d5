"""Fault injection as a client sees it: each kind through httpx, applied or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.sandbox.config import DEFAULT_PRODUCT_ID, DEFAULT_TOKEN
from bridge.sandbox.faults import FaultConfig, Faults
from tests.fixtures.servers import SandboxServer

PRODUCT = DEFAULT_PRODUCT_ID


@pytest.fixture
async def client(sandbox_server: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox_server.url) as client:
        yield client


async def _extend(client: httpx.AsyncClient, key: str) -> httpx.Response:
    data = {"token": DEFAULT_TOKEN, "ProductId": PRODUCT, "Key": key, "NoOfDays": 1}
    return await client.post("key/ExtendLicense", data=data)


def _key(sandbox: SandboxServer) -> str:
    key: str = sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
    return key


class TestScriptedFaults:
    async def test_fail_before_is_503_and_not_applied(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        key = _key(sandbox_server)
        sandbox_server.set_faults(script=[{"method": "key/ExtendLicense", "fault": "fail_before"}])
        response = await _extend(client, key)
        assert response.status_code == 503
        assert "result" not in response.json()  # a server error: only a message
        state = sandbox_server.state()
        assert state["counts"]["extensions"] == 0
        assert state["calls"]["key/ExtendLicense"] == {
            "received": 1,
            "applied": 0,
            "succeeded": 0,
        }

    async def test_lost_request_is_504_and_not_applied(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        key = _key(sandbox_server)
        sandbox_server.set_faults(script=[{"method": "key/ExtendLicense", "fault": "lost_request"}])
        assert (await _extend(client, key)).status_code == 504
        state = sandbox_server.state()
        assert state["counts"]["extensions"] == 0
        assert state["calls"]["key/ExtendLicense"]["applied"] == 0

    async def test_lost_reply_is_504_after_applying(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        key = _key(sandbox_server)
        sandbox_server.set_faults(script=[{"method": "key/ExtendLicense", "fault": "lost_reply"}])
        assert (await _extend(client, key)).status_code == 504
        assert (await _extend(client, key)).status_code == 200  # consumed: exactly once
        state = sandbox_server.state()
        assert state["counts"]["extensions"] == 2
        assert state["calls"]["key/ExtendLicense"]["applied"] == 2

    async def test_drop_cuts_the_reply_after_applying(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        key = _key(sandbox_server)
        sandbox_server.set_faults(script=[{"method": "key/ExtendLicense", "fault": "drop"}])
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await _extend(client, key)
        assert sandbox_server.state()["counts"]["extensions"] == 1
        assert (await _extend(client, key)).json()["result"] == 0  # the client recovers

    async def test_rate_limit_is_429_with_retry_after(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        key = _key(sandbox_server)
        sandbox_server.set_faults(script=[{"method": "ExtendLicense", "fault": "rate_limit"}])
        response = await _extend(client, key)
        assert response.status_code == 429
        assert float(response.headers["Retry-After"]) > 0
        assert sandbox_server.state()["counts"]["extensions"] == 0

    async def test_script_matches_by_method_in_order(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        key = _key(sandbox_server)
        faults = sandbox_server.set_faults(
            script=[
                {"method": "key/BlockKey", "fault": "fail_before"},
                {"method": "KEY/EXTENDLICENSE", "fault": "lost_reply"},
                {"method": "*", "fault": "fail_before"},
            ]
        )
        assert len(faults["script"]) == 3
        assert (await _extend(client, key)).status_code == 504
        data = {"token": DEFAULT_TOKEN, "ProductId": PRODUCT, "Key": key}
        assert (await client.post("key/BlockKey", data=data)).status_code == 503
        assert (await _extend(client, key)).status_code == 503  # the "*" entry
        assert (await _extend(client, key)).status_code == 200
        assert sandbox_server.set_faults()["script"] == []


class TestRandomFaults:
    async def test_fail_rate_one_fails_every_call(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        sandbox_server.set_faults(fail_rate=1.0)
        for _ in range(3):
            response = await client.post("ai/GetEvents", data={"token": DEFAULT_TOKEN})
            assert response.status_code == 503
        assert sandbox_server.state()["calls"]["ai/GetEvents"]["applied"] == 0

    async def test_lost_reply_modes(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        key = _key(sandbox_server)
        sandbox_server.set_faults(lost_reply_rate=1.0, lost_reply_mode="504")
        assert (await _extend(client, key)).status_code == 504
        sandbox_server.set_faults(lost_reply_mode="drop")
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await _extend(client, key)
        assert sandbox_server.state()["counts"]["extensions"] == 2

    async def test_rate_limit_per_second(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        sandbox_server.set_faults(rate_limit=2)
        statuses = [
            (await client.post("ai/GetEvents", data={"token": DEFAULT_TOKEN})).status_code
            for _ in range(5)
        ]
        # Five calls cannot all fit in the window that admits two per second.
        assert statuses.count(429) >= 1 and statuses[:2] == [200, 200]

    def test_seed_makes_the_sequence_repeatable(self) -> None:
        config = FaultConfig(fail_rate=0.5, lost_reply_rate=0.3, lost_reply_mode="mixed", seed=7)
        runs = []
        for _ in range(2):
            faults = Faults(config)
            runs.append([faults.plan("key/ExtendLicense") for _ in range(50)])
        assert runs[0] == runs[1]
        assert {"fail_before", "lost_reply", "drop", None} <= set(runs[0])


class TestControlEndpoints:
    async def test_never_faulted(
        self, sandbox_server: SandboxServer, client: httpx.AsyncClient
    ) -> None:
        sandbox_server.set_faults(fail_rate=1.0, rate_limit=1)
        for _ in range(3):
            assert sandbox_server.state()["faults"]["fail_rate"] == 1.0
        sandbox_server.reset()
        assert (await client.post("ai/GetEvents", data={"token": DEFAULT_TOKEN})).status_code == 200

    def test_get_returns_current_settings(self, sandbox_server: SandboxServer) -> None:
        sandbox_server.set_faults(latency_ms=5, seed=3)
        current = httpx.get(sandbox_server.root + "/sandbox/faults").json()
        assert current["latency_ms"] == 5 and current["seed"] == 3
        assert current["fail_rate"] == 0

    @pytest.mark.parametrize(
        "settings",
        [
            {"fail_rate": 2},
            {"lost_reply_mode": "sometimes"},
            {"script": [{"method": "x", "fault": "explode"}]},
            {"unknown": 1},
            [1, 2],
        ],
    )
    def test_bad_settings_are_400(self, sandbox_server: SandboxServer, settings: object) -> None:
        response = httpx.post(sandbox_server.root + "/sandbox/faults", json=settings)
        assert response.status_code == 400
        assert sandbox_server.set_faults()["fail_rate"] == 0  # nothing half-applied

    def test_latency_still_answers(self, sandbox_server: SandboxServer) -> None:
        sandbox_server.set_faults(latency_ms=20)
        assert sandbox_server.call("ai/GetEvents")["result"] == 0

    def test_reset_clears_state_but_ids_keep_growing(self, sandbox_server: SandboxServer) -> None:
        sandbox_server.call("ai/RegisterEvent", EventName="a")
        first = sandbox_server.state()["events"][0]["id"]
        sandbox_server.reset()
        assert sandbox_server.state()["counts"]["events"] == 0
        sandbox_server.call("ai/RegisterEvent", EventName="b")
        assert sandbox_server.state()["events"][0]["id"] > first
