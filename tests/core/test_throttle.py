"""Failed credential checks throttled per client (bridge.core.throttle), and the three
endpoints that check a credential someone could guess: the admin sign-in, the Pipedrive
webhook's HTTP Basic, ``POST /usage``'s bearer tokens."""

from __future__ import annotations

import base64

import httpx
import pytest
from sqlalchemy import Engine
from structlog.testing import capture_logs

from bridge.core import throttle as throttle_module
from bridge.core.settings import Settings
from bridge.core.throttle import CAP, FREE, Throttle, client_key
from tests.fixtures.admin import ADMIN_TOKEN, CSRF
from tests.fixtures.crm import PIPEDRIVE_AUTH, serve_crm
from tests.fixtures.pipeline import Clock, Pipeline
from tests.fixtures.servers import SandboxServer
from tests.fixtures.usage import TOKEN, UsageBridge

T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> float:
        return self.at


def failures(kind: str, outcome: str) -> float:
    value: float = throttle_module.CHECKS.labels(kind=kind, outcome=outcome)._value.get()
    return value


class TestThrottle:
    def test_free_failures_then_waits_that_double_up_to_the_cap(self) -> None:
        clock = FakeClock()
        t = Throttle(clock)
        for _ in range(FREE):
            assert t.wait("admin", "a") is None
            t.failed("admin", "a")
        assert t.wait("admin", "a") is None  # the FREE-th failure is still free
        waits = []
        for _ in range(10):
            t.failed("admin", "a")
            waits.append(t.wait("admin", "a"))
            clock.at += waits[-1] or 0  # the client waits it out, then fails again
        assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]

    def test_a_wait_counts_down_with_the_clock(self) -> None:
        clock = FakeClock()
        t = Throttle(clock, free=0, base=10)
        t.failed("usage", "a")
        assert t.wait("usage", "a") == 10
        clock.at += 9.5
        assert t.wait("usage", "a") == 1  # Retry-After is whole seconds, rounded up
        clock.at += 0.5
        assert t.wait("usage", "a") is None

    def test_a_success_forgets_the_failures(self) -> None:
        clock = FakeClock()
        t = Throttle(clock)
        for _ in range(FREE + 3):
            t.failed("pipedrive", "a")
        clock.at += CAP
        t.succeeded("pipedrive", "a")
        t.failed("pipedrive", "a")
        assert t.wait("pipedrive", "a") is None

    def test_another_client_or_kind_is_never_locked_out(self) -> None:
        t = Throttle(FakeClock())
        for _ in range(1000):
            t.failed("admin", "attacker")
        assert t.wait("admin", "attacker") == CAP
        assert t.wait("admin", "operator") is None
        assert t.wait("pipedrive", "attacker") is None

    def test_failures_leak_away(self) -> None:
        clock = FakeClock()
        t = Throttle(clock)
        for _ in range(50):
            t.failed("admin", "a")
        clock.at += 50 * throttle_module.LEAK
        t.failed("admin", "a")  # one failure, after a long quiet: free again
        assert t.wait("admin", "a") is None

    def test_memory_is_bounded_by_forgetting_the_least_recent(self) -> None:
        t = Throttle(FakeClock(), free=0, max_clients=3)
        for client in ("a", "b", "c", "d"):
            t.failed("admin", client)
        assert len(t._records) == 3
        assert t.wait("admin", "a") is None  # forgotten: its free failures back, no more
        assert t.wait("admin", "d") is not None

    def test_counted_and_logged_once_per_wait_without_a_secret(self) -> None:
        t = Throttle(FakeClock(), free=1)
        failed, throttled = failures("test", "failed"), failures("test", "throttled")
        with capture_logs() as logs:
            t.failed("test", "10.0.0.1")
            t.failed("test", "10.0.0.1")  # the wait starts: one line
            t.failed("test", "10.0.0.1")  # extended, not started: no new line
            t.wait("test", "10.0.0.1")
        assert failures("test", "failed") - failed == 3
        assert failures("test", "throttled") - throttled == 1
        started = [e for e in logs if e["event"] == "credential checks throttled"]
        assert len(started) == 1
        assert started[0]["client"] == "10.0.0.1" and started[0]["kind"] == "test"


class TestClientKey:
    @staticmethod
    def scope(peer: str, *forwarded: str) -> dict[str, object]:
        headers = [(b"x-forwarded-for", f.encode()) for f in forwarded]
        return {"client": (peer, 50000), "headers": headers}

    def test_the_peer_unless_the_proxy_is_trusted(self) -> None:
        scope = self.scope("10.0.0.9", "1.2.3.4")
        assert client_key(scope, trust_forwarded=False) == "10.0.0.9"

    def test_behind_a_trusted_proxy_the_address_it_appended(self) -> None:
        # The client wrote "6.6.6.6" itself; the proxy appended the address it saw last.
        scope = self.scope("10.0.0.9", "6.6.6.6, 203.0.113.7")
        assert client_key(scope, trust_forwarded=True) == "203.0.113.7"
        scope = self.scope("10.0.0.9", "6.6.6.6", "203.0.113.8")
        assert client_key(scope, trust_forwarded=True) == "203.0.113.8"
        assert client_key(self.scope("10.0.0.9"), trust_forwarded=True) == "10.0.0.9"

    def test_ipv6_by_its_64(self) -> None:
        one = client_key(self.scope("2001:db8:1:2::1"), trust_forwarded=False)
        other = client_key(self.scope("2001:db8:1:2:ffff::9"), trust_forwarded=False)
        assert one == other == "2001:db8:1:2::/64"
        assert client_key(self.scope("::ffff:10.1.2.3"), trust_forwarded=False) == "10.1.2.3"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


class TestPipedrive:
    async def test_guessing_is_throttled_and_the_real_sender_gets_in_after(
        self, crm_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        clock = Clock()
        clock.at = T0
        settings = crm_settings.model_copy(update={"trust_forwarded": True})
        async with serve_crm(settings, engine, sandbox_server, clock) as crm:
            url = f"{crm.url}/webhooks/pipedrive"
            attacker = {"X-Forwarded-For": "198.51.100.66"}
            wrong = basic(PIPEDRIVE_AUTH[0], "guess")
            codes = [
                (await crm.http.post(url, content=b"{}", headers={**wrong, **attacker})).status_code
                for _ in range(FREE + 1)
            ]
            assert codes == [401] * (FREE + 1)
            # Now even the right password is not compared for this client: 429.
            right = basic(*PIPEDRIVE_AUTH)
            refused = await crm.http.post(url, content=b"{}", headers={**right, **attacker})
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["error"] == "throttled"
            # Pipedrive, at its own address, is not locked out by the attacker.
            sender = {"X-Forwarded-For": "185.166.142.1"}
            ok = await crm.http.post(url, content=b"{}", headers={**right, **sender})
            assert ok.status_code == 400  # past the credentials: the body is no delivery
            clock.at += 1
            after = await crm.http.post(url, content=b"{}", headers={**right, **attacker})
            assert after.status_code == 400


class TestUsage:
    async def test_wrong_tokens_are_throttled_per_client(self, usage_bridge: UsageBridge) -> None:
        url = f"{usage_bridge.url}/usage"
        wrong = {"Authorization": "Bearer usage-token-that-is-wrong-0000"}
        for _ in range(FREE + 1):
            assert (await usage_bridge.http.post(url, json=[], headers=wrong)).status_code == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        refused = await usage_bridge.http.post(url, json=[], headers=right)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        usage_bridge.clock.at = (usage_bridge.clock.at or T0) + CAP
        assert (await usage_bridge.http.post(url, json=[], headers=right)).status_code == 400


class TestAdmin:
    async def test_wrong_tokens_are_throttled_then_the_right_one_works(
        self, admin: Pipeline
    ) -> None:
        admin.clock.at = T0
        async with httpx.AsyncClient() as http:
            page = await http.get(f"{admin.url}/admin/login")
            found = CSRF.search(page.text)
            assert found is not None

            async def login(token: str) -> httpx.Response:
                page = await http.get(f"{admin.url}/admin/login")
                csrf = CSRF.search(page.text)
                assert csrf is not None
                return await http.post(
                    f"{admin.url}/admin/login", data={"csrf": csrf.group(1), "token": token}
                )

            codes = [(await login(f"wrong-{i}")).status_code for i in range(FREE + 1)]
            assert codes == [401] * (FREE + 1)
            refused = await login(ADMIN_TOKEN)  # right, but not even compared now
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "1"
            assert "try again in 1 s" in refused.text
            admin.clock.at = T0 + 1
            assert (await login(ADMIN_TOKEN)).status_code == 303


@pytest.mark.parametrize("kind", ["admin", "pipedrive", "usage"])
def test_each_kind_is_named_in_the_metric(kind: str) -> None:
    before = failures(kind, "failed")
    Throttle(FakeClock()).failed(kind, "x")
    assert failures(kind, "failed") == before + 1
