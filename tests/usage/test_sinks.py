"""Aggregates to sinks: RecordUsage in the sandbox, meter events in a fake Stripe."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from bridge.core import logs, tracing
from bridge.core.intents import Effect, key_digest, public_id, public_text
from bridge.store import ledger
from bridge.store.tables import utcnow
from jobs.effects.meter import identifier
from tests.fixtures.fake_stripe import FakeStripe
from tests.fixtures.runs import attempts, due_now, intent, later, runtime, step
from tests.fixtures.usage import (
    CRYPTOLENS_PRODUCT,
    METER_PRODUCT,
    T0,
    UsageBridge,
    add_license,
    record,
    recorded_usage,
    sandbox_key,
)

SUB, CUSTOMER, METER_KEY = "sub_usage_1", "cus_usage_1", "METER-KEY-0001"


def meter_customer(bridge: UsageBridge, fake: FakeStripe) -> None:
    add_license(bridge.engine, f"stripe:sub:{SUB}", METER_PRODUCT, METER_KEY)
    fake.subscriptions[SUB] = CUSTOMER


class TestCryptolensSink:
    async def test_n_records_in_a_window_become_one_record_usage_call(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        await usage_bridge.usage([record(n, key=key, quantity=n) for n in range(1, 51)])
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert recorded_usage(usage_bridge.sandbox) == {key: 1275}
        assert usage_bridge.sandbox.state()["calls"]["subscription/RecordUsage"]["received"] == 1
        assert usage_bridge.ledger_total() == 1275

    async def test_a_key_without_a_subscription_item_is_a_configuration_error_not_retried(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox, linked=False)
        await usage_bridge.usage(record(1, key=key, quantity=3))
        await usage_bridge.drain()
        [failed] = usage_bridge.usage_intents().values()
        assert failed.status == "failed"
        assert failed.last_error is not None
        assert "configuration:" in failed.last_error
        assert "subscription item" in failed.last_error
        assert usage_bridge.sandbox.state()["calls"]["subscription/RecordUsage"]["received"] == 1

    async def test_a_lost_reply_lands_in_needs_review_with_the_aggregate_shown(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        usage_bridge.sandbox.set_faults(
            script=[{"method": "subscription/RecordUsage", "fault": "lost_reply"}]
        )
        await usage_bridge.usage([record(1, key=key, quantity=4), record(2, key=key, quantity=3)])
        await usage_bridge.drain()
        [review] = usage_bridge.usage_intents().values()
        assert review.status == "needs_review"
        assert review.last_error is not None
        assert "7 unit(s) from 2 record(s)" in review.last_error
        # Applied once by the lost call, and never sent again.
        assert recorded_usage(usage_bridge.sandbox) == {key: 7}
        assert usage_bridge.sandbox.state()["calls"]["subscription/RecordUsage"]["received"] == 1

    async def test_two_aggregates_of_one_key_racing_are_both_billed_once(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        await usage_bridge.usage(record(1, key=key, quantity=2))
        usage_bridge.clock.at = T0 + 60
        await usage_bridge.usage(record(2, key=key, quantity=5))
        ids = sorted(usage_bridge.usage_intents())
        assert len(ids) == 2
        async with (
            runtime(usage_bridge.settings, usage_bridge.engine) as one,
            runtime(usage_bridge.settings, usage_bridge.engine) as two,
        ):

            async def until_done(rt: object, intent_id: str) -> str:
                for _ in range(200):
                    status = await step(rt, intent_id)  # type: ignore[arg-type]
                    if status != "retry":
                        return status
                    due_now(usage_bridge.engine, intent_id)
                    await asyncio.sleep(0.005)
                raise AssertionError("still retrying")

            statuses = await asyncio.gather(until_done(one, ids[0]), until_done(two, ids[1]))
        assert list(statuses) == ["done", "done"]
        assert recorded_usage(usage_bridge.sandbox) == {key: 7}


class TestWindows:
    async def test_a_record_arriving_after_its_window_was_sealed_joins_the_next(
        self, usage_bridge: UsageBridge
    ) -> None:
        key = sandbox_key(usage_bridge.sandbox)
        await usage_bridge.usage(record(1, key=key, quantity=2))
        first = ledger.aggregate_id(CRYPTOLENS_PRODUCT, key, "", T0)
        sealed = ledger.seal(usage_bridge.engine, first, utcnow())
        assert sealed is not None and sealed.quantity == 2
        # Still inside the first window by the web's clock, but that aggregate is sealed.
        usage_bridge.clock.at = T0 + 30
        body = (await usage_bridge.usage(record(2, key=key, quantity=5))).json()
        assert body["results"][0]["aggregate"] == ledger.aggregate_id(
            CRYPTOLENS_PRODUCT, key, "", T0 + 60
        )
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert recorded_usage(usage_bridge.sandbox) == {key: 7}
        assert [(a.quantity, a.records) for a in usage_bridge.aggregates()] == [(2, 1), (5, 1)]


class TestStripeMeterSink:
    async def test_meter_events_carry_the_aggregate_identifier_and_the_customer(
        self, usage_bridge: UsageBridge, fake_stripe: FakeStripe
    ) -> None:
        meter_customer(usage_bridge, fake_stripe)
        await usage_bridge.usage(
            [record(n, key=METER_KEY, product_id=METER_PRODUCT, quantity=n) for n in range(1, 11)]
            + [record(99, key=METER_KEY, product_id=METER_PRODUCT, quantity=4, meter="storage")]
        )
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert fake_stripe.totals() == {("api_calls", CUSTOMER): 55, ("storage_gb", CUSTOMER): 4}
        assert set(fake_stripe.events) == {
            f"usage:1002:{key_digest(METER_KEY)}:-:{T0}",
            f"usage:1002:{key_digest(METER_KEY)}:storage:{T0}",
        }
        assert fake_stripe.total() == usage_bridge.ledger_total(METER_PRODUCT)
        assert fake_stripe.events[f"usage:1002:{key_digest(METER_KEY)}:-:{T0}"]["timestamp"] == T0

    async def test_a_lost_reply_is_sent_again_and_stripe_dedupes_it(
        self, usage_bridge: UsageBridge, fake_stripe: FakeStripe
    ) -> None:
        for reply in ("error", "accept"):
            fake_stripe.duplicate_reply = reply
            fake_stripe.script = ["lost_reply"]
            meter_key = f"{METER_KEY}-{reply}"
            add_license(usage_bridge.engine, f"stripe:sub:{SUB}-{reply}", METER_PRODUCT, meter_key)
            fake_stripe.subscriptions[f"{SUB}-{reply}"] = CUSTOMER
            await usage_bridge.usage(
                record(1, key=meter_key, product_id=METER_PRODUCT, quantity=6, prefix=reply)
            )
            await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert fake_stripe.received == 4  # two sends of each aggregate...
        assert fake_stripe.total() == 12  # ...each counted once
        for intent_ in usage_bridge.usage_intents().values():
            outcomes = [o for _, o in attempts(usage_bridge.engine, intent_.id)]
            assert outcomes == ["resent", "applied"]

    async def test_an_unknown_outcome_older_than_the_dedupe_window_goes_to_a_person(
        self, usage_bridge: UsageBridge, fake_stripe: FakeStripe
    ) -> None:
        meter_customer(usage_bridge, fake_stripe)
        fake_stripe.script = ["lost_reply"]
        await usage_bridge.usage(record(1, key=METER_KEY, product_id=METER_PRODUCT, quantity=6))
        [intent_id] = usage_bridge.usage_intents()
        async with runtime(usage_bridge.settings, usage_bridge.engine) as rt:
            assert await step(rt, intent_id) == "retry"
            due_now(usage_bridge.engine, intent_id)
            rt.clock = later(24 * 3600)
            assert await step(rt, intent_id) == "needs_review"
        review = intent(usage_bridge.engine, intent_id)
        assert review.last_error is not None and identifier(intent_id) in review.last_error
        assert fake_stripe.received == 1

    async def test_a_key_with_no_known_subscription_is_a_configuration_error(
        self, usage_bridge: UsageBridge, fake_stripe: FakeStripe
    ) -> None:
        await usage_bridge.usage(record(1, key="NO-SUB-KEY", product_id=METER_PRODUCT))
        await usage_bridge.drain()
        [failed] = usage_bridge.usage_intents().values()
        assert failed.status == "failed"
        assert failed.last_error is not None and "subscription" in failed.last_error
        assert fake_stripe.received == 0

    def test_identifiers_fit_stripe_s_limit(self) -> None:
        long_id = ledger.aggregate_id(1, "K", "m" * 120, 60)
        assert len(identifier(long_id)) <= 100
        assert identifier(long_id) == identifier(long_id)
        short = ledger.aggregate_id(1, "K", "", 60)
        assert identifier(short) == short
        assert Effect.REPORT_USAGE.value == "report_usage"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_checked", True)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


@pytest.fixture
def restored_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """``capsys``, for a test that configures logging at DEBUG in its body (then
    ``sys.stderr`` is the capture's), with the set-up restored after: a logger left
    writing to the test's closed capture would fail later tests."""
    root = logging.getLogger()
    level = root.level
    yield capsys
    structlog.reset_defaults()
    root.handlers.clear()
    root.setLevel(level)


def _outside(
    capsys: pytest.CaptureFixture[str], spans: InMemorySpanExporter, fake_stripe: FakeStripe
) -> str:
    """Everything of a run that leaves the database: log lines, span names and
    attributes, meter event identifiers and bodies, metric labels."""
    return "\n".join(
        [
            capsys.readouterr().err,
            *(f"{s.name} {dict(s.attributes or {})}" for s in spans.get_finished_spans()),
            *(f"{k} {v}" for k, v in fake_stripe.events.items()),
            generate_latest().decode(),
        ]
    )


class TestKeysStayInside:
    """A license key is the end user's credential: ids that leave the database carry a
    digest of it, never the key."""

    async def test_no_key_in_logs_spans_identifiers_or_metrics_of_usage_runs(
        self,
        usage_bridge: UsageBridge,
        fake_stripe: FakeStripe,
        spans: InMemorySpanExporter,
        restored_logs: pytest.CaptureFixture[str],
    ) -> None:
        logs.configure("DEBUG")
        meter_customer(usage_bridge, fake_stripe)
        key = sandbox_key(usage_bridge.sandbox)
        fake_stripe.script = ["lost_reply"]  # a retry, logged, and a re-send
        await usage_bridge.usage(
            [
                record(1, key=METER_KEY, product_id=METER_PRODUCT, quantity=2),
                record(2, key=key, quantity=3),
            ]
        )
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        assert fake_stripe.total() == 2 and recorded_usage(usage_bridge.sandbox) == {key: 3}
        outside = _outside(restored_logs, spans, fake_stripe)
        assert "intent done" in outside and "report_usage" in outside  # logs were captured
        assert {s.name for s in spans.get_finished_spans()} >= {"intent"}
        assert METER_KEY not in outside and key not in outside
        assert key_digest(METER_KEY) in outside  # the ids are there, by digest
        for intent_ in usage_bridge.usage_intents().values():
            assert METER_KEY not in intent_.id + intent_.license_ref
            assert key not in intent_.id + intent_.license_ref

    async def test_an_aggregate_opened_before_key_digests_is_sent_under_its_public_id(
        self,
        usage_bridge: UsageBridge,
        fake_stripe: FakeStripe,
        spans: InMemorySpanExporter,
        restored_logs: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        logs.configure("DEBUG")
        meter_customer(usage_bridge, fake_stripe)
        with monkeypatch.context() as old:  # what the release before stored
            old.setattr(
                ledger,
                "usage_intent_id",
                lambda p, k, m, w: f"usage:{p}:{k}:{m or '-'}:{w}",
            )
            await usage_bridge.usage(record(1, key=METER_KEY, product_id=METER_PRODUCT, quantity=2))
        legacy = f"usage:{METER_PRODUCT}:{METER_KEY}:-:{T0}"
        assert list(usage_bridge.usage_intents()) == [legacy]
        # After the upgrade, a record of the same window opens the new id's aggregate.
        await usage_bridge.usage(record(2, key=METER_KEY, product_id=METER_PRODUCT, quantity=5))
        await usage_bridge.drain()
        usage_bridge.assert_all_done()
        # Both sent, under two identifiers: Stripe dedupes neither into the other.
        assert fake_stripe.total() == 7
        assert set(fake_stripe.events) == {
            f"usage:{METER_PRODUCT}:{key_digest(METER_KEY)}:-:{T0}:legacy",
            f"usage:{METER_PRODUCT}:{key_digest(METER_KEY)}:-:{T0}",
        }
        outside = _outside(restored_logs, spans, fake_stripe)
        assert "intent done" in outside
        assert METER_KEY not in outside


class TestPublicIds:
    def test_a_new_id_is_its_own_public_form(self) -> None:
        new = ledger.aggregate_id(1, "ABCDE-FGHIJ", "storage", 60)
        assert new == f"usage:1:{key_digest('ABCDE-FGHIJ')}:storage:60"
        assert public_id(new) == new
        assert public_id("stripe:pi:pi_1:create_key") == "stripe:pi:pi_1:create_key"

    def test_a_legacy_id_shows_the_key_s_digest_wherever_it_appears(self) -> None:
        # A key may hold ":": the id is read from the right.
        legacy = "usage:1:AB:CD:-:60"
        public = f"usage:1:{key_digest('AB:CD')}:-:60:legacy"
        assert public_id(legacy) == public
        assert public_id(public) == public
        line = f"0.01s → {legacy}:run_intent('{legacy}') ● {legacy}"
        assert public_text(line) == f"0.01s → {public}:run_intent('{public}') ● {public}"
