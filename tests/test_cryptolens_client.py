"""The client against fakes at the transport: what it sends, and how each failure is classified.

Most fakes are ``httpx.MockTransport``s behind the httpx adapter; ``TestPoolErrors`` raises
the pool's own errors. The same client runs against the sandbox over real HTTP in
test_cryptolens_contract.py, and the pool itself over sockets in test_cryptolens_http.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import pytest

from bridge.cryptolens import (
    AccessDenied,
    CryptolensClient,
    InvalidInput,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Refused,
    Transient,
)
from bridge.cryptolens.http import (
    ConnectFailed,
    ConnectionLost,
    HTTPError,
    NotSent,
    PoolTimeout,
    ProtocolError,
    ReplyTimeout,
    Response,
)
from bridge.cryptolens.models import EventInput, TimeRange

TOKEN = "tok_secret_value_1234"
Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler) -> CryptolensClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return CryptolensClient(http, token=TOKEN, base_url="https://api.example/api")


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


class TestWire:
    async def test_posts_form_with_pascal_case_and_token_in_body(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={"result": 0, "message": None})

        client = client_for(handler)
        await client.extend_license(1001, "AAAAA-BBBBB", 30)
        request = seen[0]
        assert request.method == "POST"
        assert str(request.url) == "https://api.example/api/key/ExtendLicense"
        assert "token" not in str(request.url)
        assert form(request) == {
            "ProductId": "1001",
            "Key": "AAAAA-BBBBB",
            "NoOfDays": "30",
            "token": TOKEN,
        }

    async def test_none_is_left_out_and_booleans_are_lower_case(self) -> None:
        seen: list[dict[str, str]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(form(request))
            return httpx.Response(200, json={"result": 0, "message": ""})

        client = client_for(handler)
        await client.register_event(product_id=3, event_name="purchase", value=2530)
        assert seen[0] == {
            "ProductId": "3",
            "EventName": "purchase",
            "Value": "2530",
            "token": TOKEN,
        }
        assert "None" not in seen[0].values()
        await client.call("key/GetKey", {"ProductId": 3, "Key": "K", "Metadata": True})
        assert seen[1]["Metadata"] == "true"

    async def test_register_events_sends_a_json_list(self) -> None:
        seen: list[dict[str, str]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(form(request))
            return httpx.Response(200, json={"result": 0, "message": ""})

        await client_for(handler).register_events(
            [EventInput(event_name="a", value=1), EventInput(event_name="b", currency="USD")],
            product_id=3,
        )
        assert seen[0]["Events"] == (
            '[{"EventName":"a","Value":1},{"EventName":"b","Currency":"USD"}]'
        )

    async def test_time_filter_and_states_are_json(self) -> None:
        seen: list[dict[str, str]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(form(request))
            return httpx.Response(200, json={"result": 0, "message": None, "logs": []})

        await client_for(handler).get_web_api_log(
            product_id=3, states=[3010, 7019], time=TimeRange(gte=100, lt=200)
        )
        assert seen[0]["States"] == "[3010, 7019]"
        assert seen[0]["Time"] == '{"gte":100,"lt":200}'


class TestResults:
    async def test_get_key_parses_lower_camel_and_utc(self) -> None:
        body = {
            "productId": 1234,
            "licenseKey": {
                "productId": 1234,
                "id": 1,
                "key": "AAAAA-AAAAA-AAAAA-AAAAA",
                "created": "2015-08-27T00:00:00",
                "expires": "2018-11-03T00:00:00",
                "period": 1023,
                "notes": "n",
                "block": False,
                "customer": {
                    "id": 3,
                    "name": "Bob",
                    "email": "bob@example.com",
                    "companyName": "SKM",
                    "created": "2015-09-04T16:11:14.453",
                },
                "newFieldFromTheFuture": 1,
            },
            "result": 0,
            "message": "",
        }
        client = client_for(lambda _: httpx.Response(200, json=body))
        key = await client.get_key(1234, "AAAAA-AAAAA-AAAAA-AAAAA")
        assert key.expires == datetime(2018, 11, 3, tzinfo=UTC)
        assert key.customer is not None and key.customer.company_name == "SKM"
        assert key.period == 1023

    async def test_block_reports_not_changed(self) -> None:
        client = client_for(
            lambda _: httpx.Response(200, json={"result": 0, "message": "Not changed"})
        )
        assert await client.block_key(1, "K") is False

    async def test_template_period_from_parameters(self) -> None:
        body = {
            "licenseTemplates": [
                {"id": 5, "name": "t", "productId": 3, "parameters": '{"ProductId":3,"Period":30}'},
            ],
            "result": 0,
            "message": None,
        }
        templates = await client_for(
            lambda _: httpx.Response(200, json=body)
        ).get_license_templates()
        assert templates[0].product_id == 3
        assert templates[0].period() == 30


def _raise(exc: Exception) -> Handler:
    def handler(_: httpx.Request) -> httpx.Response:
        raise exc

    return handler


class TestErrors:
    @pytest.mark.parametrize(
        ("message", "error"),
        [
            ("Access denied.", AccessDenied),
            ("Could not find the key.", NotFound),
            ("Could not find the license template.", NotFound),
            ("The input parameters were incorrect.", InvalidInput),
            ("The notes field cannot be more than 500 characters.", InvalidInput),
            ("Something else.", Refused),
        ],
    )
    async def test_result_one_is_refused_with_the_message_kept(
        self, message: str, error: type[Refused]
    ) -> None:
        client = client_for(lambda _: httpx.Response(200, json={"result": 1, "message": message}))
        with pytest.raises(error) as caught:
            await client.block_key(1, "K")
        assert caught.value.message == message
        assert caught.type is error

    @pytest.mark.parametrize(
        "handler",
        [
            _raise(httpx.ConnectError("refused")),
            _raise(httpx.ConnectTimeout("slow")),
            lambda _: httpx.Response(503),
        ],
    )
    async def test_not_sent_or_not_processed_is_transient(self, handler: Handler) -> None:
        with pytest.raises(Transient) as caught:
            await client_for(handler).extend_license(1, "K", 1)
        assert not isinstance(caught.value, OutcomeUnknown)

    async def test_429_is_rate_limited_with_retry_after(self) -> None:
        client = client_for(lambda _: httpx.Response(429, headers={"Retry-After": "2"}))
        with pytest.raises(RateLimited) as caught:
            await client.extend_license(1, "K", 1)
        assert caught.value.retry_after == 2.0

    @pytest.mark.parametrize(
        "handler",
        [
            _raise(httpx.ReadTimeout("no reply")),
            _raise(httpx.RemoteProtocolError("peer closed")),
            _raise(httpx.ReadError("reset")),
            lambda _: httpx.Response(504),
            lambda _: httpx.Response(502),
            lambda _: httpx.Response(500),
            lambda _: httpx.Response(200, text="<html>oops</html>"),
            lambda _: httpx.Response(200, json={"message": "server error"}),
        ],
    )
    async def test_maybe_applied_is_outcome_unknown(self, handler: Handler) -> None:
        with pytest.raises(OutcomeUnknown):
            await client_for(handler).extend_license(1, "K", 1)

    async def test_token_never_in_errors_or_repr(self) -> None:
        client = client_for(_raise(httpx.ReadTimeout(f"timeout token={TOKEN}")))
        with pytest.raises(OutcomeUnknown) as caught:
            await client.extend_license(1, "K", 1)
        assert TOKEN not in str(caught.value)
        assert TOKEN not in repr(caught.value)
        assert TOKEN not in repr(client)
        denied = client_for(
            lambda _: httpx.Response(200, json={"result": 1, "message": "Access denied."})
        )
        with pytest.raises(AccessDenied) as refused:
            await denied.get_key(1, "K")
        assert TOKEN not in str(refused.value)


class FailingPoster:
    """A transport that fails every call with ``error``, recording the forms it was given."""

    def __init__(self, error: HTTPError) -> None:
        self.error = error
        self.forms: list[Mapping[str, str]] = []

    async def post_form(self, url: str, form: Mapping[str, str]) -> Response:
        self.forms.append(form)
        raise self.error

    async def aclose(self) -> None:
        pass


class TestPoolErrors:
    """The pool's errors meet the same classification as httpx's."""

    @pytest.mark.parametrize(
        "error",
        [
            ConnectFailed("ConnectionRefusedError"),
            ConnectFailed("connect timeout"),
            PoolTimeout("no free connection"),
            NotSent("connection closed before the request was written"),
        ],
    )
    async def test_not_sent_is_transient(self, error: HTTPError) -> None:
        client = CryptolensClient(FailingPoster(error), token=TOKEN, base_url="https://x/api/")
        with pytest.raises(Transient) as caught:
            await client.extend_license(1, "K", 1)
        assert not isinstance(caught.value, OutcomeUnknown)

    @pytest.mark.parametrize(
        ("error", "words"),
        [
            (ReplyTimeout("no complete reply"), "no reply in time"),
            (ConnectionLost("closed before the reply was complete"), "connection lost"),
            (ProtocolError("unreadable reply"), "connection lost"),
        ],
    )
    async def test_maybe_sent_is_outcome_unknown(self, error: HTTPError, words: str) -> None:
        poster = FailingPoster(error)
        client = CryptolensClient(poster, token=TOKEN, base_url="https://x/api/")
        with pytest.raises(OutcomeUnknown, match=words) as caught:
            await client.extend_license(1, "K", 1)
        assert TOKEN not in str(caught.value)
        assert poster.forms[0]["token"] == TOKEN
