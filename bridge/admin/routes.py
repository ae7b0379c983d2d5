"""The admin page's routes: sign in, look, and replay / claim through the CLI's own path.

Every page needs a signed-in session (else: to the login form); every POST needs one
(else 403, before its body is read) and the session's CSRF token (else 403). A body is at
most :data:`~bridge.admin.http.FORM_LIMIT` bytes (else 413). Database reads run in a thread.

Intent ids and license refs may hold anything (a usage key may hold ``?``, ``#``, ``/``,
``..``): they travel in a query string, percent-encoded (:meth:`Admin.url`), never in a
path, where a browser would resolve ``..`` or cut at ``?``. Links are absolute under
``BRIDGE_PUBLIC_URL`` when set (a TLS proxy on another host speaks plain HTTP to us).
Unknown ids are 404s, bad input (a NUL, a form over the limits) 400s or 413s: nothing
here answers 500 on purpose.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from jinja2 import pass_context
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bridge.admin import views
from bridge.admin.auth import Guard, Session
from bridge.admin.http import OddInput, SecurityHeaders, read_form, read_query
from bridge.core.errors import BridgeError, ConfigError
from bridge.core.intents import Status
from bridge.core.logs import get_logger
from bridge.core.queue import enqueue
from bridge.ops import intents as ops
from bridge.ops.dryrun import planned
from bridge.ops.errors import NotReplayable, UnknownRecord
from bridge.state import AppState
from bridge.store.intents import REPLAYABLE

log = get_logger(__name__)

HERE = Path(__file__).parent
_BIGINT = 2**63 - 1  # the largest id a database row can have
_EVENT_ID = re.compile(r"[0-9]{1,19}")
Handler = Callable[[Request, Session], Awaitable[Response]]


def _state(request: Request) -> AppState:
    state: AppState = request.state.bridge
    return state


def _public_base(public_url: str | None) -> str | None:
    """``BRIDGE_PUBLIC_URL`` without its trailing slash; refuses one that is not a URL."""
    if not public_url:
        return None
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"BRIDGE_PUBLIC_URL must be an http(s) URL like https://bridge.example.com, "
            f"not {public_url!r}"
        )
    return public_url.rstrip("/")


class Admin:
    def __init__(self, token: str, public_url: str | None = None) -> None:
        self.public_base = _public_base(public_url)
        if self.public_base is None:
            self.guard = Guard(token)
        else:  # behind a proxy, perhaps under a prefix it strips (https://host/bridge)
            public = urlsplit(self.public_base)
            path = public.path.rstrip("/") + "/admin"
            self.guard = Guard(token, secure=public.scheme == "https", path=path)
        # Templates of their own: their url_for knows this page's public URL.
        self.templates = Jinja2Templates(directory=HERE / "templates")
        env = self.templates.env
        env.filters["json"] = lambda value: json.dumps(value, sort_keys=True)

        @pass_context
        def url_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
            return self.url(context["request"], name, **params)

        @pass_context
        def link(context: Mapping[str, Any], name: str, /, **query: Any) -> str:
            """A page about one thing named in the query: ``link('admin:intent', id=...)``."""
            return self.url(context["request"], name, query=query)

        env.globals.update(url_for=url_for, link=link)

    # -- plumbing -------------------------------------------------------------------------

    def url(
        self,
        request: Request,
        name: str,
        /,
        query: Mapping[str, Any] | None = None,
        **path_params: Any,
    ) -> str:
        """The absolute URL of route ``name``, under the public URL when one is set;
        ``query`` values percent-encoded whole (``/``, ``?``, ``#``, ``%`` included)."""
        router = request.scope["router"]
        path = router.url_path_for(name, **path_params)
        url = str(path.make_absolute_url(URL(self.public_base or str(request.base_url))))
        if query:
            url += "?" + urlencode({k: str(v) for k, v in query.items()}, quote_via=quote)
        return url

    def redirect(self, request: Request, name: str, **query: Any) -> Response:
        return RedirectResponse(self.url(request, name, query=query), status_code=303)

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = await self.guard.session(request)
            if session is None or not session.signed_in:
                return self.redirect(request, "admin:login")
            return await handler(request, session)

        return endpoint

    def action(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            # The session first, from the cookie: a stranger's body is never read.
            session = await self.guard.session(request)
            if session is None or not session.signed_in:
                raise HTTPException(403, "sign in first")
            form = await read_form(request)
            if not self.guard.csrf_matches(session, form.get("csrf")):
                raise HTTPException(403, "bad or missing CSRF token")
            request.state.form = form
            return await handler(request, session)

        return endpoint

    def render(
        self, request: Request, session: Session, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        context.update(csrf=session.csrf, signed_in=session.signed_in)
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    # -- sign in / out --------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        session = await self.guard.session(request)
        if session is not None and session.signed_in:
            return self.redirect(request, "admin:home")
        cookie = Response()  # carries a new session's Set-Cookie, if one is needed
        if session is None:
            session = self.guard.start(cookie, request)
        return self._login_page(request, session, cookie)

    def _login_page(
        self, request: Request, session: Session, cookie: Response, error: str | None = None
    ) -> Response:
        page = self.templates.TemplateResponse(
            request,
            "login.html",
            {"csrf": session.csrf, "signed_in": False, "error": error},
            status_code=401 if error else 200,
        )
        page.raw_headers.extend(h for h in cookie.raw_headers if h[0] == b"set-cookie")
        return page

    async def login(self, request: Request) -> Response:
        session = await self.guard.session(request)
        form = await read_form(request)
        if not self.guard.csrf_matches(session, form.get("csrf")):
            raise HTTPException(403, "bad or missing CSRF token: reload the login page")
        state = _state(request)
        check = self.guard.check_token(
            form.get("token"), state.throttle, state.client(request.scope)
        )
        if not check.ok:
            log.warning("admin sign-in refused", client=request.client and request.client.host)
            cookie = Response()
            fresh = self.guard.start(cookie, request)
            if check.retry_after is None:
                return self._login_page(request, fresh, cookie, error="That is not the token.")
            wait = f"Too many wrong tokens: try again in {check.retry_after} s."
            page = self._login_page(request, fresh, cookie, error=wait)
            page.status_code = 429
            page.headers["Retry-After"] = str(check.retry_after)
            return page
        redirect = self.redirect(request, "admin:home")
        # A new session id and CSRF token: nothing known before signing in carries over.
        await self.guard.sign_in(redirect, request, replacing=session)
        log.info("admin signed in", client=request.client and request.client.host)
        return redirect

    async def logout(self, request: Request, session: Session) -> Response:
        redirect = self.redirect(request, "admin:login")
        await self.guard.sign_out(redirect, request, session)
        log.info("admin signed out", client=request.client and request.client.host)
        return redirect

    # -- pages ----------------------------------------------------------------------------

    async def home(self, request: Request, session: Session) -> Response:
        engine = _state(request).engine
        provider = request.query_params.get("provider") or None
        counts = await run_in_threadpool(views.status_counts, engine)
        found = await run_in_threadpool(views.deliveries, engine, provider)
        return self.render(
            request, session, "deliveries.html", counts=counts, data=found, provider=provider
        )

    async def delivery(self, request: Request, session: Session) -> Response:
        raw: str = request.path_params["event_id"]
        if not _EVENT_ID.fullmatch(raw) or int(raw) > _BIGINT:
            raise HTTPException(404, "no such delivery")
        event_id = int(raw)
        found = await run_in_threadpool(views.delivery, _state(request).engine, event_id)
        if found is None:
            raise HTTPException(404, f"no delivery {event_id}")
        event, rows = found
        return self.render(request, session, "delivery.html", event=event, rows=rows)

    async def intents(self, request: Request, session: Session) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in {s.value for s in Status}:
            raise HTTPException(400, f"no status {status!r}")
        engine = _state(request).engine
        counts = await run_in_threadpool(views.status_counts, engine)
        rows = await run_in_threadpool(views.intents, engine, status)
        return self.render(
            request, session, "intents.html", rows=rows, status=status, counts=counts
        )

    async def intent(self, request: Request, session: Session) -> Response:
        intent_id = read_query(request, "id")
        found = await run_in_threadpool(views.intent, _state(request).engine, intent_id)
        if found is None:
            raise HTTPException(404, f"no intent {intent_id}")
        return self.render(
            request,
            session,
            "intent.html",
            page=found,
            replayable=found.intent.status in REPLAYABLE,
            notice=request.query_params.get("notice"),
        )

    async def license(self, request: Request, session: Session) -> Response:
        ref = read_query(request, "ref")
        found = await run_in_threadpool(views.license_page, _state(request).engine, ref)
        if found is None:
            raise HTTPException(404, f"no license {ref}")
        return self.render(request, session, "license.html", page=found)

    async def review(self, request: Request, session: Session) -> Response:
        rows = await run_in_threadpool(views.review, _state(request).engine)
        return self.render(
            request, session, "review.html", rows=rows, notice=request.query_params.get("notice")
        )

    async def plan(self, request: Request, session: Session) -> Response:
        """The calls a replay would make now (a dry run: reads only)."""
        state = _state(request)
        intent_id = read_query(request, "id")
        if state.cryptolens is None:
            raise HTTPException(503, "plans read Cryptolens: set CRYPTOLENS_TOKEN for the web app")
        try:
            found = await planned(state.engine, state.cryptolens, state, intent_id)
        except BridgeError as exc:  # Cryptolens, or a provider the worker asks too
            raise HTTPException(502, f"a read failed: {exc}") from None
        if found is None:
            raise HTTPException(404, f"no intent {intent_id}")
        return self.render(request, session, "plan.html", plan=found)

    # -- actions --------------------------------------------------------------------------

    async def replay(self, request: Request, _: Session) -> Response:
        """Replay (or, with ``key``, claim) an intent: ``cryptolens-bridge replay``'s path."""
        state = _state(request)
        intent_id = read_query(request, "id")
        form: dict[str, str] = request.state.form
        key = form.get("key", "").strip() or None
        if key is not None and not views.KEY.fullmatch(key):
            raise HTTPException(400, "a key is four groups of five capitals: ABCDE-FGHIJ-...")
        try:
            await run_in_threadpool(ops.replay, state.engine, intent_id, key=key)
        except UnknownRecord as exc:
            raise HTTPException(404, str(exc)) from None
        except NotReplayable as exc:
            raise HTTPException(409, str(exc)) from None
        log.info("intent replayed from the admin page", intent=intent_id, claimed=key is not None)
        await _wake(state, intent_id)
        return self.redirect(request, "admin:intent", id=intent_id, notice="replayed")


async def _wake(state: AppState, intent_id: str) -> None:
    if state.redis is None:
        return
    try:
        await asyncio.wait_for(enqueue(state.redis, [intent_id]), 2)
    except Exception as exc:  # the worker's relay queues pending intents anyway
        log.warning("could not wake a worker", error=type(exc).__name__)


def mount(token: str, public_url: str | None = None) -> Mount:
    """The admin page under ``/admin`` (the app mounts it only when a token is set);
    ``public_url``: ``BRIDGE_PUBLIC_URL``, where browsers reach the bridge."""
    admin = Admin(token, public_url)
    routes = [
        Route("/", admin.page(admin.home), name="home"),
        Route("/login", admin.login_form, methods=["GET"], name="login"),
        Route("/login", admin.login, methods=["POST"], name="login_post"),
        Route("/logout", admin.action(admin.logout), methods=["POST"], name="logout"),
        Route("/deliveries/{event_id}", admin.page(admin.delivery), name="delivery"),
        Route("/intents", admin.page(admin.intents), name="intents"),
        # One intent, one license: the id in the query (?id=, ?ref=), where it may hold
        # anything; a path would be cut at "?" and resolved at "..".
        Route("/intent", admin.page(admin.intent), name="intent"),
        Route("/intent/plan", admin.page(admin.plan), name="plan"),
        Route("/intent/replay", admin.action(admin.replay), methods=["POST"], name="replay"),
        Route("/license", admin.page(admin.license), name="license"),
        Route("/review", admin.page(admin.review), name="review"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(OddInput)
    app.add_middleware(SecurityHeaders)
    return Mount("/admin", app=app, name="admin")
