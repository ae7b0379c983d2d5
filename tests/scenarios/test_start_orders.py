"""A subscription's three start events, in every order: one key, of the named template.

A subscription starts with ``checkout.session.completed`` (subscription mode),
``customer.subscription.created`` and the first ``invoice.paid`` (billing_reason
``subscription_create``), which Stripe delivers in no fixed order, each maybe twice.
Whatever the order, the shape (API 2024-06-20 or 2025-03-31.basil), where the template
is named and whether the worker has ``STRIPE_API_KEY``, the outcome must be the same:
exactly one key, of the template the most specific hint names (the session's metadata
over the subscription's over the price mapping; else the default), linked to the buyer's
Cryptolens customer, expiring at the paid period end + grace, and one purchase event.
The worker runs after every delivery, as in production: with ``STRIPE_API_KEY`` the key
is made after the first (Stripe says what the others would), without it only once no
event still to come can name a richer template, and never by waiting for the clock once
all three have arrived.

The matrix runs in-process to stay fast: deliveries go to the web app through
``httpx.ASGITransport`` (its lifespan entered here), and the worker's job function runs
directly on every pending intent against one shared sandbox, with a clock the test moves
(``Runtime.clock``) so that the start wait ends exactly when the test says. Stripe's API
is the local stand-in (``tests.fixtures.fake_stripe``) over HTTP.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import Retry
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from bridge.app import create_app
from bridge.core.settings import Settings
from bridge.core.signing import sign
from bridge.store.tables import Intent, License, utcnow
from jobs.runner import run_intent
from jobs.runtime import Runtime
from tests.fixtures import stripe_builders as sb
from tests.fixtures.fake_stripe import API_KEY, FakeStripe
from tests.fixtures.pipeline import SECRET, make_settings, now, shifted
from tests.fixtures.servers import SandboxServer

DAY = 86400
WAIT = 60.0  # BRIDGE_START_WAIT_SECONDS
EMAIL = "example@example.com"  # the buyer, as the session and the first invoice name it
SUB_REF = f"stripe:sub:{sb.SUB}"
CREATE = f"{SUB_REF}:create_key"
NAMED, DEFAULT = 3, 1  # the template the purchase names; default_template_id
VAGUER = 2  # what a less specific hint names, where two do

START_EVENTS = ("checkout", "subscription", "invoice")
ORDERS = list(itertools.permutations(START_EVENTS))


@dataclass(frozen=True)
class Naming:
    """Where the purchase names its template, and what that makes of each start event."""

    name: str
    toml: str
    session_metadata: dict[str, str] = field(default_factory=dict)
    subscription_metadata: dict[str, str] = field(default_factory=dict)
    template: int = NAMED
    source: str = "session"

    def names_the_richest(self, event: str) -> bool:
        """Whether ``event`` carries the richest hint there is (the session's metadata):
        then nothing still to come can change the answer."""
        return event == "checkout" and bool(self.session_metadata)


BASE_TOML = """
[stripe]
default_template_id = 1
grace_days = 3

[cryptolens]
sole_key_maker = [1001]
"""
MAPPED_TOML = (
    BASE_TOML
    + f"""
[[stripe.price]]
id = "{sb.PRICE}"
template_id = {NAMED}
"""
)
METADATA = {"cryptolens_template_id": str(NAMED)}
VAGUER_METADATA = {"cryptolens_template_id": str(VAGUER)}
VAGUER_MAPPING_TOML = MAPPED_TOML.replace(f"template_id = {NAMED}", f"template_id = {VAGUER}")
NAMINGS = {
    n.name: n
    for n in (
        Naming("mapping", MAPPED_TOML, source="mapping"),
        Naming("session_metadata", BASE_TOML, session_metadata=METADATA),
        Naming(
            "subscription_metadata", BASE_TOML, subscription_metadata=METADATA, source="purchase"
        ),
        Naming("none", BASE_TOML, template=DEFAULT, source="default"),
        # Two hints: the richer one must win whichever comes first (issue 15, item 2).
        Naming("session_over_mapping", VAGUER_MAPPING_TOML, session_metadata=METADATA),
        Naming(
            "session_over_subscription",
            BASE_TOML,
            session_metadata=METADATA,
            subscription_metadata=VAGUER_METADATA,
        ),
    )
}


def start_events(naming: Naming, *, basil: bool, delta: int) -> dict[str, dict[str, Any]]:
    """The three start events of the fixtures' subscription, moved ``delta`` seconds on."""
    events = {
        "checkout": sb.checkout_session(
            mode="subscription", metadata=naming.session_metadata, basil=basil
        ),
        "subscription": sb.subscription(metadata=naming.subscription_metadata, basil=basil),
        "invoice": sb.invoice(
            billing_reason="subscription_create",
            customer_email=EMAIL,
            subscription_metadata=naming.subscription_metadata,
            basil=basil,
        ),
    }
    return {name: shifted(event, delta) for name, event in events.items()}


def stripe_knows(stripe: FakeStripe, events: dict[str, dict[str, Any]]) -> None:
    """Stripe's API holds what the events are about: the subscription, and the Checkout
    Session that created it (when ``events`` has one)."""
    stripe.subscription_objects[sb.SUB] = sb.obj(events["subscription"])
    if "checkout" in events:
        stripe.checkout_sessions.append(sb.obj(events["checkout"]))


class Clock:
    """``Runtime.clock``: stands still until the test moves it."""

    def __init__(self) -> None:
        self.at = utcnow()

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Bridge:
    """The web app in-process, the worker's job function, and one shared sandbox."""

    settings: Settings
    engine: Engine
    http: httpx.AsyncClient
    runtime: Runtime
    sandbox: SandboxServer
    clock: Clock
    stripe: FakeStripe | None  # Stripe's API, when the worker has STRIPE_API_KEY

    async def deliver(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)}
        response = await self.http.post("/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 200, response.text

    async def work(self) -> list[str]:
        """Run every pending intent as the worker's job would, until none can run now (the
        rest wait for the clock); returns what each run ended in (``retry``: it waits)."""
        ctx = {"runtime": self.runtime}
        outcomes: list[str] = []
        for _ in range(20):
            progressed = False
            for intent_id in self.pending():
                try:
                    outcomes.append(await run_intent(ctx, intent_id))
                    progressed = True
                except Retry:
                    outcomes.append("retry")
            if not progressed:
                return outcomes
        raise AssertionError(f"the worker does not settle: {outcomes}")

    def stand_at_wait(self, offset: float) -> None:
        """Move the clock to ``offset`` seconds past the end of the key creation's start
        wait (measured, as the worker does, from when the intent was stored)."""
        created = self.intents()[CREATE].created_at
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        self.clock.at = max(self.clock.at, created + timedelta(seconds=WAIT + offset))

    def pending(self) -> list[str]:
        with Session(self.engine) as s:
            rows = s.exec(
                select(Intent.id).where(col(Intent.status) == "pending").order_by(col(Intent.id))
            )
            return list(rows.all())

    def intents(self) -> dict[str, Intent]:
        with Session(self.engine) as s:
            return {i.id: i for i in s.exec(select(Intent)).all()}

    def license(self) -> License | None:
        with Session(self.engine) as s:
            return s.get(License, SUB_REF)

    def has_key(self) -> bool:
        license_ = self.license()
        return license_ is not None and license_.key is not None

    def result(self, intent_id: str) -> dict[str, Any]:
        intent = self.intents()[intent_id]
        assert intent.result is not None, (intent.status, intent.last_error)
        result: dict[str, Any] = json.loads(intent.result)
        return result


@pytest.fixture
def make_bridge(
    request: pytest.FixtureRequest,
    database_url: str,
    redis_url: str,
    sandbox_server: SandboxServer,
    engine: Engine,
    tmp_path: Path,
) -> Callable[..., Any]:
    """``async with make_bridge(toml, api=...) as bridge``: a bridge on this test's
    database; with ``api``, its worker has STRIPE_API_KEY for the Stripe stand-in."""

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(toml: str, *, api: bool = False) -> AsyncIterator[Bridge]:
        config = tmp_path / "bridge.toml"
        config.write_text(toml)
        stripe: FakeStripe | None = request.getfixturevalue("fake_stripe") if api else None
        api_env = {"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": stripe.url} if stripe else {}
        settings = make_settings(
            database_url=database_url,
            redis_url=redis_url,
            sandbox_url=sandbox_server.url,
            config_path=config,
            BRIDGE_START_WAIT_SECONDS=WAIT,
            **api_env,
        )
        app = create_app(settings, engine=engine)
        runtime = Runtime.build(settings, engine=engine)
        clock = Clock()
        runtime.clock = clock
        try:
            # ASGITransport runs no lifespan: enter it here, and hand each request its
            # state as a server would.
            async with app.router.lifespan_context(app) as state:

                async def served(scope: Scope, receive: Receive, send: Send) -> None:
                    scope["state"] = dict(state or {})
                    await app(scope, receive, send)

                transport = httpx.ASGITransport(app=served)
                async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as http:
                    yield Bridge(settings, engine, http, runtime, sandbox_server, clock, stripe)
        finally:
            await runtime.close()

    return start


def assert_one_key_of(bridge: Bridge, naming: Naming, *, delta: int) -> None:
    """Exactly one key, of the named template, linked to the buyer, expiring at the paid
    period end + grace; one purchase event; every intent done."""
    left = {i.id: (i.status, i.last_error) for i in bridge.intents().values() if i.status != "done"}
    assert not left, left
    state = bridge.sandbox.state()
    assert state["counts"]["keys_created"] == 1, state["counts"]
    [key] = state["keys"]
    assert key["template_id"] == naming.template
    license_ = bridge.license()
    assert license_ is not None
    assert (license_.key, license_.template_id) == (key["key"], naming.template)
    result = bridge.result(CREATE)
    assert result["template_source"] == naming.source
    [customer] = state["customers"]
    assert customer["email"] == EMAIL
    assert key["customer_id"] == customer["id"] == license_.customer_id
    target = sb.T1 + delta + 3 * DAY
    assert target <= key["expires"] < target + DAY
    [event] = state["events"]
    assert (event["event_name"], event["key"], event["value"]) == ("purchase", key["key"], 2000)


async def run_start(
    bridge: Bridge, naming: Naming, order: tuple[str, ...], *, basil: bool, twice: bool
) -> int:
    """Deliver the start events in ``order`` (each twice, the second after the worker ran
    on the first, with ``twice``), running the worker after each, the clock standing
    still. Returns the time shift of the events."""
    delta = now() - sb.T0
    events = start_events(naming, basil=basil, delta=delta)
    if bridge.stripe is not None:
        stripe_knows(bridge.stripe, events)
    for step, name in enumerate(order):
        await bridge.deliver(events[name])
        outcomes = await bridge.work()
        seen = order[: step + 1]
        if bridge.stripe is not None:
            # Stripe tells at once what the events still to come would say.
            assert bridge.has_key(), (seen, outcomes)
        elif "checkout" not in seen or (step == 0 and not naming.names_the_richest(name)):
            # Without Stripe's word, the session may still name a richer template.
            assert not bridge.has_key(), (seen, outcomes)
            assert "retry" in outcomes and bridge.sandbox.state()["counts"]["keys"] == 0
        elif step == 0:
            assert bridge.has_key(), (seen, outcomes)
        if twice:
            await bridge.deliver(events[name])
            await bridge.work()
    # All three arrived: nothing can change the answer any more, no wait is left.
    assert bridge.has_key()
    return delta


def _case(naming: str, order: tuple[str, ...], basil: bool, twice: bool, api: bool) -> Any:
    shape, times = "basil" if basil else "2024", "twice" if twice else "once"
    where = "api" if api else "noapi"
    return pytest.param(
        naming, order, basil, twice, api, id=f"{naming}-{'_'.join(order)}-{shape}-{times}-{where}"
    )


CASES = [
    _case(naming, order, basil, twice, api)
    for naming in NAMINGS
    for order in ORDERS
    for basil in (False, True)
    for twice in (False, True)
    for api in (False, True)
    # With STRIPE_API_KEY the first event decides: duplicates are covered without it.
    if not (api and twice)
]
# PostgreSQL: each way of naming the template, both shapes, orders, duplicates and the
# API key spread.
PG_CASES = [
    _case(naming, order, basil, twice, api)
    for i, naming in enumerate(NAMINGS)
    for order, basil, twice, api in (
        (ORDERS[i], False, False, i % 2 == 0),
        (ORDERS[5 - i], True, True, i % 2 == 1),
    )
]


class TestStartOrders:
    @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
    @pytest.mark.parametrize(("naming", "order", "basil", "twice", "api"), CASES)
    async def test_every_order_makes_one_key_of_the_named_template(
        self,
        make_bridge: Callable[..., Any],
        naming: str,
        order: tuple[str, ...],
        basil: bool,
        twice: bool,
        api: bool,
    ) -> None:
        how = NAMINGS[naming]
        async with make_bridge(how.toml, api=api) as bridge:
            delta = await run_start(bridge, how, order, basil=basil, twice=twice)
            assert_one_key_of(bridge, how, delta=delta)

    @pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
    @pytest.mark.parametrize(("naming", "order", "basil", "twice", "api"), PG_CASES)
    async def test_on_postgres(
        self,
        make_bridge: Callable[..., Any],
        naming: str,
        order: tuple[str, ...],
        basil: bool,
        twice: bool,
        api: bool,
    ) -> None:
        how = NAMINGS[naming]
        async with make_bridge(how.toml, api=api) as bridge:
            delta = await run_start(bridge, how, order, basil=basil, twice=twice)
            assert_one_key_of(bridge, how, delta=delta)


class TestHintsMerge:
    @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
    @pytest.mark.parametrize("order", ORDERS, ids=["_".join(o) for o in ORDERS])
    async def test_the_most_specific_hint_wins_whichever_was_stored_first(
        self, make_bridge: Callable[..., Any], order: tuple[str, ...]
    ) -> None:
        """The price maps to template 2, the session's metadata names 3: delivered before
        the worker runs, in any order, the purchase's own metadata wins."""
        how = NAMINGS["session_over_mapping"]
        async with make_bridge(how.toml) as bridge:
            delta = now() - sb.T0
            events = start_events(how, basil=False, delta=delta)
            for name in order:
                await bridge.deliver(events[name])
            await bridge.work()
            assert_one_key_of(bridge, how, delta=delta)


class TestStartWait:
    async def test_the_wait_is_bounded_then_the_default_template_is_used(
        self, make_bridge: Callable[..., Any]
    ) -> None:
        none = NAMINGS["none"]
        async with make_bridge(none.toml) as bridge:
            delta = now() - sb.T0
            await bridge.deliver(start_events(none, basil=False, delta=delta)["subscription"])
            assert await bridge.work() == ["retry"]
            bridge.stand_at_wait(-1)
            assert await bridge.work() == ["retry"]  # still inside the wait
            assert bridge.sandbox.state()["counts"]["keys"] == 0

            bridge.stand_at_wait(1)
            with capture_logs() as logs:
                await bridge.work()
            assert {i.status for i in bridge.intents().values()} == {"done"}
            [key] = bridge.sandbox.state()["keys"]
            assert key["template_id"] == DEFAULT
            assert bridge.result(CREATE)["template_source"] == "default"
            warned = [e for e in logs if "default template" in e["event"]]
            assert warned and warned[0]["template_id"] == DEFAULT
            target = sb.T1 + delta + 3 * DAY
            assert target <= key["expires"] < target + DAY
            # customer.subscription.created names only a Stripe customer: nobody to link.
            assert key["customer_id"] is None

    async def test_a_one_off_payment_does_not_wait(self, make_bridge: Callable[..., Any]) -> None:
        async with make_bridge(BASE_TOML) as bridge:
            await bridge.deliver(sb.checkout_session(mode="payment"))
            await bridge.work()  # the clock never moves
            assert {i.status for i in bridge.intents().values()} == {"done"}
            [key] = bridge.sandbox.state()["keys"]
            assert key["template_id"] == DEFAULT
            result = bridge.result(f"stripe:pi:{sb.ONE_OFF_PI}:create_key")
            assert result["template_source"] == "default"


class TestWithoutCheckout:
    """A subscription made without Checkout (the API, the Dashboard) has no session event:
    with STRIPE_API_KEY, Stripe says so at once; without it, the wait decides."""

    @pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
    async def test_stripe_lists_no_session_so_the_first_event_decides(
        self, make_bridge: Callable[..., Any]
    ) -> None:
        how = NAMINGS["mapping"]
        async with make_bridge(how.toml, api=True) as bridge:
            assert bridge.stripe is not None
            delta = now() - sb.T0
            events = start_events(how, basil=False, delta=delta)
            del events["checkout"]
            stripe_knows(bridge.stripe, events)
            await bridge.deliver(events["subscription"])
            await bridge.work()  # the clock never moves
            assert bridge.has_key() and bridge.stripe.session_lists == 1
            await bridge.deliver(events["invoice"])
            await bridge.work()
            assert_one_key_of(bridge, how, delta=delta)

    async def test_without_the_api_key_a_named_hint_waits_for_a_session(
        self, make_bridge: Callable[..., Any]
    ) -> None:
        how = NAMINGS["mapping"]
        async with make_bridge(how.toml) as bridge:
            delta = now() - sb.T0
            events = start_events(how, basil=False, delta=delta)
            for name in ("subscription", "invoice"):
                await bridge.deliver(events[name])
                assert "retry" in await bridge.work() and not bridge.has_key()
            bridge.stand_at_wait(-1)
            assert "retry" in await bridge.work()  # a session may still come
            assert not bridge.has_key()
            bridge.stand_at_wait(1)
            with capture_logs() as logs:
                await bridge.work()
            assert_one_key_of(bridge, how, delta=delta)
            assert not [e for e in logs if "default template" in e["event"]]


class TestAskingStripe:
    async def test_the_richest_hint_in_hand_asks_nothing(
        self, make_bridge: Callable[..., Any]
    ) -> None:
        how = NAMINGS["session_over_subscription"]
        async with make_bridge(how.toml, api=True) as bridge:
            assert bridge.stripe is not None
            delta = now() - sb.T0
            events = start_events(how, basil=False, delta=delta)
            for name in ("checkout", "subscription", "invoice"):
                await bridge.deliver(events[name])
                await bridge.work()
            assert (bridge.stripe.session_lists, bridge.stripe.subscription_reads) == (0, 0)
            assert_one_key_of(bridge, how, delta=delta)

    async def test_stripe_refusing_falls_back_to_the_wait(
        self, make_bridge: Callable[..., Any]
    ) -> None:
        how = NAMINGS["mapping"]
        async with make_bridge(how.toml, api=True) as bridge:
            assert bridge.stripe is not None
            delta = now() - sb.T0
            events = start_events(how, basil=False, delta=delta)
            # Stripe does not know the subscription (a key of another account or mode):
            # 404, so the creation waits for the session as it would without the key.
            with capture_logs() as logs:
                for name in ("subscription", "invoice"):
                    await bridge.deliver(events[name])
                    assert "retry" in await bridge.work() and not bridge.has_key()
            [refused] = {e["error"] for e in logs if "Stripe cannot say" in e["event"]}
            assert "HTTP 404" in refused and API_KEY not in refused
            bridge.stand_at_wait(1)
            await bridge.work()
            assert_one_key_of(bridge, how, delta=delta)
