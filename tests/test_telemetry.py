"""``/metrics`` (counters where things happen, gauges read at scrape time) and the
optional OpenTelemetry spans."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from bridge.core import tracing
from bridge.cryptolens import CryptolensClient
from tests.fixtures import stripe_builders as sb
from tests.fixtures.admin import drain_once
from tests.fixtures.pipeline import Pipeline


async def scrape(bridge: Pipeline) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = (await bridge.http.get(f"{bridge.url}/metrics")).text
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
