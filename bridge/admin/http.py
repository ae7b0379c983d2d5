"""The admin page's HTTP edge: what a request must be before any route runs, forms and
query values read under the same limits, and the headers every answer carries."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A form here holds a CSRF token and a token or a key: a few hundred bytes. Anything
# larger is refused unread, so no stranger keeps a web process parsing.
FORM_LIMIT = 4096
_MAX_FIELDS = 8

# Pages may not be framed, may load nothing from elsewhere, and are never cached (they
# show license keys).
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class OddInput:
    """Refuses, before any route runs, what no page takes: a body announced over
    :data:`FORM_LIMIT` (413) and a NUL in the path or the query (400: PostgreSQL refuses
    NUL in a string, which would be a 500 further in)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            length = request.headers.get("content-length", "")
            # Its length first: int() of thousands of digits raises.
            if length.isdigit() and (len(length) > 9 or int(length) > FORM_LIMIT):
                await Response("body too large", 413)(scope, receive, send)
                return
            query = request.query_params.multi_items()
            if "\x00" in scope["path"] or any("\x00" in k + v for k, v in query):
                await Response("NUL in the request", 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_form(request: Request) -> dict[str, str]:
    """The body as a URL-encoded form (what a browser's plain form sends): at most
    :data:`FORM_LIMIT` bytes, read no further (413), and :data:`_MAX_FIELDS` fields."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > FORM_LIMIT:
                raise HTTPException(413, f"a form here is at most {FORM_LIMIT} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "the body ended early") from None
    try:
        pairs = parse_qsl(
            b"".join(chunks).decode(), keep_blank_values=True, max_num_fields=_MAX_FIELDS
        )
    except ValueError:  # not UTF-8, or too many fields
        raise HTTPException(400, "bad form") from None
    if any("\x00" in name + value for name, value in pairs):
        raise HTTPException(400, "NUL in the form")
    return dict(reversed(pairs))  # a field given twice: its first value


def read_query(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise HTTPException(400, f"which one? give ?{name}=")
    return value
