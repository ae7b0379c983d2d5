"""Who may use the admin page: one token, a server-side session, a CSRF token per session.

The operator types ``BRIDGE_ADMIN_TOKEN`` once into the login form; it is compared in
constant time and never stored in the cookie. Signing in opens a session in the database
(``bridge.store.sessions``: only a hash of its id is stored) and sets a cookie holding
``{"csrf": ..., "sid": ...}``, signed with a key derived from the token (itsdangerous:
HMAC, dated, so a new token voids every old cookie). Each request checks that the session
is still open: signing out deletes it, so a copied cookie is worth nothing afterwards,
in every web process. Before signing in, the cookie holds only a CSRF token (no row: a
stranger writes nothing to the database).

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends
it), scoped to ``/admin`` and Secure when the page is reached over HTTPS: the scheme of
``BRIDGE_PUBLIC_URL`` when set (a TLS proxy on another host speaks plain HTTP to us),
else the request's own. Every POST, the login form's included, must carry the session's
CSRF token in a form field: SameSite already stops cross-site posts in current browsers,
the token also in older ones and behind a proxy that strips the attribute.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from bridge.core.throttle import Throttle
from bridge.state import AppState
from bridge.store import sessions

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
    # The server-side session's id: None before signing in.
    sid: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.sid is not None


def _now(request: Request) -> tuple[AppState, datetime]:
    state: AppState = request.state.bridge
    return state, datetime.fromtimestamp(state.clock(), UTC)


class Guard:
    """Checks tokens, and reads and writes the session cookie for one admin token.

    ``secure``: whether the page is reached over HTTPS (the public URL's scheme); None
    when no public URL is set: then the request's own scheme says. ``path``: where the
    browser sees the page (``/admin``, under the public URL's path if it has one).
    """

    def __init__(self, token: str, *, secure: bool | None = None, path: str = PATH) -> None:
        self._token = token.encode()
        self._secure = secure
        self._path = path
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

    def _cookie(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=MAX_AGE)
        except BadSignature:  # tampered, expired, or signed under another token
            return None
        if not (isinstance(data, dict) and isinstance(data.get("csrf"), str)):
            return None
        sid = data.get("sid")
        return Session(csrf=data["csrf"], sid=sid if isinstance(sid, str) else None)

    async def session(self, request: Request) -> Session | None:
        """The request's session; a signed-in one only while it is open server-side
        (an ended or expired one is no session: the caller is a stranger again). Reads
        the cookie and the database, never the body."""
        found = self._cookie(request)
        if found is None or found.sid is None:
            return found
        state, now = _now(request)
        if await run_in_threadpool(sessions.is_open, state.engine, found.sid, now=now):
            return found
        return None

    def start(self, response: Response, request: Request) -> Session:
        """A new signed-out session (a fresh CSRF token), set on ``response``."""
        return self._set(response, request, Session(csrf=secrets.token_urlsafe(32)))

    async def sign_in(
        self, response: Response, request: Request, replacing: Session | None = None
    ) -> Session:
        """A new signed-in session (a new id and CSRF token), set on ``response``; the
        session ``replacing`` (signing in again while signed in) ends."""
        state, now = _now(request)
        if replacing is not None and replacing.sid is not None:
            await run_in_threadpool(sessions.close, state.engine, replacing.sid)
        sid = await run_in_threadpool(
            sessions.open_session, state.engine, now=now, lifetime=MAX_AGE
        )
        return self._set(response, request, Session(csrf=secrets.token_urlsafe(32), sid=sid))

    async def sign_out(self, response: Response, request: Request, session: Session) -> None:
        """End ``session`` server-side (any copy of its cookie with it) and drop the cookie."""
        if session.sid is not None:
            state: AppState = request.state.bridge
            await run_in_threadpool(sessions.close, state.engine, session.sid)
        response.delete_cookie(
            COOKIE,
            path=self._path,
            httponly=True,
            samesite="strict",
            secure=self._is_secure(request),
        )

    def _is_secure(self, request: Request) -> bool:
        return self._secure if self._secure is not None else request.url.scheme == "https"

    def _set(self, response: Response, request: Request, session: Session) -> Session:
        data = {"csrf": session.csrf}
        if session.sid is not None:
            data["sid"] = session.sid
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(data),
            max_age=MAX_AGE,
            path=self._path,
            httponly=True,
            samesite="strict",
            secure=self._is_secure(request),
        )
        return session

    @staticmethod
    def csrf_matches(session: Session | None, given: object) -> bool:
        return (
            session is not None
            and isinstance(given, str)
            and hmac.compare_digest(session.csrf.encode(), given.encode())
        )
