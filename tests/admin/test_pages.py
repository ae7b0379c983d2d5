"""The admin page over HTTP: off without a token, sign-in, server-side sessions, cookie,
CSRF, bounded bodies, odd ids and input, what it shows, the needs-review claim, and the
bounded delivery log the Stripe endpoint writes."""

from __future__ import annotations

import hashlib
import html
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.types import ASGIApp, Message

from bridge.admin.auth import MAX_AGE
from bridge.app import create_app
from bridge.core.errors import ConfigError
from bridge.core.intents import Effect, IntentSpec, Status
from bridge.core.settings import Settings
from bridge.store.deliveries import DeliveryRecorder
from bridge.store.inbox import add_intents
from bridge.store.tables import AdminSession, DeliveryCount, Intent, LoggedDelivery
from tests.fixtures import stripe_builders as sb
from tests.fixtures.admin import ADMIN_TOKEN, CSRF, drain_once, sign_in
from tests.fixtures.pipeline import SECRET, Pipeline, make_settings
from tests.fixtures.servers import SandboxServer, run_asgi


async def failed_create(admin: Pipeline) -> str:
    admin.sandbox.set_faults(script=[{"method": "key/CreateKey", "fault": "fail_before"}])
    await admin.post(sb.checkout_session())
    await drain_once(admin)
    create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
    assert admin.intents()[create].status == Status.FAILED.value
    return create


def failed(engine: Engine, ref: str, occurred_at: int = 1_764_583_200) -> str:
    """A key creation for ``ref`` stored as failed (as a worker leaves one); its id."""
    spec = IntentSpec(
        id=f"{ref}:create_key",
        effect=Effect.CREATE_KEY,
        license_ref=ref,
        params={"template_id": 1, "template_source": "default", "customer": None},
        occurred_at=occurred_at,
    )
    add_intents(engine, [spec])
    with Session(engine) as s:
        row = s.get(Intent, spec.id)
        assert row is not None
        row.status, row.last_error = Status.FAILED.value, "Cryptolens answered 503"
        s.add(row)
        s.commit()
    return spec.id


def link_to(page: str, text: str) -> str:
    """The href of the link ``text`` on ``page``, as a browser would read it."""
    found = re.search(rf'<a href="([^"]+)"[^>]*>{re.escape(html.escape(text))}</a>', page)
    assert found is not None, text
    return html.unescape(found.group(1))


def form_action(page: str, button_id: str) -> str:
    found = re.search(
        rf'<form method="post" action="([^"]+)"(?:(?!</form>).)*id="{button_id}"', page, re.S
    )
    assert found is not None, button_id
    return html.unescape(found.group(1))


class TestOff:
    def test_no_token_no_page(self, bridge_settings: Settings, engine: Engine) -> None:
        with run_asgi(create_app(bridge_settings, engine=engine)) as url:
            assert httpx.get(f"{url}/admin/").status_code == 404
            assert httpx.get(f"{url}/admin/login").status_code == 404

    def test_a_short_or_placeholder_token_refuses_to_start(self, tmp_path: Path) -> None:
        for token in ("short", "changeme", "a" * 16, "abababababababababab"):
            settings = make_settings(
                database_url="sqlite://",
                redis_url="redis://127.0.0.1:1/0",
                sandbox_url="http://127.0.0.1:1/api/",
                config_path=tmp_path / "none.toml",
                BRIDGE_ADMIN_TOKEN=token,
            )
            with pytest.raises(ConfigError, match="BRIDGE_ADMIN_TOKEN"):
                create_app(settings)


class TestSignIn:
    async def test_a_stranger_is_sent_to_the_login_form(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            for path in ("/admin/", "/admin/intents", "/admin/review", "/admin/deliveries/1"):
                answer = await http.get(f"{admin.url}{path}")
                assert answer.status_code == 303
                assert answer.headers["location"].endswith("/admin/login")

    async def test_the_wrong_token_is_refused(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            assert await sign_in(admin, http, token=ADMIN_TOKEN + "x") == ""
            assert (await http.get(f"{admin.url}/admin/")).status_code == 303

    async def test_the_cookie_is_signed_httponly_strict_and_scoped(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            page = await http.get(f"{admin.url}/admin/login")
            csrf = CSRF.search(page.text)
            assert csrf is not None
            answer = await http.post(
                f"{admin.url}/admin/login", data={"csrf": csrf.group(1), "token": ADMIN_TOKEN}
            )
            cookie = answer.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
            assert ADMIN_TOKEN not in cookie
            assert answer.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        async with httpx.AsyncClient() as http:
            value = cookie.split(";")[0].split("=", 1)[1]
            tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
            http.cookies.set("bridge_admin", tampered)
            assert (await http.get(f"{admin.url}/admin/")).status_code == 303

    async def test_login_without_the_forms_csrf_token_is_forbidden(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            await http.get(f"{admin.url}/admin/login")
            answer = await http.post(f"{admin.url}/admin/login", data={"token": ADMIN_TOKEN})
            assert answer.status_code == 403

    async def test_sign_out_ends_the_session(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            answer = await http.post(f"{admin.url}/admin/logout", data={"csrf": csrf})
            assert answer.status_code == 303
            assert (await http.get(f"{admin.url}/admin/")).status_code == 303

    def test_a_public_url_that_is_not_one_refuses_to_start(self, admin_settings: Settings) -> None:
        settings = admin_settings.model_copy(update={"public_url": "bridge.example.com"})
        with pytest.raises(ConfigError, match="BRIDGE_PUBLIC_URL"):
            create_app(settings)


class TestSessions:
    async def test_a_copied_cookie_dies_with_its_session_in_every_process(
        self, admin: Pipeline, admin_settings: Settings, engine: Engine
    ) -> None:
        create = failed(engine, "stripe:pi:pi_sessions")
        # A second web process over the same database, as `serve --workers 2` runs.
        with run_asgi(create_app(admin_settings, engine=engine)) as other:
            async with httpx.AsyncClient() as http:
                csrf = await sign_in(admin, http)
                copied = {"bridge_admin": http.cookies["bridge_admin"]}
                async with httpx.AsyncClient(cookies=copied) as thief:
                    assert (await thief.get(f"{other}/admin/")).status_code == 200
                    answer = await http.post(f"{admin.url}/admin/logout", data={"csrf": csrf})
                    assert answer.status_code == 303
                    for url in (admin.url, other):
                        assert (await thief.get(f"{url}/admin/")).status_code == 303
                        replay = f"{url}/admin/intent/replay?id={create}"
                        answer = await thief.post(replay, data={"csrf": csrf})
                        assert answer.status_code == 403
        assert admin.intents()[create].status == Status.FAILED.value

    async def test_a_session_ends_when_it_expires_whatever_the_cookie_says(
        self, admin: Pipeline
    ) -> None:
        async with httpx.AsyncClient() as http:
            await sign_in(admin, http)
            assert (await http.get(f"{admin.url}/admin/")).status_code == 200
            admin.clock.at = time.time() + MAX_AGE + 1
            assert (await http.get(f"{admin.url}/admin/")).status_code == 303

    async def test_only_a_hash_of_the_session_id_is_stored(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            # The payload is readable without the key (only its signature needs it).
            _, data = URLSafeTimedSerializer("any").loads_unsafe(http.cookies["bridge_admin"])
            assert isinstance(data, dict) and isinstance(data["sid"], str)
            with Session(admin.engine) as s:
                rows = s.exec(select(AdminSession)).all()
            assert [r.id_hash for r in rows] == [hashlib.sha256(data["sid"].encode()).hexdigest()]
            await http.post(f"{admin.url}/admin/logout", data={"csrf": csrf})
            with Session(admin.engine) as s:
                assert s.exec(select(AdminSession)).all() == []

    async def test_signing_in_again_ends_the_session_it_replaces(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            first = {"bridge_admin": http.cookies["bridge_admin"]}
            data = {"csrf": csrf, "token": ADMIN_TOKEN}
            assert (await http.post(f"{admin.url}/admin/login", data=data)).status_code == 303
            assert (await http.get(f"{admin.url}/admin/")).status_code == 200
        async with httpx.AsyncClient(cookies=first) as old:
            assert (await old.get(f"{admin.url}/admin/")).status_code == 303
        with Session(admin.engine) as s:
            assert len(s.exec(select(AdminSession)).all()) == 1


class TestPublicUrl:
    @pytest.mark.parametrize(
        ("public", "cookie_path"),
        # The second: the proxy serves the bridge under /b, and strips it.
        [("https://bridge.example.com", "/admin"), ("https://example.com/b", "/b/admin")],
    )
    async def test_behind_a_tls_proxy_the_cookie_is_secure_and_links_stay_https(
        self, admin_settings: Settings, engine: Engine, public: str, cookie_path: str
    ) -> None:
        settings = admin_settings.model_copy(update={"public_url": public + "/"})
        # The proxy, on another host, speaks plain HTTP to the bridge.
        with run_asgi(create_app(settings, engine=engine)) as url:
            async with httpx.AsyncClient() as http:
                page = await http.get(f"{url}/admin/login")
                assert "secure" in page.headers["set-cookie"].lower()
                assert f"path={cookie_path};" in page.headers["set-cookie"].lower()
                assert f'action="{public}/admin/login"' in page.text
                assert f'href="{public}/admin/static/admin.css"' in page.text
                found = CSRF.search(page.text)
                assert found is not None
                cookie = page.headers["set-cookie"].split(";")[0]
                answer = await http.post(
                    f"{url}/admin/login",
                    data={"csrf": found.group(1), "token": ADMIN_TOKEN},
                    headers={"cookie": cookie},
                )
                assert answer.status_code == 303
                assert answer.headers["location"] == f"{public}/admin/"
                assert "secure" in answer.headers["set-cookie"].lower()
                signed_in = answer.headers["set-cookie"].split(";")[0]
                home = await http.get(f"{url}/admin/", headers={"cookie": signed_in})
                assert home.status_code == 200
                assert f'href="{public}/admin/intents"' in home.text


async def call(
    app: ASGIApp, path: str, *, chunks: int, headers: list[tuple[bytes, bytes]]
) -> tuple[int, int]:
    """POST ``path`` to ``app`` with a body of ``chunks`` x 64 KiB of ``&`` (what kept a
    process parsing); returns the status and how many chunks the app read."""
    reads = 0
    status = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"&" * 65536, "more_body": reads < chunks}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    target, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"bridge.test"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            *headers,
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("bridge.test", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return status, reads


class TestBodies:
    @pytest.fixture
    def app(self, tmp_path: Path) -> ASGIApp:
        (tmp_path / "bridge.toml").write_text("")
        settings = make_settings(
            database_url="sqlite://",
            redis_url="redis://127.0.0.1:1/0",
            sandbox_url="http://127.0.0.1:1/api/",
            config_path=tmp_path / "bridge.toml",
            BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN,
        )
        return create_app(settings)

    async def test_a_strangers_post_is_refused_before_its_body_is_read(self, app: ASGIApp) -> None:
        for path in ("/admin/logout", "/admin/intent/replay?id=stripe:pi:pi_1:create_key"):
            assert await call(app, path, chunks=32, headers=[]) == (403, 0)

    async def test_a_login_body_is_read_no_further_than_the_limit(self, app: ASGIApp) -> None:
        status, reads = await call(app, "/admin/login", chunks=32, headers=[])
        assert (status, reads) == (413, 1)
        for length in (b"1000000000", b"9" * 5000):
            huge = [(b"content-length", length)]
            assert await call(app, "/admin/login", chunks=32, headers=huge) == (413, 0)


class TestInput:
    async def test_odd_input_is_a_400_or_a_404_never_a_500(self, admin: Pipeline) -> None:
        create = failed(admin.engine, "stripe:pi:pi_odd")
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            for path, status in [
                ("/admin/deliveries/9223372036854775808", 404),
                ("/admin/deliveries/" + "9" * 5000, 404),
                ("/admin/deliveries/-1", 404),
                ("/admin/deliveries/%00", 400),
                ("/admin/?provider=stripe%00", 400),
                ("/admin/intents?status=failed%00", 400),
                ("/admin/intent?id=a%00b", 400),
                ("/admin/intent?id=", 400),
                ("/admin/intent/plan?id=a%00b", 400),
                ("/admin/license?ref=a%00b", 400),
            ]:
                assert (await http.get(f"{admin.url}{path}")).status_code == status, path
            replay = f"{admin.url}/admin/intent/replay"
            for query, form, status in [
                ("?id=a%00b", {}, 400),
                (f"?id={create}", {"key": "ABCDE-FGHIJ-KLMNO-PQRS\x00"}, 400),
                (f"?id={create}", {"key": "not a key"}, 400),
                (f"?id={create}", {"ke\x00y": "x"}, 400),
            ]:
                answer = await http.post(f"{replay}{query}", data={"csrf": csrf, **form})
                assert answer.status_code == status, (query, form)
        assert admin.intents()[create].status == Status.FAILED.value


class TestIds:
    async def test_odd_ids_are_linked_and_replayed_as_themselves(self, admin: Pipeline) -> None:
        victim = failed(admin.engine, "stripe:pi:pi_victim")
        # Usage keys are anything: a "/../" in one once led its Replay button to the victim.
        odd = [
            failed(admin.engine, f"key:1:x/../{victim.removesuffix(':create_key')}"),
            failed(admin.engine, "key:1:50%?a=b&c#d"),
            failed(admin.engine, "key:1:<b> +x"),
        ]
        async with httpx.AsyncClient(follow_redirects=False) as http:
            csrf = await sign_in(admin, http)
            listing = (await http.get(f"{admin.url}/admin/intents?status=failed")).text
            for intent_id in odd:
                page = await http.get(link_to(listing, intent_id))
                assert page.status_code == 200, intent_id
                assert f'id="intent-id">{html.escape(intent_id)}<' in page.text
                answer = await http.post(form_action(page.text, "replay"), data={"csrf": csrf})
                assert answer.status_code == 303, intent_id
                back = await http.get(answer.headers["location"])
                assert f'id="intent-id">{html.escape(intent_id)}<' in back.text
                assert 'id="notice">replayed<' in back.text
        statuses = admin.intents()
        assert all(statuses[i].status == Status.PENDING.value for i in odd)
        assert statuses[victim].status == Status.FAILED.value


class TestTimes:
    async def test_crm_and_stripe_intents_show_when_they_occurred(self, admin: Pipeline) -> None:
        at = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
        seconds = int(at.timestamp())
        ids = [
            failed(admin.engine, "crm:zoho:deal:7", seconds * 1000 + 123),
            failed(admin.engine, "stripe:pi:pi_times", seconds),
            failed(admin.engine, "hubspot:deal:8", seconds * 1000 + 999),
            failed(admin.engine, "pipedrive:deal:9", seconds * 1000),
        ]
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            for intent_id in ids:
                page = await http.get(f"{admin.url}/admin/intent", params={"id": intent_id})
                assert page.status_code == 200, intent_id
                assert "2026-12-01 10:00:00" in page.text, intent_id
            # A failed CRM intent is replayed from its page like any other.
            answer = await http.post(
                f"{admin.url}/admin/intent/replay", params={"id": ids[0]}, data={"csrf": csrf}
            )
            assert answer.status_code == 303
        assert admin.intents()[ids[0]].status == Status.PENDING.value


class TestActions:
    async def test_replay_needs_the_csrf_token(self, admin: Pipeline) -> None:
        create = await failed_create(admin)
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            url = f"{admin.url}/admin/intent/replay?id={create}"
            assert (await http.post(url, data={})).status_code == 403
            assert (await http.post(url, data={"csrf": csrf + "x"})).status_code == 403
            assert admin.intents()[create].status == Status.FAILED.value
            answer = await http.post(url, data={"csrf": csrf})
            assert answer.status_code == 303
        assert admin.intents()[create].status == Status.PENDING.value

    async def test_replaying_a_done_intent_is_a_conflict(self, admin: Pipeline) -> None:
        await admin.post(sb.checkout_session())
        await admin.drain()
        create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            answer = await http.post(
                f"{admin.url}/admin/intent/replay?id={create}", data={"csrf": csrf}
            )
            assert answer.status_code == 409
            assert "only failed or needs_review" in answer.text

    async def test_unknown_ids_are_404s(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            for path in ("/admin/intent?id=no", "/admin/license?ref=no", "/admin/deliveries/99"):
                assert (await http.get(f"{admin.url}{path}")).status_code == 404
            # Replaying an intent that does not exist (bridge.ops.errors.UnknownRecord).
            gone = await http.post(f"{admin.url}/admin/intent/replay?id=no", data={"csrf": csrf})
            assert gone.status_code == 404 and "no intent no" in gone.text
            assert (await http.get(f"{admin.url}/admin/intents?status=bogus")).status_code == 400

    async def test_needs_review_lists_candidates_and_claims_one(
        self, admin: Pipeline, tmp_path: Path
    ) -> None:
        # CreateKeyFromTemplate mode, not declared the sole key maker: two strangers'
        # keys around our lost reply, and the read-back cannot tell ours.
        mode = tmp_path / "from_template.toml"
        mode.write_text(
            "[stripe]\ndefault_template_id = 1\n\n[cryptolens]\ncreate_from_template = [1001]\n"
        )
        admin = replace(admin, settings=admin.settings.model_copy(update={"config_path": mode}))
        for _ in range(2):
            admin.sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)
        lost = [{"method": "key/CreateKeyFromTemplate", "fault": "lost_reply"}]
        admin.sandbox.set_faults(script=lost)
        await admin.post(sb.checkout_session())
        await admin.drain()
        create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
        assert admin.intents()[create].status == Status.NEEDS_REVIEW.value
        keys = [k["key"] for k in admin.sandbox.state()["keys"]]
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            page = await http.get(f"{admin.url}/admin/review")
            assert all(key in page.text for key in keys)
            answer = await http.post(
                f"{admin.url}/admin/intent/replay?id={create}", data={"csrf": csrf, "key": keys[2]}
            )
            assert answer.status_code == 303
        await admin.drain()
        await admin.drain()
        assert admin.intents()[create].status == Status.DONE.value
        assert admin.counts()["keys_created"] == 3

    async def test_a_license_page_says_what_ended_it(self, admin: Pipeline) -> None:
        """``block_reason`` holds the payment status alone; the end is ``ended_by``."""
        await admin.post(sb.checkout_session(payment_intent="pi_11111"))
        await admin.post(sb.charge_refunded())
        await admin.drain()
        async with httpx.AsyncClient() as http:
            await sign_in(admin, http)
            page = await http.get(f"{admin.url}/admin/license?ref=stripe:pi:pi_11111")
        assert page.status_code == 200
        assert "<dd>ended by refund</dd>" in page.text

    async def test_no_secret_is_rendered(self, admin: Pipeline) -> None:
        await admin.post(sb.checkout_session())
        await admin.drain()
        async with httpx.AsyncClient() as http:
            await sign_in(admin, http)
            create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
            pages = [
                "/admin/",
                "/admin/intents",
                f"/admin/deliveries/{admin.events()[0].id}",
                f"/admin/intent?id={create}",
                f"/admin/intent/plan?id={create}",
                f"/admin/license?ref=stripe:pi:{sb.ONE_OFF_PI}",
                "/admin/review",
            ]
            for path in pages:
                page = await http.get(f"{admin.url}{path}")
                assert page.status_code == 200, path
                for secret in (ADMIN_TOKEN, SECRET, admin.settings.token()):
                    assert secret not in page.text, path


class TestDeliveryRecorder:
    async def test_each_refusal_cause_is_recorded_without_its_body(
        self, admin_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        event = sb.checkout_session()
        # The log is written off the request path; the app's shutdown writes what is left.
        with run_asgi(create_app(admin_settings, engine=engine)) as url:
            pipeline = Pipeline(admin_settings, engine, url, sandbox_server)
            await pipeline.post(event, headers={})  # no header
            await pipeline.post(event, headers={"Stripe-Signature": "t=1,garbage"})
            await pipeline.post(event, timestamp=int(time.time()) - 3600)
            await pipeline.post(event, secret="whsec_not_ours")
            await pipeline.post(event)
            await pipeline.post(event)  # duplicate
            await pipeline.http.aclose()
        with Session(engine) as s:
            counts = {c.cause: c.count for c in s.exec(select(DeliveryCount)).all()}
            rows = s.exec(select(LoggedDelivery)).all()
        assert counts == {
            "no_header": 1,
            "malformed_header": 1,
            "timestamp": 1,
            "no_match": 1,
            "duplicate": 1,
        }
        assert {r.outcome for r in rows} == {"refused", "duplicate"}
        assert all(r.client == "127.0.0.1" for r in rows if r.outcome == "refused")
        assert all(sb.ONE_OFF_PI not in (r.detail or "") for r in rows)

    async def test_only_the_newest_are_kept_but_all_are_counted(self, engine: Engine) -> None:
        log = DeliveryRecorder(engine, keep=3)
        for i in range(5):
            log.note("stripe", "refused", "no_match", detail=f"#{i}")
        await log.flush()
        for i in range(5, 7):
            log.note("hubspot", "refused", "url_mismatch", detail=f"#{i}")
        await log.flush()
        with Session(engine) as s:
            rows = s.exec(select(LoggedDelivery).order_by(col(LoggedDelivery.id))).all()
            counts = {(c.provider, c.cause): c.count for c in s.exec(select(DeliveryCount))}
        assert [r.detail for r in rows] == ["#4", "#5", "#6"]
        assert counts == {("stripe", "no_match"): 5, ("hubspot", "url_mismatch"): 2}
