"""``GET /checkout/{session_id}/license``: the buyer's key, for the checkout's success page.

Stripe Checkout sends the buyer to the vendor's ``success_url``, which carries the
session id (``{CHECKOUT_SESSION_ID}``). With ``[stripe] license_lookup = true`` this
route answers for that session::

    200  {"status": "ready", "key": "...", "product_id": 1001, "expires": "...Z" | null}
    202  {"status": "pending"}   its delivery is stored, its key not made (or read) yet
    404  {"status": "unknown"}   no delivery of it stored (yet), or older than
                                 license_lookup_days (default 7)
    429  {"status": "throttled"} with Retry-After: this client asked too often

``Accept: text/html`` gets a small page instead (``pages/license.html``): the key with a
copy button; while pending, or while the session is unknown (the webhook may still be
on its way), it refreshes itself, a bounded number of times for an unknown one.

The session id is the buyer's secret: whoever holds it reads the key. So answers say
nothing but the above (no email, no amount, nothing of another purchase); they are never
cached or framed, carry no referrer, and load nothing from elsewhere; the id is never
logged whole (:func:`shown`). Unknown ids are counted per client like wrong credentials
(``bridge.core.throttle``: after a few, growing waits answered 429), so ids cannot be
guessed at speed; a known session's page polls freely.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.core.logs import get_logger
from bridge.state import AppState
from bridge.store.checkout import Purchase, purchase
from bridge.stripe.config import StripeConfig
from bridge.stripe.handover import session_alias

log = get_logger(__name__)

PATH = "/checkout/{session_id}/license"
THROTTLE_KIND = "license_lookup"
DAY = 86400
# Stripe's Checkout Session ids: cs_test_..., cs_live_... (letters and digits).
_SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,250}")
PENDING_REFRESH = 3  # seconds between a pending page's reloads
UNKNOWN_REFRESH = 5  # seconds between an unknown session page's reloads ...
UNKNOWN_TRIES = 36  # ... for three minutes: a webhook is normally there in seconds

_STYLE = (
    ":root{--fg:#1d232a;--muted:#5f6b76;--line:#dde3e8;--bg:#f7f9fa;--accent:#2457c5}"
    "*{box-sizing:border-box}"
    'body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;'
    "color:var(--fg);background:var(--bg);display:flex;justify-content:center}"
    ".card{margin:3rem 1rem;max-width:34rem;width:100%;background:#fff;"
    "border:1px solid var(--line);border-radius:.4rem;padding:1.2rem 1.5rem}"
    "h1{font-size:1.3rem;margin:.2rem 0 .8rem}"
    ".key{display:flex;gap:.6rem;align-items:center;flex-wrap:wrap}"
    'code{font:600 16px ui-monospace,"SFMono-Regular",Menlo,monospace;background:var(--bg);'
    "border:1px solid var(--line);padding:.35rem .6rem;border-radius:.3rem;user-select:all}"
    "button{font:inherit;padding:.35rem .9rem;border-radius:.3rem;border:1px solid "
    "var(--accent);background:var(--accent);color:#fff;cursor:pointer}"
    ".facts{display:grid;grid-template-columns:7rem 1fr;gap:.3rem 1rem}"
    ".facts dt{color:var(--muted)}.facts dd{margin:0}.hint{color:var(--muted)}"
)
# The copy button: the only script, allowed by its hash (no 'unsafe-inline').
_SCRIPT = (
    'document.getElementById("copy").addEventListener("click",function(e){'
    'var b=e.currentTarget,k=b.getAttribute("data-key");'
    'function done(){b.textContent="Copied";}'
    "if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(k)"
    ".then(done,function(){fallback();});}else{fallback();}"
    "function fallback(){var r=document.createRange();"
    'r.selectNodeContents(document.getElementById("key"));var s=window.getSelection();'
    's.removeAllRanges();s.addRange(r);try{document.execCommand("copy");}catch(x){}done();}'
    "});"
)


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; "
        "frame-ancestors 'none'; form-action 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # A vendor's own site may call the JSON from its success page's script.
    "Access-Control-Allow-Origin": "*",
}
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=select_autoescape(["html"]),
)


def shown(session_id: str) -> str:
    """The session id as it may appear in a log line: its first characters only."""
    return session_id[:12] + "…" if len(session_id) > 12 else session_id


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expires(found: Purchase) -> int | None:
    """The key's expiry: what ``read_key`` read, or a later extension's (they only move it
    forward); None for a key that does not expire."""
    if found.read is None:
        return found.extended_to
    read = found.read.get("expires")
    if read is None:
        return None
    return max(int(read), found.extended_to or 0)


def _answer(state: AppState, found: Purchase | None) -> tuple[int, dict[str, Any]]:
    days = StripeConfig.of(state.config).license_lookup_days
    if found is None or state.clock() - found.bought_at > days * DAY:
        return 404, {"status": "unknown"}
    # Ready once the key exists and, where the lookup planned it, its expiry was read.
    if found.key is None or found.product_id is None or (found.read is None and found.planned):
        return 202, {"status": "pending"}
    expires = _expires(found)
    return 200, {
        "status": "ready",
        "key": found.key,
        "product_id": found.product_id,
        "expires": _iso(expires) if expires is not None else None,
    }


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    if "text/html" not in accept:
        return False
    json_at = accept.find("application/json")
    return json_at == -1 or accept.find("text/html") < json_at


def _tries(request: Request) -> int:
    raw = request.query_params.get("try", "")
    return int(raw) if raw.isdigit() and len(raw) < 4 else 0


def _page(request: Request, status: int, body: dict[str, Any], wait: int | None) -> Response:
    tries = _tries(request)
    refresh: int | None = None
    if body["status"] == "pending":
        refresh = PENDING_REFRESH
    elif body["status"] == "throttled":
        refresh = wait
    elif body["status"] == "unknown" and tries < UNKNOWN_TRIES:
        refresh = UNKNOWN_REFRESH
    expires = body.get("expires")
    html = _PAGES.get_template("license.html").render(
        status=body["status"],
        key=body.get("key"),
        product_id=body.get("product_id"),
        expires_text=expires[:10] if expires else "never",
        refresh=refresh,
        # Relative: right under any prefix a proxy serves the bridge at.
        refresh_url=f"license?try={tries + 1}",
        style=_STYLE,
        script=_SCRIPT,
    )
    return HTMLResponse(html, status, headers=_headers(wait))


def _headers(wait: int | None) -> dict[str, str]:
    return {**_HEADERS, "Retry-After": str(wait)} if wait is not None else dict(_HEADERS)


async def license_lookup(request: Request) -> Response:
    state: AppState = request.scope["state"]["bridge"]
    session_id = request.path_params["session_id"]
    client = state.client(request.scope)
    wait = state.throttle.wait(THROTTLE_KIND, client)
    if wait is not None:
        status, body = 429, {"status": "throttled"}
    else:
        found = None
        if _SESSION_ID.fullmatch(session_id):
            found = await run_in_threadpool(purchase, state.engine, session_alias(session_id))
        status, body = _answer(state, found)
        if status == 404:
            # A guess, or a page early for its webhook: counted, so guessing is slow.
            state.throttle.failed(THROTTLE_KIND, client)
            log.info("license lookup of an unknown session", session=shown(session_id))
    if _wants_html(request):
        return _page(request, status, body, wait)
    return JSONResponse(body, status, headers=_headers(wait))


def routes(enabled: bool) -> list[BaseRoute]:
    """The route when ``[stripe] license_lookup`` is on; none (404) when off."""
    return [Route(PATH, license_lookup, methods=["GET"])] if enabled else []
