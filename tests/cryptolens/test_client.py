"""The client against fakes at the transport: what it sends, and how each failure is classified.

The fakes are ``httpx.MockTransport``s. The same client runs against the sandbox over real
HTTP in test_cryptolens_contract.py, and against scripted servers over sockets (keep-alive,
timeouts, pool waits, TLS, proxies) in test_cryptolens_transport.py.
"""

from __future__ import annotations

from collections.abc import Callable
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
from bridge.cryptolens.models import EventInput, TimeRange
from bridge.cryptolens.transport import classify

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
            _raise(httpx.PoolTimeout("every connection busy")),
            _raise(httpx.ProxyError("the proxy refused the tunnel")),
            _raise(httpx.UnsupportedProtocol("ftp://")),
            lambda _: httpx.Response(503),
        ],
        ids=["connect", "connect-timeout", "pool-timeout", "proxy", "scheme", "503"],
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
            _raise(httpx.WriteTimeout("stuck writing")),
            _raise(httpx.RemoteProtocolError("peer closed")),
            _raise(httpx.LocalProtocolError("illegal")),
            _raise(httpx.ReadError("reset")),
            _raise(httpx.WriteError("broken pipe")),
            _raise(httpx.DecodingError("bad gzip")),
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


class TestClassify:
    """Which side of the line each httpx failure falls on, and what the error says."""

    @pytest.mark.parametrize(
        ("error", "words"),
        [
            (httpx.ConnectError("refused"), "not sent: ConnectError"),
            (httpx.PoolTimeout("busy"), "not sent: PoolTimeout"),
            (httpx.InvalidURL("bad port"), "not sent: InvalidURL"),
            (httpx.ReadTimeout("slow"), "no reply in time: ReadTimeout"),
            (httpx.WriteTimeout("slow"), "no reply in time: WriteTimeout"),
            (httpx.RemoteProtocolError("closed"), "connection lost: RemoteProtocolError"),
            (httpx.ReadError("reset"), "connection lost: ReadError"),
        ],
    )
    def test_words_name_the_failure_not_the_request(self, error: Exception, words: str) -> None:
        classified = classify("key/ExtendLicense", error)
        assert str(classified) == f"key/ExtendLicense: {words}"
        assert isinstance(classified, Transient) == words.startswith("not sent")
        assert isinstance(classified, OutcomeUnknown) != words.startswith("not sent")

    async def test_a_closed_client_sends_nothing(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={"result": 0, "message": ""})

        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        client = CryptolensClient(http, token=TOKEN, base_url="https://api.example/api")
        await http.aclose()
        with pytest.raises(Transient, match="closed") as caught:
            await client.extend_license(1, "K", 1)
        assert not isinstance(caught.value, OutcomeUnknown)
        assert seen == []
