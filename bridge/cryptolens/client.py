"""An async client for the part of Cryptolens Web API 3 that the bridge uses.

It speaks the real protocol: POST, form-encoded, PascalCase parameter names, the access
token in every call's body (never in a URL, so it cannot leak through access logs), lower
camel JSON back, and ``result != 0`` is an error even with HTTP 200. One instance wraps
the process's one ``httpx.AsyncClient`` (see :func:`make_http_client`).

Failures are classified into the tree in :mod:`bridge.cryptolens.errors`; the important
line is between *transient* (certainly not applied) and *outcome unknown* (maybe applied).
httpx's exceptions fall on either side of it by whether a byte of the request may have
reached the service:

    not sent: Transient                 maybe sent: OutcomeUnknown
    ├── ConnectError, ConnectTimeout    ├── ReadTimeout, WriteTimeout
    ├── PoolTimeout                     ├── RemoteProtocolError (closed after the write)
    ├── ProxyError (CONNECT refused)    ├── ReadError, WriteError, other transport errors
    └── UnsupportedProtocol, InvalidURL └── any other protocol or decoding error

httpx never re-sends a request that was written. Before a request, httpcore drops a
pooled connection the server has closed (its socket reads as ready while idle) or that
idled past ``keepalive_expiry``, and moves a request to another connection only when the
one it was given could not take it (``ConnectionNotAvailable``, raised before writing;
for HTTP/2 also streams above a GOAWAY's last stream id, which the server never saw).
"""

from __future__ import annotations

import importlib.util
import json
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from bridge.core import tracing
from bridge.core.metrics import CRYPTOLENS_CALLS as CALLS
from bridge.cryptolens.errors import (
    CryptolensError,
    OutcomeUnknown,
    RateLimited,
    Refused,
    Transient,
    refused_from_message,
)
from bridge.cryptolens.models import (
    AddedCustomer,
    AddedDataObject,
    CreatedKey,
    Customer,
    DataObject,
    Event,
    EventInput,
    KeysPage,
    LicenseKey,
    LicenseTemplate,
    TimeRange,
    WebApiLog,
)
from bridge.cryptolens.pools import Clients, FormPoster

DEFAULT_BASE_URL = "https://api.cryptolens.io/api/"
# Seconds a connection may idle in the pool: below uvicorn's 5 s and most servers'
# keep-alive timeouts, so a server rarely closes one just as a request is written on it
# (that request would be an unknown outcome).
KEEPALIVE_EXPIRY = 4.0
# HTTP/2 only where the h2 package is installed (httpx[http2]): one connection carries
# every call, and a server's GOAWAY says which calls it never saw.
HTTP2 = importlib.util.find_spec("h2") is not None

_M = TypeVar("_M", bound=BaseModel)
Param = str | int | bool | None

# Raised before any byte of the request could reach the service.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,  # the proxy refused the tunnel: nothing reached Cryptolens
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
)


def make_http_client(
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 20.0,
    max_connections: int = 100,
    pool_timeout: float | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """The process-wide HTTP client for Cryptolens: made once, closed at exit.

    ``read_timeout`` bounds each wait for the reply's bytes (and each write);
    ``pool_timeout`` (default: ``connect_timeout``) the wait for one of
    ``max_connections``. Proxies come from HTTPS_PROXY / NO_PROXY and a CA bundle from
    SSL_CERT_FILE / SSL_CERT_DIR (``trust_env``); ``verify`` is for tests.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect_timeout,
            read=read_timeout,
            write=read_timeout,
            pool=connect_timeout if pool_timeout is None else pool_timeout,
        ),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        ),
        http2=HTTP2,
        trust_env=True,
        verify=verify,
        headers={"User-Agent": "cryptolens-bridge", "Accept": "application/json"},
    )


def make_http_clients(
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 20.0,
    max_connections: int = 100,
) -> Clients:
    """The worker's clients: ``max_connections`` over a few of :func:`make_http_client`,
    taken in turn (see :mod:`bridge.cryptolens.pools` for why)."""
    return Clients.split(
        max_connections,
        lambda n: make_http_client(
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_connections=n
        ),
    )


def classify(method: str, exc: Exception) -> CryptolensError:
    """An httpx failure as the error the retry logic acts on; its words name only the
    exception's type, never the request (whose body holds the token)."""
    kind = type(exc).__name__
    if isinstance(exc, _NOT_SENT):
        return Transient(method, f"not sent: {kind}")
    if isinstance(exc, httpx.TimeoutException):  # read or write: bytes may have gone
        return OutcomeUnknown(method, f"no reply in time: {kind}")
    # Closed or reset after the write, an unreadable reply: it may have been applied.
    return OutcomeUnknown(method, f"connection lost: {kind}")


def _checked(base_url: str) -> str:
    """The base URL, refused here if no call could be sent to it (a configuration error)."""
    try:
        url = httpx.URL(base_url)
        port = url.port
    except httpx.InvalidURL:
        url, port = None, None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"not a usable Cryptolens API URL: {base_url!r}")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"not a usable Cryptolens API URL (port): {base_url!r}")
    return base_url


def _wire(value: Param) -> str | None:
    """Form values as the service binds them: booleans lower-case, None left out."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class CryptolensClient:
    """Typed calls to Web API 3. Every method raises only :class:`CryptolensError`s."""

    def __init__(self, http: FormPoster, *, token: str, base_url: str = DEFAULT_BASE_URL) -> None:
        self._http = http
        self.__token = token
        self.base_url = _checked(base_url if base_url.endswith("/") else base_url + "/")

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"CryptolensClient(base_url={self.base_url!r}, token=[redacted])"

    # -- transport -------------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Param]) -> dict[str, Any]:
        """POST one Web API method and return its JSON body once ``result == 0``."""
        form = {k: w for k, v in params.items() if (w := _wire(v)) is not None}
        form["token"] = self.__token
        if self._http.is_closed:  # shutting down: httpx would raise a RuntimeError
            raise Transient(method, "not sent: the HTTP client is closed")
        started = time.perf_counter()
        outcome = "ok"
        try:
            with tracing.span("cryptolens " + method, method=method):
                try:
                    response = await self._http.post(self.base_url + method, data=form)
                except (httpx.RequestError, httpx.InvalidURL) as exc:
                    raise classify(method, exc) from None
                return self._parse(method, response)
        except CryptolensError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            CALLS.labels(method=method, outcome=outcome).observe(time.perf_counter() - started)

    @staticmethod
    def _parse(method: str, response: httpx.Response) -> dict[str, Any]:
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

    async def create_key(
        self,
        product_id: int,
        parameters: Mapping[str, Any],
        *,
        notes: str,
        email: str | None = None,
        name: str | None = None,
        company: str | None = None,
    ) -> CreatedKey:
        """CreateKey with a template's CreateKey parameters (``Period``, ``F1``..``F8``,
        ``MaxNoOfMachines``, ...; its ``Notes`` and customer are replaced by ours),
        ``notes``, and, given ``email``, the buyer (AddOrUseExistingCustomer: the
        customer with that email, or a new one; needs the AddCustomer permission too)."""
        method = "key/CreateKey"
        params: dict[str, Param] = {
            name_: _template_value(value)
            for name_, value in parameters.items()
            if name_ in CREATE_KEY_PARAMETERS
        }
        params |= {"ProductId": product_id, "Notes": notes}
        if email:
            params |= {
                "AddOrUseExistingCustomer": True,
                "Email": email,
                "Name": name or "",
                "CompanyName": company or "",
            }
        body = await self.call(method, params)
        return self._model(method, CreatedKey, body)

    async def get_keys(
        self, product_id: int, search_query: str | None = None, page: int = 1
    ) -> KeysPage:
        """One page (from 1) of the product's keys that ``search_query`` selects, 99 a
        page in id order; ``page_count`` says how many pages there are."""
        method = "product/GetKeys"
        params: dict[str, Param] = {
            "ProductId": product_id,
            "SearchQuery": search_query,
            "Page": page,
        }
        body = await self.call(method, params)
        return self._model(method, KeysPage, body)

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

    # -- data objects (on a key) ----------------------------------------------------------

    async def add_data_object_to_key(
        self,
        product_id: int,
        key: str,
        *,
        name: str,
        int_value: int = 0,
        string_value: str | None = None,
        check_for_duplicates: bool = False,
    ) -> int:
        """Add a data object to the key; returns its id."""
        method = "data/AddDataObjectToKey"
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "Name": name,
            "IntValue": int_value,
            "StringValue": string_value,
            "CheckForDuplicates": check_for_duplicates or None,
        }
        body = await self.call(method, params)
        return self._model(method, AddedDataObject, body).id

    async def increment_int_value_to_key(
        self, product_id: int, key: str, *, value: int, name: str | None = None, object_id: int = 0
    ) -> None:
        """Add |value| to the key's object ``object_id`` (or, if 0, the one named ``name``)."""
        await self.call(
            "data/IncrementIntValueToKey", _object(product_id, key, object_id, name, value)
        )

    async def decrement_int_value_to_key(
        self, product_id: int, key: str, *, value: int, name: str | None = None, object_id: int = 0
    ) -> None:
        await self.call(
            "data/DecrementIntValueToKey", _object(product_id, key, object_id, name, value)
        )

    async def set_int_value_to_key(
        self, product_id: int, key: str, *, value: int, name: str | None = None, object_id: int = 0
    ) -> None:
        await self.call("data/SetIntValueToKey", _object(product_id, key, object_id, name, value))

    async def remove_data_object_to_key(
        self, product_id: int, key: str, *, name: str | None = None, object_id: int = 0
    ) -> None:
        await self.call(
            "data/RemoveDataObjectToKey", _object(product_id, key, object_id, name, None)
        )

    async def list_data_objects_to_key(
        self, product_id: int, key: str, *, contains: str | None = None
    ) -> list[DataObject]:
        """The key's data objects (names containing ``contains``, if given)."""
        method = "data/ListDataObjectsToKey"
        params: dict[str, Param] = {"ProductId": product_id, "Key": key, "Contains": contains}
        body = await self.call(method, params)
        return self._models(method, DataObject, body.get("dataObjects", body.get("DataObjects")))

    async def list_data_objects(
        self,
        *,
        referencer_type: int = 0,
        referencer_id: int = 0,
        contains: str | None = None,
        show_all: bool = False,
    ) -> list[DataObject]:
        """Objects of the account (type 0), a product (1) or a key by its global id (2);
        ``show_all``: every object the token may see, with its referencer."""
        method = "data/ListDataObjects"
        params: dict[str, Param] = {
            "ReferencerType": referencer_type,
            "ReferencerId": referencer_id,
            "Contains": contains,
            "ShowAll": show_all or None,
        }
        body = await self.call(method, params)
        return self._models(method, DataObject, body.get("dataObjects", body.get("DataObjects")))

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


def _object(
    product_id: int, key: str, id_: int, name: str | None, value: int | None
) -> dict[str, Param]:
    """A key's data object named by id, else (id 0) by name, as the ...ToKey paths take it."""
    return {
        "ProductId": product_id,
        "Key": key,
        "Id": id_ or None,
        "Name": None if id_ else name,
        "IntValue": value,
    }


# A template's CreateKey parameters that the bridge passes on (GetLicenseTemplates'
# ``parameters``): the key's own settings; never its customer or notes.
CREATE_KEY_PARAMETERS = frozenset(
    {
        "Period",
        *(f"F{i}" for i in range(1, 9)),
        "Block",
        "TrialActivation",
        "MaxNoOfMachines",
        "AllowedMachines",
        "ResellerId",
    }
)


def _template_value(value: Any) -> Param:
    return value if isinstance(value, str | int | bool) or value is None else str(value)


def _changed(body: Mapping[str, Any]) -> bool:
    message = body.get("message", body.get("Message"))
    return not (isinstance(message, str) and message.strip().lower() == "not changed")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


__all__ = [
    "DEFAULT_BASE_URL",
    "CryptolensClient",
    "CryptolensError",
    "classify",
    "make_http_client",
]
