"""The admin page's routes: sign in, look, and replay / claim through the CLI's own path.

Every page needs a signed-in session (else: to the login form); every POST needs the
session's CSRF token (else 403). Database reads run in a thread. Unknown ids are 404s,
bad form input 400s: nothing here answers 500 on purpose.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.admin import views
from bridge.admin.auth import Guard, Session
from bridge.core.intents import Status
from bridge.core.logs import get_logger
from bridge.core.queue import enqueue
from bridge.core.state import AppState
from bridge.cryptolens import CryptolensError
from bridge.tools import ops
from bridge.tools.plan import plan_intent

log = get_logger(__name__)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["utc"] = lambda unix: datetime.fromtimestamp(int(unix), UTC).isoformat()
templates.env.filters["json"] = lambda value: json.dumps(value, sort_keys=True)
_FORM_LIMITS: dict[str, Any] = {"max_files": 0, "max_fields": 8, "max_part_size": 4096}

# Pages may not be framed, may load nothing from elsewhere, and are never cached (they
# show license keys).
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


Handler = Callable[[Request, Session], Awaitable[Response]]


def _state(request: Request) -> AppState:
    state: AppState = request.state.bridge
    return state


async def _form(request: Request) -> FormData:
    try:
        return await request.form(**_FORM_LIMITS)
    except Exception:  # multipart errors, limits: the client's fault
        raise HTTPException(400, "bad form") from None


class Admin:
    def __init__(self, token: str) -> None:
        self.guard = Guard(token)

    # -- plumbing -------------------------------------------------------------------------

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self.guard.session(request)
            if session is None or not session.signed_in:
                return RedirectResponse(request.url_for("admin:login"), status_code=303)
            return await handler(request, session)

        return endpoint

    def action(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self.guard.session(request)
            form = await _form(request)
            if session is None or not session.signed_in:
                raise HTTPException(403, "sign in first")
            if not self.guard.csrf_matches(session, form.get("csrf")):
                raise HTTPException(403, "bad or missing CSRF token")
            request.state.form = form
            return await handler(request, session)

        return endpoint

    @staticmethod
    def render(
        request: Request, session: Session, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        context.update(csrf=session.csrf, signed_in=session.signed_in)
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    # -- sign in / out --------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        session = self.guard.session(request)
        if session is not None and session.signed_in:
            return RedirectResponse(request.url_for("admin:home"), status_code=303)
        cookie = Response()  # carries a new session's Set-Cookie, if one is needed
        if session is None:
            session = self.guard.start(cookie, request, signed_in=False)
        return self._login_page(request, session, cookie)

    @staticmethod
    def _login_page(
        request: Request, session: Session, cookie: Response, error: str | None = None
    ) -> Response:
        page = templates.TemplateResponse(
            request,
            "login.html",
            {"csrf": session.csrf, "signed_in": False, "error": error},
            status_code=401 if error else 200,
        )
        page.raw_headers.extend(h for h in cookie.raw_headers if h[0] == b"set-cookie")
        return page

    async def login(self, request: Request) -> Response:
        session = self.guard.session(request)
        form = await _form(request)
        if not self.guard.csrf_matches(session, form.get("csrf")):
            raise HTTPException(403, "bad or missing CSRF token: reload the login page")
        state = _state(request)
        check = self.guard.check_token(
            form.get("token"), state.throttle, state.client(request.scope)
        )
        if not check.ok:
            log.warning("admin sign-in refused", client=request.client and request.client.host)
            cookie = Response()
            fresh = self.guard.start(cookie, request, signed_in=False)
            if check.retry_after is None:
                return self._login_page(request, fresh, cookie, error="That is not the token.")
            wait = f"Too many wrong tokens: try again in {check.retry_after} s."
            page = self._login_page(request, fresh, cookie, error=wait)
            page.status_code = 429
            page.headers["Retry-After"] = str(check.retry_after)
            return page
        redirect = RedirectResponse(request.url_for("admin:home"), status_code=303)
        self.guard.start(redirect, request, signed_in=True)  # a new CSRF token for the session
        log.info("admin signed in", client=request.client and request.client.host)
        return redirect

    async def logout(self, request: Request, _: Session) -> Response:
        redirect = RedirectResponse(request.url_for("admin:login"), status_code=303)
        self.guard.end(redirect)
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
        event_id: int = request.path_params["event_id"]
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
        intent_id: str = request.path_params["intent_id"]
        found = await run_in_threadpool(views.intent, _state(request).engine, intent_id)
        if found is None:
            raise HTTPException(404, f"no intent {intent_id}")
        return self.render(
            request,
            session,
            "intent.html",
            page=found,
            replayable=found.intent.status in ops.REPLAYABLE,
            notice=request.query_params.get("notice"),
        )

    async def license(self, request: Request, session: Session) -> Response:
        ref: str = request.path_params["ref"]
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
        intent_id: str = request.path_params["intent_id"]
        if state.cryptolens is None:
            raise HTTPException(503, "plans read Cryptolens: set CRYPTOLENS_TOKEN for the web app")
        try:
            found = await plan_intent(state.engine, state.cryptolens, state.config, intent_id)
        except CryptolensError as exc:
            raise HTTPException(502, f"Cryptolens: {exc}") from None
        if found is None:
            raise HTTPException(404, f"no intent {intent_id}")
        return self.render(request, session, "plan.html", plan=found)

    # -- actions --------------------------------------------------------------------------

    async def replay(self, request: Request, _: Session) -> Response:
        """Replay (or, with ``key``, claim) an intent: ``cryptolens-bridge replay``'s path."""
        state = _state(request)
        intent_id: str = request.path_params["intent_id"]
        form: FormData = request.state.form
        key = form.get("key")
        key = key.strip() if isinstance(key, str) and key.strip() else None
        try:
            await run_in_threadpool(ops.replay, state.engine, intent_id, key=key)
        except click.ClickException as exc:
            raise HTTPException(409, exc.message) from None
        log.info("intent replayed from the admin page", intent=intent_id, claimed=key is not None)
        await _wake(state, intent_id)
        target = request.url_for("admin:intent", intent_id=intent_id)
        return RedirectResponse(f"{target}?notice=replayed", status_code=303)


async def _wake(state: AppState, intent_id: str) -> None:
    if state.redis is None:
        return
    try:
        await asyncio.wait_for(enqueue(state.redis, [intent_id]), 2)
    except Exception as exc:  # the worker's relay queues pending intents anyway
        log.warning("could not wake a worker", error=type(exc).__name__)


def mount(token: str) -> Mount:
    """The admin page under ``/admin`` (the app mounts it only when a token is set)."""
    admin = Admin(token)
    routes = [
        Route("/", admin.page(admin.home), name="home"),
        Route("/login", admin.login_form, methods=["GET"], name="login"),
        Route("/login", admin.login, methods=["POST"], name="login_post"),
        Route("/logout", admin.action(admin.logout), methods=["POST"], name="logout"),
        Route("/deliveries/{event_id:int}", admin.page(admin.delivery), name="delivery"),
        Route("/intents", admin.page(admin.intents), name="intents"),
        Route(
            "/intents/{intent_id:path}/replay",
            admin.action(admin.replay),
            methods=["POST"],
            name="replay",
        ),
        Route("/intents/{intent_id:path}/plan", admin.page(admin.plan), name="plan"),
        Route("/intents/{intent_id:path}", admin.page(admin.intent), name="intent"),
        Route("/licenses/{ref:path}", admin.page(admin.license), name="license"),
        Route("/review", admin.page(admin.review), name="review"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_SecurityHeaders)
    return Mount("/admin", app=app, name="admin")
