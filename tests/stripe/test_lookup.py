"""``GET /checkout/{session_id}/license`` (bridge.stripe.lookup) over real HTTP, on both
databases: each answer, the page, the limit on unknown sessions, and what it never says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.app import create_app
from bridge.stripe import lookup
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import CONFIG, Pipeline, now, shifted

LOOKUP_CONFIG = CONFIG.replace("[stripe]\n", "[stripe]\nlicense_lookup = true\n", 1)


@pytest.fixture
def bridge_config() -> str:
    return LOOKUP_CONFIG


def purchase(template: int | None = None) -> dict[str, Any]:
    metadata = {"cryptolens_template_id": str(template)} if template else None
    return sb.checkout_session(metadata=metadata)


async def deliver(bridge: Pipeline, *events: dict[str, Any]) -> None:
    """Post ``events`` signed at the app's clock, set a minute after the first one."""
    bridge.clock.at = bridge.clock.at or events[0]["created"] + 60
    for event in events:
        answer = await bridge.post(event, timestamp=int(bridge.clock.at))
        assert answer.status_code == 200, answer.text


async def look(bridge: Pipeline, session: str = sb.SESSION, **headers: str) -> Any:
    return await bridge.http.get(f"{bridge.url}/checkout/{session}/license", headers=headers)


def sandbox_expiry(bridge: Pipeline) -> str:
    expires = int(bridge.only_key()["expires"])
    return datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TestAnswers:
    async def test_unknown_session_is_404(self, bridge: Pipeline) -> None:
        answer = await look(bridge)
        assert (answer.status_code, answer.json()) == (404, {"status": "unknown"})

    async def test_malformed_session_id_is_404_not_500(self, bridge: Pipeline) -> None:
        for session in ("pi_123", "cs_%00", "cs_" + "a" * 300, "cs_%E2%80%AE"):
            answer = await look(bridge, session)
            assert (answer.status_code, answer.json()) == (404, {"status": "unknown"}), session
        # A path that no longer names one session matches no route at all.
        assert (await look(bridge, "cs_a%2F..%2Fb")).status_code == 404

    async def test_stored_but_not_made_is_202(self, bridge: Pipeline) -> None:
        event = purchase()
        await deliver(bridge, event)
        answer = await look(bridge)
        assert (answer.status_code, answer.json()) == (202, {"status": "pending"})

    async def test_made_key_is_200_with_its_expiry(self, bridge: Pipeline) -> None:
        event = purchase()
        await deliver(bridge, event)
        await bridge.drain()
        bridge.assert_all_done()
        key = bridge.only_key()
        answer = await look(bridge)
        assert answer.status_code == 200
        assert answer.json() == {
            "status": "ready",
            "key": key["key"],
            "product_id": 1001,
            "expires": sandbox_expiry(bridge),
        }

    async def test_key_that_does_not_expire_has_null_expiry(self, bridge: Pipeline) -> None:
        event = purchase(template=3)  # the sandbox's perpetual template
        await deliver(bridge, event)
        await bridge.drain()
        answer = await look(bridge)
        assert answer.status_code == 200 and answer.json()["expires"] is None

    async def test_older_than_the_window_is_404(self, bridge: Pipeline) -> None:
        event = purchase()
        await deliver(bridge, event)
        await bridge.drain()
        bridge.clock.at = event["created"] + 7 * 86400  # the last second of the window
        assert (await look(bridge)).status_code == 200
        bridge.clock.at = event["created"] + 7 * 86400 + 1
        answer = await look(bridge)
        assert (answer.status_code, answer.json()) == (404, {"status": "unknown"})

    async def test_subscription_answers_the_paid_period_end_plus_grace(
        self, bridge: Pipeline
    ) -> None:
        # Moved to now, so the paid period outlasts the default template's 30 days.
        delta = now() - sb.checkout_session(mode="subscription")["created"]
        session = shifted(sb.checkout_session(mode="subscription"), delta)
        created = shifted(sb.subscription(), delta)
        first = shifted(sb.invoice(billing_reason="subscription_create"), delta)
        await deliver(bridge, session, created, first)
        await bridge.drain()
        bridge.assert_all_done()
        answer = await look(bridge)
        assert answer.status_code == 200
        period_end = sb.obj(created)["current_period_end"]
        want = datetime.fromtimestamp(period_end + 3 * 86400, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # ExtendLicense adds whole days: the key holds at least the target, to the second.
        assert answer.json()["expires"] == sandbox_expiry(bridge) >= want


class TestWhatItSays:
    async def test_headers_forbid_caching_framing_and_referrers(self, bridge: Pipeline) -> None:
        for accept in ("application/json", "text/html"):
            answer = await look(bridge, accept=accept)
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert "unsafe-inline" not in answer.headers["content-security-policy"]

    async def test_ready_answer_holds_nothing_but_the_key(self, bridge: Pipeline) -> None:
        event = purchase()
        await deliver(bridge, event)
        await bridge.drain()
        answer = await look(bridge)
        assert set(answer.json()) == {"status", "key", "product_id", "expires"}
        page = await look(bridge, accept="text/html")
        email = sb.obj(event)["customer_details"]["email"]
        assert email not in answer.text and email not in page.text
        assert sb.ONE_OFF_PI not in page.text

    async def test_html_pages_refresh_while_pending_and_not_once_ready(
        self, bridge: Pipeline
    ) -> None:
        unknown = await look(bridge, accept="text/html,application/xhtml+xml")
        assert unknown.status_code == 404 and 'http-equiv="refresh"' in unknown.text
        gave_up = await bridge.http.get(
            f"{bridge.url}/checkout/{sb.SESSION}/license?try={lookup.UNKNOWN_TRIES}",
            headers={"accept": "text/html"},
        )
        assert gave_up.status_code == 404 and 'http-equiv="refresh"' not in gave_up.text
        event = purchase()
        await deliver(bridge, event)
        pending = await look(bridge, accept="text/html")
        assert pending.status_code == 202 and 'http-equiv="refresh"' in pending.text
        await bridge.drain()
        ready = await look(bridge, accept="text/html")
        key = bridge.only_key()["key"]
        assert ready.status_code == 200 and 'http-equiv="refresh"' not in ready.text
        assert f'<code id="key">{key}</code>' in ready.text and 'id="copy"' in ready.text

    async def test_session_id_is_never_logged_whole(
        self, bridge: Pipeline, capfd: pytest.CaptureFixture[str]
    ) -> None:
        await look(bridge)
        out, err = capfd.readouterr()
        assert sb.SESSION[:12] + "…" in out + err
        assert sb.SESSION not in out + err

    def test_off_by_default_no_route(self, bridge_settings: Any) -> None:
        default = bridge_settings.model_copy()
        app = create_app(default)
        assert lookup.PATH in [getattr(r, "path", "") for r in app.routes]
        assert lookup.routes(False) == []


class TestRateLimit:
    async def test_unknown_sessions_are_throttled_per_client(self, bridge: Pipeline) -> None:
        event = purchase()
        await deliver(bridge, event)
        await bridge.drain()
        guesses = [f"cs_test_guess{n:04d}" for n in range(7)]
        answers = [(await look(bridge, g)).status_code for g in guesses[:6]]
        assert answers == [404] * 6  # the sixth failure starts a 1 s wait
        throttled = await look(bridge, guesses[6])
        assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
        assert throttled.json() == {"status": "throttled"}
        # While it waits, even a real session is not looked up for that client.
        assert (await look(bridge)).status_code == 429
        page = await look(bridge, accept="text/html")
        assert page.status_code == 429 and 'content="1; url=' in page.text
        bridge.clock.at = (bridge.clock.at or 0) + 1
        assert (await look(bridge)).status_code == 200

    async def test_a_pending_page_polls_freely(self, bridge: Pipeline) -> None:
        event = purchase()
        await deliver(bridge, event)
        for _ in range(20):
            assert (await look(bridge)).status_code == 202
