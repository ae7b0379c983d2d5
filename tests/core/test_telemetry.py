"""``/metrics`` (counters where things happen, gauges read at scrape time) and the
optional OpenTelemetry spans."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import prometheus_client
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event, text
from sqlmodel import Session

from bridge.core import metrics, tracing
from bridge.core.errors import ConfigError
from bridge.core.intents import Status
from bridge.core.settings import Settings
from bridge.cryptolens import CryptolensClient
from bridge.operator_port import parse_address
from bridge.store import stats
from bridge.store.tables import Intent
from jobs import worker
from tests.fixtures import stripe_builders as sb
from tests.fixtures.admin import drain_once
from tests.fixtures.pipeline import Clock, Pipeline


async def scrape(bridge: Pipeline) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = (await bridge.http.get(f"{bridge.operator_url}/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_metrics_show_intents_calls_queue_and_review(bridge: Pipeline) -> None:
    bridge.sandbox.set_faults(script=[{"method": "key/CreateKey", "fault": "fail_before"}])
    await bridge.post(sb.checkout_session())
    await drain_once(bridge)  # the key creation fails; the purchase event waits on it
    samples = await scrape(bridge)
    assert sample(samples, "bridge_intents", status="failed") == 1
    assert sample(samples, "bridge_intents", status="waiting") == 1
    assert sample(samples, "bridge_intents", status="done") == 0
    assert sample(samples, "bridge_needs_review") == 0
    assert sample(samples, "bridge_oldest_pending_intent_seconds") == 0
    assert sample(samples, "bridge_queue_depth") == 0
    assert sample(samples, "bridge_webhooks_total", provider="stripe", outcome="recorded") >= 1
    # The burst worker ran in this process: its calls are in this registry.
    unavailable = sample(
        samples,
        "bridge_cryptolens_call_seconds_count",
        method="key/CreateKey",
        outcome="Transient",
    )
    assert unavailable >= 1


async def test_a_pending_intent_has_an_age(bridge: Pipeline) -> None:
    await bridge.post(sb.checkout_session())  # no worker runs: it stays pending
    samples = await scrape(bridge)
    assert sample(samples, "bridge_intents", status="pending") == 1
    assert sample(samples, "bridge_oldest_pending_intent_seconds") >= 0
    assert sample(samples, "bridge_queue_depth") == 1


class TestTracing:
    def test_off_without_otel_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        monkeypatch.setattr(tracing, "_checked", False)
        monkeypatch.setattr(tracing, "_tracer", None)
        assert not tracing.enabled()
        assert tracing.span("anything") is tracing._NOOP

    @pytest.fixture
    def spans(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        monkeypatch.setattr(tracing, "_checked", True)
        monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
        yield exporter
        provider.shutdown()

    async def test_a_call_is_a_span_with_its_method_and_no_secret(
        self, bridge: Pipeline, spans: InMemorySpanExporter
    ) -> None:
        token = bridge.settings.token()
        async with httpx.AsyncClient() as http:
            client = CryptolensClient(
                http, token=token, base_url=bridge.settings.cryptolens_api_url
            )
            with tracing.span("intent", intent="i1"):
                await client.get_license_templates()
        finished = {s.name: s for s in spans.get_finished_spans()}
        call = finished["cryptolens licensetemplate/GetLicenseTemplates"]
        assert call.attributes == {"method": "licensetemplate/GetLicenseTemplates"}
        assert call.parent is not None
        assert call.parent.span_id == finished["intent"].context.span_id
        assert all(token not in str(s.attributes) for s in finished.values())


class TestCheapScrape:
    """A scrape costs the same whatever the tables hold: no statement counts a whole
    table, and many scrapers read the database once per REFRESH_EVERY seconds."""

    @staticmethod
    def fill(engine: Engine, statuses: list[str]) -> None:
        with Session(engine) as s:
            for n, status in enumerate(statuses):
                s.add(
                    Intent(
                        id=f"i{n}",
                        effect="create_key",
                        license_ref=f"ref{n}",
                        params="{}",
                        occurred_at=1_700_000_000,
                        status=status,
                    )
                )
            s.commit()

    @staticmethod
    @contextmanager
    def statements(engine: Engine) -> Iterator[list[str]]:
        seen: list[str] = []

        def before(*args: Any) -> None:
            seen.append(" ".join(str(args[2]).split()))

        event.listen(engine, "before_cursor_execute", before)
        try:
            yield seen
        finally:
            event.remove(engine, "before_cursor_execute", before)

    async def test_counts_are_capped_and_read_through_the_status_index(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.fill(engine, ["done"] * 5 + ["pending"] * 2 + ["needs_review"])
        monkeypatch.setattr(stats, "COUNT_CAP", 3)
        with self.statements(engine) as seen:
            await metrics.refresh(functools.partial(stats.intent_stats, engine), None)
        assert metrics.INTENTS.labels(status="done")._value.get() == 3  # capped: "3 or more"
        assert metrics.INTENTS.labels(status="pending")._value.get() == 2
        assert metrics.NEEDS_REVIEW._value.get() == 1
        assert metrics.OLDEST_PENDING._value.get() >= 0
        [query] = [q for q in seen if "intent" in q.lower()]  # one round trip
        # Every read of the table names one status and stops at a limit: none counts it
        # whole (the scrape used to run SELECT status, count(*) ... GROUP BY status).
        assert query.count(" WHERE status =") == len(Status) + 1, query
        assert query.count("LIMIT") == len(Status) + 1, query
        assert "GROUP BY" not in query.upper(), query
        if engine.dialect.name == "sqlite":
            params = {s.name.lower(): s.value for s in Status}
            with engine.begin() as connection:
                # ANALYZE's statistics of a million intents (bench --scrape): what made
                # SQLite scan the table for the oldest pending one.
                connection.execute(text("ANALYZE"))
                connection.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'intent'"))
                connection.execute(
                    text(
                        "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES"
                        " ('intent', 'ix_intent_status', '1000000 500000'),"
                        " ('intent', 'ix_intent_license_ref', '1000000 1'),"
                        " ('intent', 'sqlite_autoindex_intent_1', '1000000 1')"
                    )
                )
                connection.execute(text("ANALYZE sqlite_schema"))  # loads them
                plan = connection.execute(
                    text(f"EXPLAIN QUERY PLAN {stats.stats_sql('sqlite')}"),
                    {**params, "cap": 3},
                ).all()
                unhinted = connection.execute(
                    text(f"EXPLAIN QUERY PLAN {stats.stats_sql('postgresql')}"),
                    {**params, "cap": 3},
                ).all()
            # Without the hint these statistics do make SQLite scan (the test's premise).
            assert any(str(row[-1]).startswith("SCAN intent") for row in unhinted), unhinted
            steps = [str(row[-1]) for row in plan]
            # SEARCH: a range of the status index; SCAN would read the whole table.
            assert (
                len([s for s in steps if s.startswith("SEARCH intent USING")]) == len(Status) + 1
            ), steps
            assert not [s for s in steps if s.startswith("SCAN intent")], steps

    async def test_scrapers_share_one_read(self, engine: Engine) -> None:
        clock = Clock()
        clock.at = 1_000.0
        refresh = metrics.Refresher(clock)
        with self.statements(engine) as seen:
            read = functools.partial(stats.intent_stats, engine)
            await asyncio.gather(*(refresh(read, None) for _ in range(30)))  # 30 scrapers
            once = len([q for q in seen if "intent" in q])
            clock.at += metrics.REFRESH_EVERY
            await refresh(read, None)
        assert once == 1
        assert len([q for q in seen if "intent" in q]) == 2 * once


class TestOperatorAddress:
    def test_serve_binds_this_host_only_by_default(self) -> None:
        settings = Settings(_env_file=None)
        assert settings.metrics_address == "127.0.0.1:9464"
        assert parse_address(settings.metrics_address, "X") == ("127.0.0.1", 9464)
        assert parse_address("[::1]:9464", "X") == ("::1", 9464)
        assert parse_address("off", "X") is None
        for bad in ("9464", "host:", "host:99999", ":9464"):
            with pytest.raises(ConfigError, match="host:port"):
                parse_address(bad, "X")

    def test_the_worker_binds_this_host_only_by_default(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        bound: list[tuple[int, str]] = []
        monkeypatch.setattr(
            prometheus_client, "start_http_server", lambda port, addr: bound.append((port, addr))
        )
        worker.serve_metrics(Settings(_env_file=None))
        assert bound == []  # no port: not served
        worker.serve_metrics(Settings(_env_file=None, BRIDGE_WORKER_METRICS_PORT=9101))
        assert bound == [(9101, "127.0.0.1")]
        worker.serve_metrics(
            Settings(
                _env_file=None,
                BRIDGE_WORKER_METRICS_PORT=9101,
                BRIDGE_WORKER_METRICS_ADDRESS="10.0.0.5",
            )
        )
        assert bound[-1] == (9101, "10.0.0.5")
