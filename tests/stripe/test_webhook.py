"""``POST /webhooks/stripe``: bad input gets a clear 4xx and changes nothing."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from bridge.app import create_app
from bridge.core.errors import ConfigError
from bridge.core.signing import sign
from bridge.store.db import make_engine
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import SECRET, Pipeline, make_settings
from tests.fixtures.servers import SandboxServer, run_asgi

NOW = 1_717_531_265  # what the app's clock reads in tests that set it


def nothing_happened(bridge: Pipeline) -> None:
    assert bridge.events() == []
    assert bridge.intents() == {}
    assert bridge.counts()["calls_received"] == 0


class TestRefused:
    async def test_forged_signature_is_401(self, bridge: Pipeline) -> None:
        response = await bridge.post(
            sb.load("checkout.session.completed.payment"), secret="whsec_forged"
        )
        assert response.status_code == 401
        assert response.json()["error"] == "bad_signature"
        await bridge.drain()
        nothing_happened(bridge)

    # The app's clock stands still at NOW, so each timestamp is exactly where it says.
    @pytest.mark.parametrize("offset", [-301, 301], ids=["stale", "from the future"])
    async def test_signature_outside_the_tolerance_is_401(
        self, bridge: Pipeline, offset: int
    ) -> None:
        bridge.clock.at = NOW
        response = await bridge.post(
            sb.load("checkout.session.completed.payment"), timestamp=NOW + offset
        )
        assert response.status_code == 401
        assert response.json()["error"] == "bad_signature"
        nothing_happened(bridge)

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Stripe-Signature": ""},
            {"Stripe-Signature": "garbage"},
            {"Stripe-Signature": "t=x,v1=y"},
        ],
    )
    async def test_missing_or_garbled_header_is_400(
        self, bridge: Pipeline, headers: dict[str, str]
    ) -> None:
        response = await bridge.post(sb.load("checkout.session.completed.payment"), headers=headers)
        assert response.status_code == 400
        assert response.json()["error"] == "bad_signature_header"
        nothing_happened(bridge)

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            (b"{not json", "bad_json"),
            (b"\xff\xfe\x00", "bad_encoding"),
            (b'{"id": "evt_1", "type": "x", "data": {}, "n": NaN}', "bad_json"),
            (b'{"id": "evt_1", "type": "x", "data": {"name": "\\ud800"}}', "bad_json"),
            # Nested deeper than the parser recurses: still a 400, not a crash.
            (b"[" * 100_000 + b"]" * 100_000, "bad_json"),
            (b'{"id": "evt_1", "type": "x", "data": ' + b"[" * 100_000, "bad_json"),
            # A secret to redact sends the redaction down every level: too deep for it.
            (
                b'{"id": "evt_1", "type": "x", "data": {"client_secret": "s", "deep": '
                + b"[" * 900
                + b"]" * 900
                + b"}}",
                "bad_json",
            ),
            (b"[1, 2]", "not_an_event"),
            (b'{"id": 1, "type": "x", "data": {}}', "not_an_event"),
            (b'{"id": "evt_1", "type": "invoice.paid"}', "not_an_event"),
        ],
    )
    async def test_signed_but_malformed_body_is_400(
        self, bridge: Pipeline, body: bytes, error: str
    ) -> None:
        response = await bridge.post(body)
        assert response.status_code == 400
        assert response.json()["error"] == error
        nothing_happened(bridge)

    @pytest.mark.parametrize(
        "encode",
        [
            pytest.param(lambda text: b"\xef\xbb\xbf" + text.encode(), id="utf-8 with BOM"),
            pytest.param(lambda text: text.encode("utf-16"), id="utf-16"),
            # ASCII text without a byte order mark: also UTF-8, with NULs. It once hid
            # client_secret from the redaction, and PostgreSQL refused to store it.
            pytest.param(lambda text: text.encode("utf-16-le"), id="utf-16-le"),
            pytest.param(lambda text: text.encode("utf-16-be"), id="utf-16-be"),
            pytest.param(lambda text: text.encode("utf-32"), id="utf-32"),
            pytest.param(lambda text: text.encode("utf-32-le"), id="utf-32-le"),
            pytest.param(lambda text: text.encode("latin-1"), id="latin-1"),
        ],
    )
    async def test_a_body_that_is_not_utf_8_is_400(self, bridge: Pipeline, encode: Any) -> None:
        # Stripe sends UTF-8 JSON; anything else is refused before it is parsed.
        event = sb.load("checkout.session.completed.payment")
        sb.obj(event)["client_secret"] = "cs_test_secret_value"
        sb.obj(event)["customer_details"]["name"] = "Jürgen Größe"
        response = await bridge.post(encode(json.dumps(event, ensure_ascii=False)))
        assert response.status_code == 400
        assert response.json()["error"] == "bad_encoding"
        assert "UTF-8" in response.json()["detail"]
        nothing_happened(bridge)

    async def test_signed_event_missing_fields_is_400_and_not_stored(
        self, bridge: Pipeline
    ) -> None:
        event = sb.load("invoice.paid.subscription_cycle")
        del sb.obj(event)["amount_paid"]
        response = await bridge.post(event)
        assert response.status_code == 400
        assert response.json()["error"] == "bad_payload"
        assert "amount_paid" in response.json()["detail"]
        nothing_happened(bridge)

    async def test_oversized_body_is_413(self, bridge: Pipeline) -> None:
        event = sb.load("checkout.session.completed.payment")
        event["padding"] = "x" * (1024 * 1024)
        response = await bridge.post(event)
        assert response.status_code == 413
        nothing_happened(bridge)

    async def test_oversized_chunked_body_is_413(self, bridge: Pipeline) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"x" * 65536

        response = await bridge.http.post(
            f"{bridge.url}/webhooks/stripe",
            content=chunks(),
            headers={"Stripe-Signature": sign(b"", SECRET)},
        )
        assert response.status_code == 413
        nothing_happened(bridge)

    async def test_wrong_method_is_405(self, bridge: Pipeline) -> None:
        response = await bridge.http.get(f"{bridge.url}/webhooks/stripe")
        assert response.status_code == 405

    async def test_trailing_slash_goes_through_starlette(self, bridge: Pipeline) -> None:
        # Only the exact path skips Starlette's router; anything else is routed as usual.
        body = json.dumps(sb.load("checkout.session.completed.payment")).encode()
        response = await bridge.http.post(
            f"{bridge.url}/webhooks/stripe/",
            content=body,
            headers={"Stripe-Signature": sign(body, SECRET)},
        )
        assert response.status_code == 307
        assert response.headers["location"].endswith("/webhooks/stripe")
        nothing_happened(bridge)

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param(lambda e: e.update(created=2**63), id="created 2**63"),
            pytest.param(lambda e: e.update(created=-(2**63) - 1), id="created -2**63-1"),
            pytest.param(lambda e: sb.obj(e).update(amount_total=10**30), id="amount 10**30"),
            pytest.param(
                lambda e: sb.obj(e)["metadata"].update(n=[{"deep": 2**64 - 1}]),
                id="nested and unread 2**64-1",
            ),
            pytest.param(lambda e: e.update(extra=2**70), id="unread 2**70"),
        ],
    )
    async def test_integer_outside_64_bits_is_400(self, bridge: Pipeline, change: Any) -> None:
        # The database's integers stop at 2**63 - 1: these once answered 500 (SQLite) or
        # 503 on every retry (PostgreSQL), or were stored whole.
        event = sb.load("checkout.session.completed.payment")
        change(event)
        response = await bridge.post(event)
        assert response.status_code == 400
        assert response.json()["error"] == "bad_json"
        assert "64-bit" in response.json()["detail"]
        nothing_happened(bridge)


class TestAccepted:
    @pytest.mark.parametrize("offset", [-300, 300], ids=["oldest", "newest"])
    async def test_signature_at_the_edge_of_the_tolerance_is_accepted(
        self, bridge: Pipeline, offset: int
    ) -> None:
        bridge.clock.at = NOW
        response = await bridge.post(
            sb.load("checkout.session.completed.payment"), timestamp=NOW + offset
        )
        assert response.status_code == 200
        assert len(bridge.events()) == 1

    async def test_unhandled_type_is_recorded_as_ignored(self, bridge: Pipeline) -> None:
        event = sb.envelope("customer.created", {"id": "cus_1", "object": "customer"}, created=1)
        response = await bridge.post(event)
        assert response.status_code == 200
        assert response.json()["intents"] == 0
        [stored] = bridge.events()
        assert (stored.outcome, stored.type) == ("ignored", "customer.created")
        assert stored.note is not None and "customer.created" in stored.note

    async def test_an_event_after_2038_is_stored(self, bridge: Pipeline) -> None:
        # PostgreSQL's INTEGER ends at 2**31 - 1 (2038-01-19): found by the property test.
        event = sb.load("checkout.session.completed.payment")
        event["created"] = 2**31
        response = await bridge.post(event)
        assert response.status_code == 200
        assert {i.occurred_at for i in bridge.intents().values()} == {2**31}

    async def test_integers_at_the_edges_of_64_bits_and_long_digit_strings_are_read(
        self, bridge: Pipeline
    ) -> None:
        event = sb.load("checkout.session.completed.payment")
        sb.obj(event)["metadata"].update(
            low=-(2**63), high=2**63 - 1, reference="12345678901234567890123"
        )
        response = await bridge.post(event)
        assert response.status_code == 200
        [stored] = bridge.events()
        assert json.loads(stored.payload) == event

    async def test_rotated_secrets_both_verify(
        self, bridge: Pipeline, engine: Engine, sandbox_server: SandboxServer, tmp_path: Path
    ) -> None:
        config = tmp_path / "bridge.toml"
        config.write_text("[stripe]\ndefault_template_id = 1\n")
        settings = make_settings(
            database_url=bridge.settings.database_url,
            redis_url=bridge.settings.redis_url,
            sandbox_url=sandbox_server.url,
            config_path=config,
            STRIPE_WEBHOOK_SECRET="whsec_old_one, whsec_new_one",
        )
        with run_asgi(create_app(settings, engine=engine)) as url:
            old = sb.load("checkout.session.completed.payment")
            new = sb.load("customer.subscription.created")
            async with httpx.AsyncClient() as http:
                for event, secret in ((old, "whsec_old_one"), (new, "whsec_new_one")):
                    body = json.dumps(event).encode()
                    response = await http.post(
                        f"{url}/webhooks/stripe",
                        content=body,
                        headers={"Stripe-Signature": sign(body, secret)},
                    )
                    assert response.status_code == 200
        assert len(bridge.events()) == 2

    async def test_database_down_is_503(
        self, redis_url: str, sandbox_server: SandboxServer, tmp_path: Path
    ) -> None:
        missing = tmp_path / "no" / "such" / "dir" / "bridge.db"
        config = tmp_path / "bridge.toml"
        config.write_text("")
        settings = make_settings(
            database_url=f"sqlite:///{missing}",
            redis_url=redis_url,
            sandbox_url=sandbox_server.url,
            config_path=config,
        )
        engine = make_engine(settings.database_url)
        app = create_app(settings, engine=engine, serve_operator=True)
        with run_asgi(app) as url:
            body = json.dumps(sb.load("checkout.session.completed.payment")).encode()
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{url}/webhooks/stripe",
                    content=body,
                    headers={"Stripe-Signature": sign(body, SECRET)},
                )
                ready = await http.get(f"{url}/readyz")
                detailed = await http.get(f"{app.state.operator.url}/readyz")
        engine.dispose()
        assert response.status_code == 503
        assert (ready.status_code, ready.json()) == (503, {"ready": False})
        assert detailed.status_code == 503
        assert detailed.json()["database"].startswith("unavailable")


class TestHealth:
    async def test_healthz_and_readyz(self, bridge: Pipeline) -> None:
        assert (await bridge.http.get(f"{bridge.url}/healthz")).json() == {"status": "ok"}
        ready = await bridge.http.get(f"{bridge.url}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True}  # what is up or down: the operator's
        detailed = await bridge.http.get(f"{bridge.operator_url}/readyz")
        assert detailed.json() == {"ready": True, "database": "ok", "redis": "ok"}

    async def test_metrics_count_outcomes(self, bridge: Pipeline) -> None:
        await bridge.post(sb.load("checkout.session.completed.payment"), secret="whsec_forged")
        text = (await bridge.http.get(f"{bridge.operator_url}/metrics")).text
        assert 'bridge_webhooks_total{outcome="bad_signature",provider="stripe"}' in text

    async def test_the_webhook_port_serves_no_metrics(self, bridge: Pipeline) -> None:
        assert (await bridge.http.get(f"{bridge.url}/metrics")).status_code == 404
        assert bridge.operator_url.startswith("http://127.0.0.1:")


class TestSecrets:
    @pytest.mark.parametrize("secret", ["", "  ", "changeme", "whsec_ok,"])
    def test_app_refuses_to_start_without_a_real_secret(
        self, secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in [n for n in os.environ if n.startswith("CRM_SECRET_")]:
            monkeypatch.delenv(name)
        settings = make_settings(
            database_url="sqlite://",
            redis_url="redis://127.0.0.1:1/0",
            sandbox_url="http://127.0.0.1:1/api/",
            config_path=tmp_path / "missing.toml",
            STRIPE_WEBHOOK_SECRET=secret,
        )
        with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
            create_app(settings)

    async def test_a_crm_only_bridge_starts_without_a_stripe_secret(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CRM_SECRET_ZOHO", "crm_secret_for_zoho_only_0001")
        (tmp_path / "crm.toml").write_text("[crm.zoho]\ndefault_template_id = 1\n")
        settings = make_settings(
            database_url=f"sqlite:///{tmp_path / 'crm.db'}",
            redis_url="redis://127.0.0.1:1/0",
            sandbox_url="http://127.0.0.1:1/api/",
            config_path=tmp_path / "crm.toml",
            STRIPE_WEBHOOK_SECRET="",
        )
        assert settings.webhook_sources() == ["crm:zoho"]
        app = create_app(settings)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bridge"
        ) as client:
            response = await client.post("/webhooks/stripe", content=b"{}")
        assert response.status_code == 404  # no secret, no endpoint: nothing unsigned taken
