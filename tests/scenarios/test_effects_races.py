"""Two intents on one key, in every order and at once: exactly one effect each.

The arguments of the jobs.effects package docstring, one test (or more) each, against
the sandbox over HTTP on SQLite and PostgreSQL. Runs are driven one job at a time
(tests/fixtures/runs.py) so each interleaving is the one named, not one the queue
happened to produce; "two workers" are two Runtimes on one database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from bridge.core.settings import Settings
from bridge.store.tables import utcnow
from jobs.runtime import Runtime
from tests.fixtures.runs import (
    DAY,
    PRODUCT,
    add_intent,
    add_license,
    attempts,
    blocked,
    due_now,
    expires_of,
    finish,
    intent,
    later,
    license_row,
    runtime,
    sandbox_key,
    step,
)
from tests.fixtures.servers import SandboxServer

REF = "stripe:sub:sub_race"


def _now() -> int:
    return int(utcnow().timestamp())


def extension(engine: Engine, name: str, target: int) -> str:
    params = {"expires_at": target, "invoice": None, "period_end": target}
    return add_intent(engine, f"{REF}:expires:{name}", "extend", REF, params, _now())


def block(engine: Engine, reason: str, at: int) -> str:
    effect = "unblock" if reason == "active" else "block"
    return add_intent(engine, f"{REF}:{effect}:{reason}:{at}", effect, REF, {"reason": reason}, at)


class TestExtensions:
    @pytest.mark.parametrize(("lost", "sent"), [(4, 34), (34, 4)])
    async def test_a_lost_extension_is_not_credited_with_one_sent_meanwhile(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        lost: int,
        sent: int,
    ) -> None:
        """A's reply is lost and its call never landed; B is sent meanwhile. B's effect
        moves the expiry, which the old read-back ("it moved: applied") credited to A: a
        lost renewal was then never sent. The key must end at the later target."""
        key, start = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        a = extension(engine, "a", start + lost * DAY)
        b = extension(engine, "b", start + sent * DAY)
        sandbox_server.set_faults(script=[{"method": "key/ExtendLicense", "fault": "lost_request"}])
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, a) == "retry"
            assert attempts(engine, a) == [("key/ExtendLicense", "unknown")]
            # While A may still land, B sends nothing: its read-back could not tell them apart.
            assert await step(rt, b) == "retry"
            assert attempts(engine, b) == []
            assert sandbox_server.state()["counts"]["extensions"] == 0

            rt.clock = later(60)  # A's call can no longer land
            assert await finish(rt, b) == {b: "done"}
            assert await finish(rt, a) == {a: "done"}

        assert expires_of(sandbox_server, key) == start + max(lost, sent) * DAY
        assert attempts(engine, a)[0] == ("key/ExtendLicense", "not_applied")
        # One call if B's target was the later one, else B's and then A's remainder.
        assert sandbox_server.state()["counts"]["extensions"] == (1 if sent > lost else 2)

    async def test_a_late_landing_is_counted_before_the_next_extension(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """A's reply is lost but its call was applied: B, reading the key afterwards, must
        credit A and add only the rest, so the key is not extended by A's days twice."""
        key, start = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        a = extension(engine, "a", start + 4 * DAY)
        b = extension(engine, "b", start + 34 * DAY)
        sandbox_server.set_faults(script=[{"method": "key/ExtendLicense", "fault": "lost_reply"}])
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, a) == "retry"
            assert await finish(rt, b, a) == {a: "done", b: "done"}
        assert expires_of(sandbox_server, key) == start + 34 * DAY
        assert attempts(engine, a) == [("key/ExtendLicense", "applied")]
        assert attempts(engine, b) == [("key/ExtendLicense", "applied")]
        assert sandbox_server.state()["counts"]["extensions"] == 2

    @pytest.mark.parametrize("fault", [None, "lost_reply"])
    async def test_two_extensions_racing_on_two_workers_end_at_the_later_target(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        fault: str | None,
    ) -> None:
        key, start = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        a = extension(engine, "a", start + 4 * DAY)
        b = extension(engine, "b", start + 34 * DAY)
        if fault is not None:
            sandbox_server.set_faults(script=[{"method": "key/ExtendLicense", "fault": fault}])
        async with (
            runtime(bridge_settings, engine) as one,
            runtime(bridge_settings, engine) as two,
        ):
            statuses = await asyncio.gather(finish(one, a), finish(two, b))
        assert list(statuses) == [{a: "done"}, {b: "done"}]
        assert expires_of(sandbox_server, key) == start + 34 * DAY
        # Every ExtendLicense the sandbox applied is one some run recorded as applied:
        # whichever ran first, nothing was sent twice and nothing was credited twice.
        applied = [outcome for i in (a, b) for _, outcome in attempts(engine, i) if outcome]
        assert applied.count("applied") == sandbox_server.state()["counts"]["extensions"]
        assert set(applied) <= {"applied"}


class TestStickyBlocks:
    @pytest.mark.parametrize("ending", ["dispute", "refund", "canceled"])
    async def test_an_ending_block_survives_unpaid_then_active_again(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        ending: str,
    ) -> None:
        """The old code let the newer "unpaid" block overwrite the dispute as the block's
        reason; "active again" then lifted it."""
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        t = _now() - 3600
        ended = block(engine, ending, t)
        unpaid = block(engine, "unpaid", t + 10)
        active = block(engine, "active", t + 20)
        async with runtime(bridge_settings, engine) as rt:
            for intent_id in (ended, unpaid, active):
                assert await finish(rt, intent_id) == {intent_id: "done"}
        assert blocked(sandbox_server, key)
        license_ = license_row(engine, REF)
        # The payment status is recorded apart, for when the end is lifted (a won dispute).
        assert (license_.ended_by, license_.block_reason) == (ending, None)
        counts = sandbox_server.state()["counts"]
        assert (counts["blocks"], counts["unblocks"]) == (1, 0)

    @pytest.mark.parametrize("ending", ["dispute", "refund", "canceled"])
    async def test_an_older_ending_block_delivered_after_active_again_blocks(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        ending: str,
    ) -> None:
        """A dispute created 240 s before a subscription update to active, delivered
        after it: the old code dropped it as superseded and the key stayed usable."""
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        t = _now() - 600
        active = block(engine, "active", t)
        ended = block(engine, ending, t - 240)
        async with runtime(bridge_settings, engine) as rt:
            assert await finish(rt, active) == {active: "done"}
            assert await finish(rt, ended) == {ended: "done"}
        assert blocked(sandbox_server, key)
        assert license_row(engine, REF).ended_by == ending

    @pytest.mark.parametrize("newer", ["unpaid", "active"])
    async def test_payment_status_changes_in_reversed_order_converge_to_the_newer(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        newer: str,
    ) -> None:
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        t = _now() - 600
        older = "active" if newer == "unpaid" else "unpaid"
        first = block(engine, newer, t + 20)
        late = block(engine, older, t + 10)
        async with runtime(bridge_settings, engine) as rt:
            assert await finish(rt, first) == {first: "done"}
            assert await finish(rt, late) == {late: "done"}
        assert blocked(sandbox_server, key) is (newer == "unpaid")
        assert intent(engine, late).result is not None
        assert "superseded_by" in (intent(engine, late).result or "")
        assert license_row(engine, REF).ended_by is None

    async def test_a_dispute_racing_active_again_on_two_workers_ends_blocked(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        t = _now() - 600
        dispute = block(engine, "dispute", t)
        unpaid = block(engine, "unpaid", t + 5)
        active = block(engine, "active", t + 10)
        async with (
            runtime(bridge_settings, engine) as one,
            runtime(bridge_settings, engine) as two,
        ):
            await asyncio.gather(finish(one, dispute, unpaid), finish(two, active))
        assert blocked(sandbox_server, key)
        assert license_row(engine, REF).ended_by == "dispute"
        assert {intent(engine, i).status for i in (dispute, unpaid, active)} == {"done"}
        # No assertion on the number of unblocks: "unpaid" and "active" may both run
        # before the dispute (a legitimate order: the key was unblocked before its end).
        # What must hold whatever the interleaving is the end state above.

    async def test_an_older_active_leaves_a_cancellation_whose_reply_was_lost_alone(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """Issue 15, 3 (reproduced): the cancellation's BlockKey landed, its reply was
        lost. An older "active" ran meanwhile: the old code credited the cancellation's
        BlockKey as applied and then unblocked (``ended_by`` is written only when the
        cancellation's run succeeds), so the canceled key was usable until the
        cancellation ran again, and one cancellation cost two BlockKeys and an
        UnblockKey. A stored ending block ends the license for every unblock."""
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        t = _now() - 600
        cancel = block(engine, "canceled", t + 30)
        active = block(engine, "active", t + 10)
        sandbox_server.set_faults(script=[{"method": "key/BlockKey", "fault": "lost_reply"}])
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, cancel) == "retry"
            assert attempts(engine, cancel) == [("key/BlockKey", "unknown")]
            assert await finish(rt, active) == {active: "done"}
            assert blocked(sandbox_server, key)
            assert "kept_blocked" in (intent(engine, active).result or "")
            assert await finish(rt, cancel) == {cancel: "done"}
        assert blocked(sandbox_server, key)
        assert attempts(engine, cancel) == [("key/BlockKey", "applied")]
        assert attempts(engine, active) == []
        counts = sandbox_server.state()["counts"]
        assert (counts["blocks"], counts["unblocks"]) == (1, 0)
        license_ = license_row(engine, REF)
        assert (license_.ended_by, license_.block_reason) == ("canceled", None)


def dispute(engine: Engine, dispute_id: str, at: int) -> str:
    """``charge.dispute.created``'s block, as the Stripe planner stores it."""
    params = {"reason": "dispute", "dispute": dispute_id}
    return add_intent(engine, f"{REF}:block:dispute:{dispute_id}", "block", REF, params, at)


def dispute_won(engine: Engine, dispute_id: str, at: int) -> str:
    """``charge.dispute.closed`` (won)'s lift, as the Stripe planner stores it."""
    params = {"reason": "dispute_won", "dispute": dispute_id}
    return add_intent(engine, f"{REF}:unblock:dispute_won:{dispute_id}", "unblock", REF, params, at)


class TestWonDisputes:
    """Issue 15, 3: a won dispute lifts its own block, unless another ending block (a
    cancellation, a refund, a dispute not won) holds or the newest payment status is a
    block; a lost dispute keeps it (its close plans nothing: tests/stripe/test_plan.py)."""

    @pytest.mark.parametrize("won_first", [False, True])
    async def test_a_won_dispute_lifts_its_block_in_either_order(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        won_first: bool,
    ) -> None:
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        t = _now() - 600
        # Each stored when delivered, then run: either may arrive first.
        store: list[Callable[[], str]] = [
            lambda: dispute(engine, "dp_1", t),
            lambda: dispute_won(engine, "dp_1", t + 100),
        ]
        async with runtime(bridge_settings, engine) as rt:
            for add in reversed(store) if won_first else store:
                intent_id = add()
                assert await finish(rt, intent_id) == {intent_id: "done"}
        assert not blocked(sandbox_server, key)
        assert license_row(engine, REF).ended_by is None
        counts = sandbox_server.state()["counts"]
        # Delivered after its close, the dispute's block is never applied.
        expected = (0, 0) if won_first else (1, 1)
        assert (counts["blocks"], counts["unblocks"]) == expected

    @pytest.mark.parametrize("other", ["canceled", "refund", "another dispute", "unpaid"])
    async def test_a_won_dispute_leaves_the_key_blocked_while_another_block_holds(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        other: str,
    ) -> None:
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        t = _now() - 600
        delivered: list[Callable[[], str]] = [
            lambda: dispute(engine, "dp_1", t),
            (lambda: dispute(engine, "dp_2", t + 50))
            if other == "another dispute"
            else (lambda: block(engine, other, t + 50)),
            lambda: dispute_won(engine, "dp_1", t + 100),
        ]
        async with runtime(bridge_settings, engine) as rt:
            for deliver in delivered:
                intent_id = deliver()  # stored as delivered, then run
                assert await finish(rt, intent_id) == {intent_id: "done"}
        assert blocked(sandbox_server, key)
        counts = sandbox_server.state()["counts"]
        assert (counts["blocks"], counts["unblocks"]) == (1, 0)
        license_ = license_row(engine, REF)
        if other == "unpaid":
            assert (license_.ended_by, license_.block_reason) == (None, "unpaid")
        else:
            assert license_.ended_by == ("dispute" if other == "another dispute" else other)

    async def test_active_again_while_disputed_counts_once_the_dispute_is_won(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """Payment-status changes while an ending block holds leave the key blocked but
        are recorded: unpaid then active again, then the dispute won, unblocks."""
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        t = _now() - 600
        delivered: list[Callable[[], str]] = [
            lambda: dispute(engine, "dp_1", t),
            lambda: block(engine, "unpaid", t + 10),
            lambda: block(engine, "active", t + 20),
        ]
        async with runtime(bridge_settings, engine) as rt:
            for deliver in delivered:
                intent_id = deliver()  # stored as delivered, then run
                assert await finish(rt, intent_id) == {intent_id: "done"}
                assert blocked(sandbox_server, key)
            lift = dispute_won(engine, "dp_1", t + 100)
            assert await finish(rt, lift) == {lift: "done"}
        assert not blocked(sandbox_server, key)


def customers_with(sandbox: SandboxServer, email: str) -> list[int]:
    return [int(c["id"]) for c in sandbox.state()["customers"] if c["email"] == email]


class TestAddCustomer:
    """Issue 15, 4 (reproduced): AddCustomer was read back (a search by email) 0.13-0.25 s
    after a lost reply, without the settle window; a late landing then made two customers
    with the buyer's email. It waits for the window like every other read-back."""

    EMAIL = "late.buyer@example.org"

    def link(self, engine: Engine) -> str:
        params = {"customer": {"email": self.EMAIL, "name": "Late Buyer"}}
        return add_intent(engine, f"{REF}:link_customer", "link_customer", REF, params, _now())

    @pytest.mark.parametrize("lands", [True, False])
    async def test_a_lost_add_customer_is_searched_for_again_only_past_its_window(
        self,
        bridge_settings: Settings,
        engine: Engine,
        sandbox_server: SandboxServer,
        lands: bool,
    ) -> None:
        settings = bridge_settings.model_copy(update={"settle_seconds": 30.0})
        bound = settings.call_bound_seconds
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        link = self.link(engine)
        fault = {"method": "customer/AddCustomer", "fault": "lost_request"}
        sandbox_server.set_faults(script=[fault])
        async with runtime(settings, engine) as rt:
            assert await step(rt, link) == "retry"  # no reply: the outcome is unknown
            # Past the call's bound but within BRIDGE_SETTLE_SECONDS: it may still land.
            for ahead in (0.0, bound + 10):
                rt.clock = later(ahead)
                due_now(engine, link)
                assert await step(rt, link) == "retry"
            received = sandbox_server.state()["calls"]["customer/AddCustomer"]["received"]
            assert received == 1
            assert customers_with(sandbox_server, self.EMAIL) == []
            assert attempts(engine, link) == [("customer/AddCustomer", "unknown")]
            if lands:  # the call the proxy gave up on reaches Cryptolens late
                sandbox_server.call("customer/AddCustomer", Name="Late Buyer", Email=self.EMAIL)
            rt.clock = later(bound + 31)  # past the window: the search is final
            assert await finish(rt, link) == {link: "done"}
        [customer] = customers_with(sandbox_server, self.EMAIL)
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key)
        assert body["licenseKey"]["customer"]["id"] == customer
        expected = "applied" if lands else "not_applied"
        assert attempts(engine, link)[0] == ("customer/AddCustomer", expected)
        assert len(attempts(engine, link)) == (1 if lands else 2)


class TestRegisterEvent:
    async def test_a_lost_event_is_sent_again_only_once_it_can_no_longer_land(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """GetEvents cannot see a RegisterEvent still in flight: finding nothing before
        ``settle_after`` must not re-send (the old code did at once)."""
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        params = {"event_name": "renewal", "value": 2000, "currency": "USD", "metadata": {}}
        event = add_intent(engine, f"{REF}:event:renewal:x", "register_event", REF, params, _now())
        sandbox_server.set_faults(script=[{"method": "ai/RegisterEvent", "fault": "lost_request"}])
        async with runtime(bridge_settings, engine) as rt:
            assert await step(rt, event) == "retry"  # outcome unknown
            assert await finish_until_waiting(rt, event)
            calls = sandbox_server.state()["calls"]["ai/RegisterEvent"]
            assert calls["received"] == 1  # not sent again

            rt.clock = later(bridge_settings.call_bound_seconds + 1)  # past settle_after
            assert await finish(rt, event) == {event: "done"}
        state = sandbox_server.state()
        assert state["calls"]["ai/RegisterEvent"]["received"] == 2
        assert state["counts"]["events"] == 1
        assert attempts(engine, event) == [
            ("ai/RegisterEvent", "not_applied"),
            ("ai/RegisterEvent", "applied"),
        ]

    async def test_a_lost_reply_of_an_applied_event_is_found_and_not_sent_again(
        self, bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        key, _ = sandbox_key(sandbox_server)
        add_license(engine, REF, key)
        params = {"event_name": "renewal", "value": 2000, "currency": "USD", "metadata": {}}
        event = add_intent(engine, f"{REF}:event:renewal:y", "register_event", REF, params, _now())
        sandbox_server.set_faults(script=[{"method": "ai/RegisterEvent", "fault": "lost_reply"}])
        async with runtime(bridge_settings, engine) as rt:
            assert await finish(rt, event) == {event: "done"}
        state = sandbox_server.state()
        assert (state["calls"]["ai/RegisterEvent"]["received"], state["counts"]["events"]) == (1, 1)
        assert attempts(engine, event) == [("ai/RegisterEvent", "applied")]


async def finish_until_waiting(rt: Runtime, intent_id: str) -> bool:
    """Two more runs of the intent, each told to wait (NotYet): True if both waited and
    left it pending, the wait not counted as an attempt."""
    before = intent(rt.engine, intent_id).attempts
    for _ in range(2):
        due_now(rt.engine, intent_id)
        if await step(rt, intent_id) != "retry":
            return False
    row = intent(rt.engine, intent_id)
    return row.status == "pending" and row.attempts == before
