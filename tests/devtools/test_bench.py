"""The bench as a behaviour: it runs the whole stack and reports every figure.

No timing is asserted (a loaded CI machine would fail it); only that each figure is there,
has the right shape, and that every event sent in the latency phase created its key.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main
from devtools.bench.ingest import Figure, table

FIGURES = {
    "ingest: bridge acks/s",
    "ingest: bare endpoint acks/s",
    "ingest: ratio bridge/bare",
    "ingest: ack latency p99",
    "ingest: crm endpoint acks/s",
    "ingest: crm ack latency p99",
    "webhook to key: p50",
    "webhook to key: p99",
    "webhook to key: events with a key",
    "peak RSS: web",
    "peak RSS: worker",
}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    args = ["bench", "--json", "--ingest-seconds", "0.3", "--rounds", "2", "--concurrency", "2"]
    args += ["--rate", "20", "--seconds", "1", "--settle", "60"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.slow
class TestBench:
    def test_reports_every_figure_with_a_value(self, report: dict[str, Any]) -> None:
        figures = {f["name"]: f for f in report["figures"]}
        assert set(figures) == FIGURES
        for figure in figures.values():
            assert isinstance(figure["measured"], int | float), figure
            assert figure["unit"] is not None
            if figure["target"] is None:
                assert figure["passed"] is None
            else:
                assert isinstance(figure["passed"], bool)
        assert report["missed"] == [f["name"] for f in report["figures"] if f["passed"] is False]

    def test_every_event_sent_created_its_key(self, report: dict[str, Any]) -> None:
        timed = report["webhook_to_key"]
        assert timed["load"]["sent"] == 20
        assert timed["load"]["statuses"] == {"200": 20}
        assert timed["events"] == timed["keys_created"] == 20
        # Five warm-up events come first, each with its own key.
        assert timed["sandbox_keys"] == 25
        assert set(timed["webhook_to_key_ms"]) == {"p50", "p90", "p99", "max"}
        # Where the time goes: CPU per event of each process, measured over the events.
        assert set(timed["cpu_ms_per_event"]) == {"web", "worker", "sandbox"}
        assert all(ms > 0 for ms in timed["cpu_ms_per_event"].values())

    def test_ingest_stores_every_acknowledged_event(self, report: dict[str, Any]) -> None:
        ingest = report["ingest"]
        assert ingest["bridge"]["ok"] > 0 and ingest["bare"]["ok"] > 0
        assert set(ingest["bridge"]["statuses"]) == {"200"}
        assert ingest["crm"]["ok"] > 0 and set(ingest["crm"]["statuses"]) == {"200"}
        # Warm-up requests are stored too, so at least every measured one is.
        assert ingest["events_stored"] >= ingest["bridge"]["ok"] + ingest["crm"]["ok"]

    def test_ingest_takes_turns_and_reports_the_median_ratio(self, report: dict[str, Any]) -> None:
        ingest = report["ingest"]
        rounds = ingest["rounds"]
        assert len(rounds) == 2
        for turn in rounds:
            assert turn["ratio"] == turn["bridge"]["per_second"] / turn["bare"]["per_second"]
        assert ingest["ratio"] == pytest.approx(sum(t["ratio"] for t in rounds) / 2)
        assert ingest["bridge"]["ok"] == sum(t["bridge"]["ok"] for t in rounds)
        assert ingest["bridge"]["latency_ms"]["p99"] == max(
            t["bridge"]["latency_ms"]["p99"] for t in rounds
        )
        # The CPU each server spent per request it answered, warm-up included.
        for name in ("bare", "bridge", "crm"):
            assert all(t[name]["answered"] >= t[name]["ok"] for t in rounds)
            assert ingest[name]["cpu_us_per_request"] > 0

    def test_reports_the_machine(self, report: dict[str, Any]) -> None:
        assert report["machine"]["cores"] >= 1
        assert report["machine"]["python"].count(".") == 2
        assert report["machine"]["cpu"]


class TestTable:
    def test_marks_misses_and_context_rows(self) -> None:
        rows = [
            Figure("ratio", 0.5, "", 0.4, higher_is_better=True),
            Figure("p99", 12.0, "ms", 10.0),
            Figure("acks", 900.0, "/s", None),
        ]
        lines = table(rows).splitlines()
        assert lines[0].split() == ["figure", "measured", "target", "result"]
        assert lines[2].split() == ["ratio", "0.5", ">=", "0.4", "pass"]
        assert lines[3].split() == ["p99", "12", "ms", "<=", "10", "ms", "MISS"]
        assert lines[4].split() == ["acks", "900", "/s", "-"]


@pytest.mark.slow
class TestUsageBench:
    def test_records_per_second_beside_bare_and_one_call_per_key_and_window(self) -> None:
        args = ["bench", "--usage", "--ingest-seconds", "0.3", "--rounds", "1"]
        args += ["--concurrency", "2", "--usage-batch", "20", "--usage-records", "150"]
        args += ["--settle", "60"]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        for size in ("batch_1", "batch_20"):
            ingest = report["ingest"][size]
            assert set(ingest["bridge"]["statuses"]) == {"202"}
            assert ingest["records_per_second"] > 0 and ingest["bare"]["per_second"] > 0
        aggregation = report["aggregation"]
        assert aggregation["records_accepted"] == aggregation["usage_recorded"] == 4 * 150
        assert aggregation["record_usage_calls"] == aggregation["keys"] == 4


class TestBurstBench:
    def test_every_purchase_of_a_burst_is_provisioned_once_by_two_workers(self) -> None:
        """The burst mode's figures, and its exactly-once check, with two workers."""
        args = ["bench", "--burst", "12", "--latency-ms", "5", "--workers", "2", "--json"]
        args += ["--lost-reply-rate", "0.1", "--settle", "120"]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        burst = json.loads(result.stdout)["burst"]
        assert (burst["n"], burst["workers"]) == (12, 2)
        reached = burst["seconds_to_last"]
        assert all(reached[k] is not None for k in ("key", "customer", "event")), reached
        assert burst["keys_created"] == burst["events"] == burst["tagged_once"] == 12
        assert burst["ratio_to_serial"] is not None
        assert set(burst["cpu_ms_per_purchase"]) == {"web", "sandbox", "worker1", "worker2"}


class TestScrapeBench:
    def test_times_the_old_recount_beside_the_scrape(self) -> None:
        args = ["bench", "--json", "--scrape", "3000"]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        scrape = json.loads(result.stdout)["scrape"]
        assert (scrape["database"], scrape["intents"]) == ("sqlite", 3000)
        assert scrape["recount_ms"] > 0 and scrape["scrape_ms"] > 0


class TestStartsBench:
    def test_every_subscription_gets_its_template_with_and_without_the_api_key(self) -> None:
        """The starts mode's figures: every key made, of its purchase's template, in both
        runs (the figures themselves are the bench's, not asserted here)."""
        args = ["bench", "--starts", "4", "--start-gap", "0.2", "--latency-ms", "5"]
        args += ["--stripe-latency-ms", "5", "--settle", "120", "--json"]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        starts = json.loads(result.stdout)["starts"]
        assert [r["stripe_api_key"] for r in starts["runs"]] == [True, False]
        for r in starts["runs"]:
            assert (r["keys"], r["wrong_template"]) == (4, [])
            assert r["seconds_median"] is not None and r["seconds_max"] is not None


class TestReconcileBench:
    def test_reports_time_calls_and_the_drift_seeded(self) -> None:
        """Issue 15, 6: 300 licenses, three of them deleted in Cryptolens and three
        blocked there by hand: three GetKeys pages for the 297 keys, and one GetKey for
        each key no page returned."""
        args = ["bench", "--json", "--reconcile", "300", "--latency-ms", "5"]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        reconcile = json.loads(result.stdout)["reconcile"]
        assert (reconcile["licenses"], reconcile["checked"], reconcile["errors"]) == (300, 300, 0)
        assert reconcile["drift_seeded"] == {"manual_block": 3, "no_key": 3}
        assert reconcile["drift_found"] == reconcile["drift_seeded"]
        assert reconcile["calls"] == {"key/GetKey": 3, "product/GetKeys": 3}
        assert reconcile["calls_total"] == 6 and reconcile["calls_per_key_would_be"] == 300
        assert reconcile["seconds"] > 0 and reconcile["licenses_per_second"] > 0
        assert reconcile["latency_ms"] == 5 and reconcile["concurrency"] == 8
