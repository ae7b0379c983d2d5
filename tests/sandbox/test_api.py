"""The /api/ hot path: what it takes from Starlette, and that it answers as Starlette does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.types import Scope

from bridge.sandbox import api
from bridge.sandbox.api import anonymised, fast_entry, form_fields
from bridge.sandbox.app import create_app
from bridge.sandbox.call import Call
from bridge.sandbox.config import DEFAULT_PRODUCT_ID, DEFAULT_TOKEN

# The same method: served directly, and (leading "//") through Starlette's router.
FAST = "/api/product/GetProducts"
ROUTED = "http://sandbox//api/product/GetProducts"


def _scope(path: str, method: str = "POST", **extra: Any) -> Scope:
    return {"type": "http", "method": method, "path": path, "root_path": "", **extra}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        yield client
    app.state.sandbox.store.close()


class TestFastEntry:
    @pytest.mark.parametrize(
        "path", ["/api/key/GetKey", "/API/KEY/getkey/", "/api//key//GetKey", "/Api/key/GetKey"]
    )
    def test_takes_a_plain_method_path(self, path: str) -> None:
        entry = fast_entry(_scope(path))
        assert entry is not None and entry[0] == "key/GetKey"
        assert fast_entry(_scope(path, "GET")) == entry

    @pytest.mark.parametrize(
        "scope",
        [
            _scope("/api/key/Teleport"),
            _scope("/sandbox/state", "GET"),
            _scope("/api/key/GetKey", "HEAD"),
            _scope("/api/key/GetKey", "PUT"),
            _scope("//api/key/GetKey"),
            _scope("/api/key/GetKey", root_path="/prefix"),
            {"type": "lifespan"},
        ],
    )
    def test_leaves_the_rest_to_starlette(self, scope: Scope) -> None:
        assert fast_entry(scope) is None


class TestSameAnswers:
    async def test_fast_and_routed_replies_are_identical(self, client: httpx.AsyncClient) -> None:
        replies = [
            await client.post(path, data={"token": DEFAULT_TOKEN}) for path in (FAST, ROUTED)
        ]
        assert replies[0].status_code == replies[1].status_code == 200
        assert replies[0].headers.raw == replies[1].headers.raw
        assert replies[0].content == replies[1].content
        assert replies[0].headers.raw == [
            (b"content-length", str(len(replies[0].content)).encode()),
            (b"content-type", b"application/json"),
        ]
        calls = (await client.get("/sandbox/state")).json()["calls"]["product/GetProducts"]
        assert calls == {"received": 2, "applied": 2, "succeeded": 2}

    async def test_json_is_compact_and_keeps_unicode(self, client: httpx.AsyncClient) -> None:
        data = {"token": DEFAULT_TOKEN, "Name": "Zoë", "Email": "zoe@example.com"}
        added = await client.post("/api/customer/AddCustomer", data=data)
        found = await client.post(
            "/api/customer/GetCustomers", data={"token": DEFAULT_TOKEN, "Search": "zoË"}
        )
        assert added.json()["result"] == 0
        assert '"name":"Zoë"' in found.content.decode()

    async def test_unknown_method_is_404_through_starlette(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/api/key/Teleport", data={"token": DEFAULT_TOKEN})
        assert response.status_code == 404
        assert response.json() == {
            "result": 1,
            "message": "The sandbox does not implement /api/key/Teleport.",
        }

    async def test_other_http_methods_are_405(self, client: httpx.AsyncClient) -> None:
        response = await client.put(FAST, data={"token": DEFAULT_TOKEN})
        assert response.status_code == 405

    @pytest.mark.parametrize("path", [FAST, ROUTED])
    async def test_a_handler_bug_is_a_plain_500_and_counts_as_not_applied(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, path: str
    ) -> None:
        def broken(call: Call) -> dict[str, Any]:
            raise RuntimeError("bug")

        monkeypatch.setitem(api.METHODS, "product/getproducts", ("product/GetProducts", broken))
        response = await client.post(path, data={"token": DEFAULT_TOKEN})
        assert response.status_code == 500
        assert response.text == "Internal Server Error"
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        calls = (await client.get("/sandbox/state")).json()["calls"]["product/GetProducts"]
        assert calls == {"received": 1, "applied": 0, "succeeded": 0}


class TestAnonymised:
    @pytest.mark.parametrize(
        ("host", "logged"),
        [
            ("203.0.113.77", "203.0.113.0"),
            ("2001:db8:1234:5678::1", "2001:db8:1234::"),
            ("testclient", "testclient"),
            (None, ""),
            ("", ""),
        ],
    )
    def test_network_of_the_client(self, host: str | None, logged: str) -> None:
        assert anonymised(host) == logged
        assert anonymised(host) == logged  # and again, from the cache


class TestFormFields:
    @pytest.mark.parametrize(
        "text",
        [
            "",
            "a=1&b=2",
            "a=1&a=2",
            "a&b=&=c&&c==d&",
            "Key=AB%2DCD+EF&Notes=%E2%9C%93+ok%zz%",
            "x=%ff%fe&y=%C3%A9&z=+%2B+",
            "n%61me=v%3Dw&token=t#frag",
        ],
    )
    def test_same_as_parse_qsl(self, text: str) -> None:
        assert form_fields(text) == dict(parse_qsl(text, keep_blank_values=True))


class TestProgressView:
    async def test_counts_keys_linked_keys_and_events_as_the_full_state_does(
        self, client: httpx.AsyncClient
    ) -> None:
        token = {"token": DEFAULT_TOKEN, "ProductId": str(DEFAULT_PRODUCT_ID)}
        plain = await client.post("/api/key/CreateKey", data=token)
        assert plain.json()["result"] == 0
        linked = {"AddOrUseExistingCustomer": "true", "Email": "ada@example.com", "Name": "Ada"}
        created = await client.post("/api/key/CreateKey", data={**token, **linked})
        assert created.json()["result"] == 0
        event = {**token, "EventName": "purchase", "Value": "100"}
        assert (await client.post("/api/ai/RegisterEvent", data=event)).json()["result"] == 0

        progress = (await client.get("/sandbox/state", params={"view": "progress"})).json()
        full = (await client.get("/sandbox/state")).json()
        assert progress == {"keys": 2, "linked_keys": 1, "events": 1}
        assert progress["keys"] == full["counts"]["keys"]
        assert progress["events"] == full["counts"]["events"]
        assert progress["linked_keys"] == sum(1 for k in full["keys"] if k["customer_id"])
