"""Who may use the admin page: one token, a signed session cookie, a CSRF token per session.

The operator types ``BRIDGE_ADMIN_TOKEN`` once into the login form; it is compared in
constant time and never stored in the cookie. The cookie holds ``{"csrf": ..., "in": ...}``
signed with a key derived from the token (itsdangerous: HMAC, dated, so a stolen cookie
ages out and a new token voids every old cookie). It is HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it), scoped to ``/admin`` and Secure over
HTTPS. Every POST, the login form's included, must carry the session's CSRF token in a
form field: SameSite already stops cross-site posts in current browsers, the token also
in older ones and behind a proxy that strips the attribute.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from bridge.core.throttle import Throttle

COOKIE = "bridge_admin"
PATH = "/admin"
MAX_AGE = 12 * 3600  # seconds a login lasts
_SALT = "cryptolens-bridge admin session"
THROTTLE_KIND = "admin"


@dataclass(frozen=True)
class TokenCheck:
    ok: bool
    retry_after: int | None = None  # seconds; set: throttled, the token was not compared


@dataclass(frozen=True)
class Session:
    csrf: str
    signed_in: bool


class Guard:
    """Checks tokens and reads and writes the session cookie for one admin token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        # The signing key is derived, so the cookie's MAC never uses the token itself.
        key = hmac.new(self._token, b"admin-session-key", hashlib.sha256).hexdigest()
        self._serializer = URLSafeTimedSerializer(key, salt=_SALT)

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(self._token, given.encode())

    def check_token(self, given: object, throttle: Throttle, client: str) -> TokenCheck:
        """``token_matches``, throttled per client (bridge.core.throttle): while
        ``client`` waits, nothing is compared."""
        wait = throttle.wait(THROTTLE_KIND, client)
        if wait is not None:
            return TokenCheck(ok=False, retry_after=wait)
        if isinstance(given, str) and self.token_matches(given):
            throttle.succeeded(THROTTLE_KIND, client)
            return TokenCheck(ok=True)
        throttle.failed(THROTTLE_KIND, client)
        return TokenCheck(ok=False)

    def session(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=MAX_AGE)
        except BadSignature:  # tampered, expired, or signed under another token
            return None
        if not (isinstance(data, dict) and isinstance(data.get("csrf"), str)):
            return None
        return Session(csrf=data["csrf"], signed_in=data.get("in") is True)

    def start(self, response: Response, request: Request, *, signed_in: bool) -> Session:
        """A new session (a fresh CSRF token), set on ``response``."""
        session = Session(csrf=secrets.token_urlsafe(32), signed_in=signed_in)
        value = self._serializer.dumps({"csrf": session.csrf, "in": signed_in})
        response.set_cookie(
            COOKIE,
            value,
            max_age=MAX_AGE,
            path=PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return session

    @staticmethod
    def end(response: Response) -> None:
        response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")

    @staticmethod
    def csrf_matches(session: Session | None, given: object) -> bool:
        return (
            session is not None
            and isinstance(given, str)
            and hmac.compare_digest(session.csrf.encode(), given.encode())
        )
