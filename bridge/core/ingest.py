"""What every webhook endpoint does before it trusts a byte: read the body under a bound,
and refuse a request with a status and an error code before anything is stored.

Stripe's endpoint (raw ASGI, the hot path), the CRMs' (HubSpot, Pipedrive, the generic
contract) and ``POST /usage`` read their bodies here and raise :class:`Refusal`; each
endpoint answers it in its own JSON shape and notes it in the delivery log
(``bridge.store.deliveries``).
"""

from __future__ import annotations

from starlette.types import Receive, Scope


class Refusal(Exception):
    """A request answered with an error before anything is stored.

    ``status`` is the HTTP status; ``error`` the code the body names (empty: no body, as
    for a client that went away); ``detail`` the words for a person; ``cause`` the
    delivery log's reason, finer than ``error`` for signatures (no_header, timestamp...).
    """

    def __init__(self, status: int, error: str = "", detail: str = "", cause: str = "") -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.cause = cause or error


def too_large(limit: int) -> Refusal:
    return Refusal(413, "too_large", f"body over {limit} bytes")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request's body, refused (413) past ``limit`` bytes, declared or sent, before
    more than ``limit`` is held; a client that goes away mid-body is refused with an
    empty 400 (nobody is there to read it)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise too_large(limit)
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise Refusal(400)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)
