"""checkout_template_hints through the official library against a local fake Stripe API."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.stripe.api import (
    LineItemHint,
    PermanentStripeError,
    StripeApiError,
    TransientStripeError,
    checkout_template_hints,
    make_http_client,
    subscription_start_hints,
)
from tests.fixtures import stripe_builders as b
from tests.fixtures.fake_stripe import API_KEY as FAKE_KEY
from tests.fixtures.fake_stripe import FakeStripe
from tests.fixtures.servers import run_asgi

API_KEY = "sk_test_bridge_fake_key_4242"


def line_item(
    index: int,
    *,
    price_metadata: dict[str, str] | None = None,
    product_metadata: dict[str, str] | None = None,
    quantity: int = 1,
) -> dict[str, Any]:
    price = b.price_object(
        price_id=f"price_line{index}",
        metadata=price_metadata,
        product_metadata=product_metadata or {},
    )
    return {
        "id": f"li_{index}",
        "object": "item",
        "amount_total": 2000,
        "currency": "usd",
        "description": "T-shirt",
        "price": price,
        "quantity": quantity,
    }


SESSIONS: dict[str, list[dict[str, Any]]] = {
    "cs_price": [line_item(1, price_metadata={"cryptolens_template_id": "12"})],
    "cs_product": [line_item(2, product_metadata={"cryptolens_template_id": "13"}, quantity=3)],
    "cs_none": [line_item(3)],
    "cs_many": [line_item(i) for i in range(5)],
    "cs_bad_metadata": [line_item(4, price_metadata={"cryptolens_template_id": "abc"})],
    "cs_empty": [],
}


def stripe_error(status: int, kind: str, message: str, code: str | None = None) -> JSONResponse:
    body = {"error": {"type": kind, "message": message, "code": code}}
    return JSONResponse(body, status_code=status, headers={"Request-Id": "req_fake_1"})


async def line_items(request: Request) -> JSONResponse:
    """GET /v1/checkout/sessions/{id}/line_items as Stripe answers it."""
    request.app.state.requests.append(request)
    if request.headers.get("authorization") != f"Bearer {API_KEY}":
        # Echo the key on purpose: the bridge must not pass it on.
        given = request.headers.get("authorization", "")
        return stripe_error(401, "invalid_request_error", f"Invalid API Key provided: {given}")
    session = request.path_params["session"]
    if session == "cs_boom":
        return stripe_error(500, "api_error", "Something went wrong on Stripe's end.")
    if session == "cs_busy":
        return stripe_error(429, "invalid_request_error", "Too many requests.", "rate_limit")
    if session not in SESSIONS:
        return stripe_error(
            404,
            "invalid_request_error",
            f"No such checkout.session: '{session}'",
            "resource_missing",
        )
    # The library sends expand[0]=...; without the expansion product metadata is lost.
    expand = [v for k, v in request.query_params.multi_items() if k.startswith("expand[")]
    assert expand == ["data.price.product"]
    items = SESSIONS[session]
    after = request.query_params.get("starting_after")
    start = next((i + 1 for i, item in enumerate(items) if item["id"] == after), 0)
    limit = int(request.query_params.get("limit", "10"))
    page = items[start : start + min(limit, 2)]  # small pages so pagination is exercised
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "has_more": start + len(page) < len(items),
            "url": f"/v1/checkout/sessions/{session}/line_items",
        }
    )


def fake_stripe() -> Starlette:
    app = Starlette(
        routes=[Route("/v1/checkout/sessions/{session}/line_items", line_items, methods=["GET"])]
    )
    app.state.requests = []
    return app


@pytest.fixture(scope="module")
def stripe_api() -> Iterator[str]:
    with run_asgi(fake_stripe()) as url:
        yield url


class TestHints:
    async def test_price_metadata(self, stripe_api: str) -> None:
        hints = await checkout_template_hints("cs_price", api_key=API_KEY, api_base=stripe_api)
        assert hints == [
            LineItemHint(
                price_id="price_line1",
                price_template_id=12,
                product_template_id=None,
                quantity=1,
            )
        ]
        assert hints[0].template_id == 12

    async def test_expanded_product_metadata(self, stripe_api: str) -> None:
        hints = await checkout_template_hints("cs_product", api_key=API_KEY, api_base=stripe_api)
        assert hints == [
            LineItemHint(
                price_id="price_line2",
                price_template_id=None,
                product_template_id=13,
                quantity=3,
            )
        ]
        assert hints[0].template_id == 13

    async def test_no_metadata(self, stripe_api: str) -> None:
        [hint] = await checkout_template_hints("cs_none", api_key=API_KEY, api_base=stripe_api)
        assert (hint.price_id, hint.template_id) == ("price_line3", None)

    async def test_every_page_is_read(self, stripe_api: str) -> None:
        hints = await checkout_template_hints("cs_many", api_key=API_KEY, api_base=stripe_api)
        assert [h.price_id for h in hints] == [f"price_line{i}" for i in range(5)]

    async def test_empty_session(self, stripe_api: str) -> None:
        assert await checkout_template_hints("cs_empty", api_key=API_KEY, api_base=stripe_api) == []

    async def test_shared_http_client_is_reused_and_left_open(self, stripe_api: str) -> None:
        client = make_http_client()
        try:
            for session in ("cs_price", "cs_none"):
                await checkout_template_hints(
                    session, api_key=API_KEY, api_base=stripe_api, http_client=client
                )
            assert not client._client_async.is_closed
        finally:
            await client.close_async()  # type: ignore[no-untyped-call]


class TestErrors:
    async def test_unknown_session_is_permanent(self, stripe_api: str) -> None:
        with pytest.raises(PermanentStripeError, match=r"HTTP 404.*resource_missing"):
            await checkout_template_hints("cs_missing", api_key=API_KEY, api_base=stripe_api)

    async def test_bad_key_is_permanent_and_never_shown(
        self, stripe_api: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        wrong = "sk_test_wrong_key_never_to_be_seen"
        with pytest.raises(PermanentStripeError, match="HTTP 401") as info:
            await checkout_template_hints("cs_price", api_key=wrong, api_base=stripe_api)
        shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
        assert wrong not in shown
        assert "[redacted]" in shown
        assert wrong not in caplog.text

    async def test_server_error_is_transient(self, stripe_api: str) -> None:
        with pytest.raises(TransientStripeError, match="HTTP 500"):
            await checkout_template_hints("cs_boom", api_key=API_KEY, api_base=stripe_api)

    async def test_rate_limit_is_transient(self, stripe_api: str) -> None:
        with pytest.raises(TransientStripeError, match="HTTP 429"):
            await checkout_template_hints("cs_busy", api_key=API_KEY, api_base=stripe_api)

    async def test_server_error_is_not_retried_by_the_library(self) -> None:
        # The worker owns the retry policy: the library makes exactly one request.
        app = fake_stripe()
        with run_asgi(app) as url, pytest.raises(TransientStripeError):
            await checkout_template_hints("cs_boom", api_key=API_KEY, api_base=url)
        assert len(app.state.requests) == 1

    async def test_connection_refused_is_transient(self) -> None:
        with run_asgi(fake_stripe()) as url:
            pass  # the server is gone: its port now refuses connections
        with pytest.raises(TransientStripeError, match="APIConnectionError"):
            await checkout_template_hints("cs_price", api_key=API_KEY, api_base=url)

    async def test_bad_template_metadata_is_permanent(self, stripe_api: str) -> None:
        with pytest.raises(PermanentStripeError, match="cryptolens_template_id"):
            await checkout_template_hints("cs_bad_metadata", api_key=API_KEY, api_base=stripe_api)

    async def test_missing_key_is_permanent(self, stripe_api: str) -> None:
        with pytest.raises(PermanentStripeError, match="no Stripe API key"):
            await checkout_template_hints("cs_price", api_key="", api_base=stripe_api)

    def test_errors_share_one_base(self) -> None:
        assert issubclass(TransientStripeError, StripeApiError)
        assert issubclass(PermanentStripeError, StripeApiError)


class TestSubscriptionStartHints:
    """What a subscription's key creation asks instead of waiting, against the stand-in
    of tests/fixtures/fake_stripe.py (the one the start-order matrix uses)."""

    async def test_the_session_that_created_it_and_the_subscription(
        self, fake_stripe: FakeStripe
    ) -> None:
        sub = b.obj(b.subscription(metadata={"cryptolens_template_id": "4"}))
        sub["items"]["data"][0]["price"]["metadata"] = {"cryptolens_template_id": "6"}
        fake_stripe.subscription_objects[b.SUB] = sub
        session = b.obj(b.checkout_session(mode="subscription", metadata=TEMPLATE_5))
        other = {**session, "id": "cs_other", "subscription": "sub_other", "metadata": {}}
        # An expired session of the same subscription is listed after the complete one.
        expired = {**session, "id": "cs_expired", "status": "expired", "metadata": {}}
        fake_stripe.checkout_sessions += [expired, other, session]
        async with contextlib.aclosing(ClosingClient()) as client:
            hints = await subscription_start_hints(
                b.SUB, api_key=FAKE_KEY, api_base=fake_stripe.url, http_client=client.http
            )
        assert (hints.session, hints.subscription) == (5, 4)
        assert [(h.price_id, h.price_template_id) for h in hints.items] == [(b.PRICE, 6)]

    async def test_a_subscription_made_without_checkout_has_no_session(
        self, fake_stripe: FakeStripe
    ) -> None:
        fake_stripe.subscription_objects[b.SUB] = b.obj(b.subscription())
        async with contextlib.aclosing(ClosingClient()) as client:
            hints = await subscription_start_hints(
                b.SUB, api_key=FAKE_KEY, api_base=fake_stripe.url, http_client=client.http
            )
        assert (hints.session, hints.subscription) == (None, None)
        assert fake_stripe.session_lists == 1

    async def test_an_unknown_subscription_is_permanent_and_shows_no_key(
        self, fake_stripe: FakeStripe
    ) -> None:
        async with contextlib.aclosing(ClosingClient()) as client:
            with pytest.raises(PermanentStripeError, match="HTTP 404") as caught:
                await subscription_start_hints(
                    "sub_missing",
                    api_key=FAKE_KEY,
                    api_base=fake_stripe.url,
                    http_client=client.http,
                )
        assert FAKE_KEY not in str(caught.value)


TEMPLATE_5 = {"cryptolens_template_id": "5"}


class ClosingClient:
    """A shared library client, closed at the end (as the worker's lifespan does)."""

    def __init__(self) -> None:
        self.http = make_http_client()

    async def aclose(self) -> None:
        await self.http.close_async()  # type: ignore[no-untyped-call]
