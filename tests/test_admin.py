"""The admin page over HTTP: off without a token, sign-in, cookie, CSRF, what it shows,
the needs-review claim, and the bounded delivery log the Stripe endpoint writes."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.app import create_app
from bridge.core.deliverylog import DeliveryLog
from bridge.core.intents import Status
from bridge.core.models import DeliveryCount
from bridge.core.models import DeliveryLog as DeliveryLogRow
from bridge.core.settings import ConfigError, Settings
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


class TestOff:
    def test_no_token_no_page(self, bridge_settings: Settings, engine: Engine) -> None:
        with run_asgi(create_app(bridge_settings, engine=engine)) as url:
            assert httpx.get(f"{url}/admin/").status_code == 404
            assert httpx.get(f"{url}/admin/login").status_code == 404

    def test_a_short_or_placeholder_token_refuses_to_start(self, tmp_path: Path) -> None:
        for token in ("short", "changeme"):
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


class TestActions:
    async def test_replay_needs_the_csrf_token(self, admin: Pipeline) -> None:
        create = await failed_create(admin)
        async with httpx.AsyncClient() as http:
            csrf = await sign_in(admin, http)
            url = f"{admin.url}/admin/intents/{create}/replay"
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
                f"{admin.url}/admin/intents/{create}/replay", data={"csrf": csrf}
            )
            assert answer.status_code == 409
            assert "only failed or needs_review" in answer.text

    async def test_unknown_ids_are_404s(self, admin: Pipeline) -> None:
        async with httpx.AsyncClient() as http:
            await sign_in(admin, http)
            for path in ("/admin/intents/nope", "/admin/licenses/nope", "/admin/deliveries/99"):
                assert (await http.get(f"{admin.url}{path}")).status_code == 404
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
                f"{admin.url}/admin/intents/{create}/replay", data={"csrf": csrf, "key": keys[2]}
            )
            assert answer.status_code == 303
        await admin.drain()
        await admin.drain()
        assert admin.intents()[create].status == Status.DONE.value
        assert admin.counts()["keys_created"] == 3

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
                f"/admin/intents/{create}",
                f"/admin/intents/{create}/plan",
                f"/admin/licenses/stripe:pi:{sb.ONE_OFF_PI}",
                "/admin/review",
            ]
            for path in pages:
                page = await http.get(f"{admin.url}{path}")
                assert page.status_code == 200, path
                for secret in (ADMIN_TOKEN, SECRET, admin.settings.token()):
                    assert secret not in page.text, path


class TestDeliveryLog:
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
            rows = s.exec(select(DeliveryLogRow)).all()
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
        log = DeliveryLog(engine, keep=3)
        for i in range(5):
            log.note("stripe", "refused", "no_match", detail=f"#{i}")
        await log.flush()
        for i in range(5, 7):
            log.note("hubspot", "refused", "url_mismatch", detail=f"#{i}")
        await log.flush()
        with Session(engine) as s:
            rows = s.exec(select(DeliveryLogRow).order_by(col(DeliveryLogRow.id))).all()
            counts = {(c.provider, c.cause): c.count for c in s.exec(select(DeliveryCount))}
        assert [r.detail for r in rows] == ["#4", "#5", "#6"]
        assert counts == {("stripe", "no_match"): 5, ("hubspot", "url_mismatch"): 2}
