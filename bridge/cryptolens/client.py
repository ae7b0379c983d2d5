"""An async client for the part of Cryptolens Web API 3 that the bridge uses.

It speaks the real protocol: POST, form-encoded, PascalCase parameter names, the access
token in every call's body (never in a URL, so it cannot leak through access logs), lower
camel JSON back, and ``result != 0`` is an error even with HTTP 200. One instance wraps
one transport shared by the whole process: the lean pool of :mod:`bridge.cryptolens.http`
(see :func:`make_http_client`), or an ``httpx.AsyncClient`` (tests' ``MockTransport``, proxies).

Failures are classified into the tree in :mod:`bridge.cryptolens.errors`; the important
line is between *transient* (certainly not applied) and *outcome unknown* (maybe applied).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from bridge.cryptolens.errors import (
    CryptolensError,
    OutcomeUnknown,
    RateLimited,
    Refused,
    Transient,
    refused_from_message,
)
from bridge.cryptolens.http import (
    ConnectFailed,
    ConnectionLost,
    FormPoster,
    HTTPPool,
    MaybeSent,
    NotSent,
    PoolTimeout,
    ReplyTimeout,
    Response,
)
from bridge.cryptolens.models import (
    AddedCustomer,
    CreatedKey,
    Customer,
    Event,
    EventInput,
    LicenseKey,
    LicenseTemplate,
    TimeRange,
    WebApiLog,
)

DEFAULT_BASE_URL = "https://api.cryptolens.io/api/"

_M = TypeVar("_M", bound=BaseModel)
Param = str | int | bool | None


def make_http_client(
    *, connect_timeout: float = 5.0, read_timeout: float = 20.0, max_connections: int = 50
) -> HTTPPool:
    """The process-wide HTTP client: explicit timeouts, pooled keep-alive connections."""
    return HTTPPool(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_connections=max_connections,
    )


class HttpxPoster:
    """An ``httpx.AsyncClient`` as a :class:`FormPoster`: its failures sorted by whether the
    request may have been sent, as :class:`HTTPPool` sorts its own."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post_form(self, url: str, form: Mapping[str, str]) -> Response:
        try:
            reply = await self.client.post(url, data=form)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ConnectFailed(type(exc).__name__) from None
        except httpx.PoolTimeout as exc:
            raise PoolTimeout(type(exc).__name__) from None
        except httpx.TimeoutException as exc:
            # Read/write timeout: the request was (at least partly) sent.
            raise ReplyTimeout(type(exc).__name__) from None
        except httpx.TransportError as exc:
            # Reset or closed mid-exchange, or anything else: it may have been sent.
            raise ConnectionLost(type(exc).__name__) from None
        headers = {k.lower(): v for k, v in reply.headers.items()}
        return Response(reply.status_code, headers, reply.content)

    async def aclose(self) -> None:
        await self.client.aclose()


def _wire(value: Param) -> str | None:
    """Form values as the service binds them: booleans lower-case, None left out."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class CryptolensClient:
    """Typed calls to Web API 3. Every method raises only :class:`CryptolensError`s."""

    def __init__(
        self,
        http: FormPoster | httpx.AsyncClient,
        *,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
    ) -> None:
        self._http = HttpxPoster(http) if isinstance(http, httpx.AsyncClient) else http
        self.__token = token
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"CryptolensClient(base_url={self.base_url!r}, token=[redacted])"

    # -- transport -------------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Param]) -> dict[str, Any]:
        """POST one Web API method and return its JSON body once ``result == 0``."""
        form = {k: w for k, v in params.items() if (w := _wire(v)) is not None}
        form["token"] = self.__token
        try:
            response = await self._http.post_form(self.base_url + method, form)
        except NotSent as exc:
            # No byte of the request reached a socket.
            raise Transient(method, f"could not connect: {exc}") from None
        except ReplyTimeout as exc:
            # The request was (at least partly) sent.
            raise OutcomeUnknown(method, f"no reply in time: {exc}") from None
        except MaybeSent as exc:
            # Reset or closed mid-exchange: the service may have applied it.
            raise OutcomeUnknown(method, f"connection lost: {exc}") from None
        return self._parse(method, response)

    @staticmethod
    def _parse(method: str, response: Response) -> dict[str, Any]:
        status = response.status_code
        if status == 429:
            raise RateLimited(method, "rate limited (HTTP 429)", _retry_after(response))
        if status == 503:
            # 503 is answered before the application runs (overload, maintenance).
            raise Transient(method, "service unavailable (HTTP 503)")
        if status >= 500:
            # 500: the application failed mid-way; 502/504: a proxy gave up waiting. In all
            # three the service may have applied the request.
            raise OutcomeUnknown(method, f"HTTP {status} from the service")
        if status != 200:
            raise Refused(method, f"HTTP {status}: {response.text[:200]}")
        try:
            body = json.loads(response.content)
        except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
            raise OutcomeUnknown(method, "the reply is not JSON") from None
        if not isinstance(body, dict):
            raise OutcomeUnknown(method, "the reply is not a JSON object")
        result = body.get("result", body.get("Result"))
        message = body.get("message", body.get("Message"))
        if result is None:
            # "In rare cases, only a message is returned, in which case a server error has
            # occurred" (Media Types): we cannot tell whether it was applied.
            raise OutcomeUnknown(method, f"server error: {message}")
        if result != 0:
            raise refused_from_message(method, str(message or "refused"))
        return body

    @staticmethod
    def _model(method: str, model: type[_M], data: Any) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise OutcomeUnknown(method, f"unexpected reply shape: {exc.errors()[:1]}") from None

    def _models(self, method: str, model: type[_M], data: Any) -> list[_M]:
        if data is None:
            return []
        if not isinstance(data, list):
            raise OutcomeUnknown(method, "expected a list in the reply")
        return [self._model(method, model, item) for item in data]

    # -- key methods ---------------------------------------------------------------------

    async def create_key_from_template(self, template_id: int) -> CreatedKey:
        method = "key/CreateKeyFromTemplate"
        body = await self.call(method, {"LicenseTemplateId": template_id})
        return self._model(method, CreatedKey, body)

    async def get_key(self, product_id: int, key: str) -> LicenseKey:
        method = "key/GetKey"
        body = await self.call(method, {"ProductId": product_id, "Key": key, "ModelVersion": 3})
        data = body.get("licenseKey", body.get("LicenseKey"))
        if isinstance(data, str):  # SignMethod=1 answers base64; we never ask for it
            raise OutcomeUnknown(method, "signed string reply not supported")
        return self._model(method, LicenseKey, data)

    async def extend_license(self, product_id: int, key: str, days: int) -> None:
        params: dict[str, Param] = {"ProductId": product_id, "Key": key, "NoOfDays": days}
        await self.call("key/ExtendLicense", params)

    async def change_customer(self, product_id: int, key: str, customer_id: int) -> None:
        params: dict[str, Param] = {"ProductId": product_id, "Key": key, "CustomerId": customer_id}
        await self.call("key/ChangeCustomer", params)

    async def change_notes(self, product_id: int, key: str, notes: str) -> None:
        await self.call("key/ChangeNotes", {"ProductId": product_id, "Key": key, "Notes": notes})

    async def block_key(self, product_id: int, key: str) -> bool:
        """Block the key; True when it changed, False when it was blocked already."""
        body = await self.call("key/BlockKey", {"ProductId": product_id, "Key": key})
        return _changed(body)

    async def unblock_key(self, product_id: int, key: str) -> bool:
        body = await self.call("key/UnblockKey", {"ProductId": product_id, "Key": key})
        return _changed(body)

    # -- subscription ----------------------------------------------------------------------

    async def record_usage(self, product_id: int, key: str, amount: int) -> None:
        params: dict[str, Param] = {"ProductId": product_id, "Key": key, "Amount": amount}
        await self.call("subscription/RecordUsage", params)

    # -- analytics -----------------------------------------------------------------------

    async def register_event(
        self,
        *,
        product_id: int | None = None,
        key: str | None = None,
        machine_code: str | None = None,
        feature_name: str | None = None,
        event_name: str | None = None,
        value: int | None = None,
        currency: str | None = None,
        metadata: str | None = None,
    ) -> None:
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "MachineCode": machine_code,
            "FeatureName": feature_name,
            "EventName": event_name,
            "Value": value,
            "Currency": currency,
            "Metadata": metadata,
        }
        await self.call("ai/RegisterEvent", params)

    async def register_events(
        self,
        events: Sequence[EventInput],
        *,
        product_id: int | None = None,
        key: str | None = None,
        machine_code: str | None = None,
    ) -> None:
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "MachineCode": machine_code,
            "Events": json.dumps([e.wire() for e in events], separators=(",", ":")),
        }
        await self.call("ai/RegisterEvents", params)

    async def get_events(
        self,
        *,
        product_id: int | None = None,
        key: str | None = None,
        metadata: str | None = None,
        time: int | TimeRange | None = None,
        limit: int | None = None,
        starting_after: int | None = None,
        ending_before: int | None = None,
    ) -> list[Event]:
        method = "ai/GetEvents"
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "Metadata": metadata,
            "Time": time.wire() if isinstance(time, TimeRange) else time,
            "Limit": limit,
            "StartingAfter": starting_after,
            "EndingBefore": ending_before,
        }
        body = await self.call(method, params)
        return self._models(method, Event, body.get("events", body.get("Events")))

    async def get_web_api_log(
        self,
        *,
        product_id: int | None = None,
        key: str | None = None,
        states: Sequence[int] | None = None,
        time: TimeRange | None = None,
        limit: int | None = None,
        starting_after: int | None = None,
        ending_before: int | None = None,
    ) -> list[WebApiLog]:
        method = "ai/GetWebAPILog"
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "States": json.dumps(list(states)) if states else None,
            "Time": time.wire() if time else None,
            "Limit": limit,
            "StartingAfter": starting_after,
            "EndingBefore": ending_before,
        }
        body = await self.call(method, params)
        return self._models(method, WebApiLog, body.get("logs", body.get("Logs")))

    # -- customers and templates ---------------------------------------------------------

    async def add_customer(
        self, *, name: str, email: str, company_name: str, notes: str | None = None
    ) -> AddedCustomer:
        method = "customer/AddCustomer"
        params: dict[str, Param] = {
            "Name": name,
            "Email": email,
            "CompanyName": company_name,
            "Notes": notes,
        }
        body = await self.call(method, params)
        return self._model(method, AddedCustomer, body)

    async def get_customers(
        self, *, search: str | None = None, customer_id: int | None = None, limit: int | None = None
    ) -> list[Customer]:
        method = "customer/GetCustomers"
        params: dict[str, Param] = {"Search": search, "CustomerId": customer_id, "Limit": limit}
        body = await self.call(method, params)
        return self._models(method, Customer, body.get("customers", body.get("Customers")))

    async def get_license_templates(self) -> list[LicenseTemplate]:
        method = "licensetemplate/GetLicenseTemplates"
        body = await self.call(method, {})
        templates = body.get("licenseTemplates", body.get("LicenseTemplates"))
        return self._models(method, LicenseTemplate, templates)


def _changed(body: Mapping[str, Any]) -> bool:
    message = body.get("message", body.get("Message"))
    return not (isinstance(message, str) and message.strip().lower() == "not changed")


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


__all__ = [
    "DEFAULT_BASE_URL",
    "CryptolensClient",
    "CryptolensError",
    "HttpxPoster",
    "make_http_client",
]
