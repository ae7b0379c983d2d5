"""The transport under :class:`~bridge.cryptolens.client.CryptolensClient`: one POST per
Web API 3 method, its reply checked and its failures classified.

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
from collections.abc import Mapping
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


class Transport:
    """One Web API 3 call at a time (:meth:`call`) and the typed reading of its reply.
    Every method raises only :class:`CryptolensError`s."""

    def __init__(self, http: FormPoster, *, token: str, base_url: str = DEFAULT_BASE_URL) -> None:
        self._http = http
        self.__token = token
        self.base_url = _checked(base_url if base_url.endswith("/") else base_url + "/")

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"{type(self).__name__}(base_url={self.base_url!r}, token=[redacted])"

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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
