"""The worker's Cryptolens connections in a few httpx clients instead of one.

httpcore's connection pool walks every one of its connections each time a request
arrives or leaves (is it closed, expired — a readability check on its socket —, idle,
able to take this request). A launch burst keeps tens of connections open: measured
with ``bench --burst 200 --latency-ms 80`` and py-spy, that walk cost the worker more
CPU than everything else a purchase does, about 34 ms per purchase in all, and the
last key came after 7 s. The same connections spread over a few clients of ten
make each walk short. Requests take the clients in turn; each client is an ordinary
``httpx.AsyncClient`` (timeouts, proxies from the environment, TLS, the failures and
what they mean: all httpx's).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Protocol

import httpx

#: Connections per client: short walks, and still keep-alive reuse within each.
CONNECTIONS_PER_CLIENT = 10


class FormPoster(Protocol):
    """What :class:`~bridge.cryptolens.client.CryptolensClient` needs of its transport:
    one ``httpx.AsyncClient``, or :class:`Clients`."""

    @property
    def is_closed(self) -> bool: ...

    async def post(self, url: str, *, data: Mapping[str, str]) -> httpx.Response: ...


class Clients:
    """A few ``httpx.AsyncClient`` taken in turn, one request each."""

    def __init__(self, clients: Sequence[httpx.AsyncClient]) -> None:
        if not clients:
            raise ValueError("at least one client")
        self.clients = tuple(clients)
        self._turn = itertools.cycle(self.clients)

    @classmethod
    def split(cls, max_connections: int, make: Callable[[int], httpx.AsyncClient]) -> Clients:
        """``max_connections`` over clients of at most CONNECTIONS_PER_CLIENT each;
        ``make(n)`` builds one client of ``n`` connections."""
        count = max(1, -(-max_connections // CONNECTIONS_PER_CLIENT))
        return cls([make(max(1, max_connections // count)) for _ in range(count)])

    @property
    def is_closed(self) -> bool:
        return all(client.is_closed for client in self.clients)

    async def post(
        self,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        return await next(self._turn).post(url, data=data, content=content, headers=headers)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
