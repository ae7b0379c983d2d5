"""``cryptolens-bridge bench``: the click command, and which mode runs.

The default mode measures ingest, webhook to key and memory (``devtools.bench.ingest``);
``--burst``, ``--starts``, ``--reconcile``, ``--usage`` and ``--scrape`` run the other
modes, each a module of its own that imports only ``devtools.bench.stack``. It measures
and reports; a missed target is printed, and the exit code stays 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from devtools.bench import burst as burst_mode
from devtools.bench import ingest as default_mode
from devtools.bench import scrape as bench_scrape
from devtools.bench import starts as starts_mode
from devtools.bench.stack import machine, stack


def _usage(
    seconds: float,
    rounds: int,
    concurrency: int,
    batch: int,
    records: int,
    settle: float,
    keep: Path | None,
) -> None:
    """The usage bench (``devtools.bench.usage``); prints one JSON object."""
    from devtools.bench import usage as bench_usage

    with stack(keep) as st:
        redis_url = st.start_redis()
        report = {
            "machine": machine(),
            "ingest": bench_usage.ingest(
                st,
                redis_url,
                seconds=seconds,
                concurrency=concurrency,
                rounds=rounds,
                batch=batch,
            ),
            "aggregation": bench_usage.aggregation(st, redis_url, records=records, settle=settle),
        }
    for size in report["ingest"].values():
        for turn in size["rounds"]:
            for side in ("bare", "bridge"):
                turn[side].pop("latency_ms", None)
    click.echo(json.dumps(report, indent=2))


def _emit(
    host: dict[str, Any],
    mode: str,
    result: dict[str, Any],
    report: Callable[[dict[str, Any]], str],
    *,
    as_json: bool,
) -> None:
    """One mode's figures: as JSON beside the machine, or the machine then its report."""
    if as_json:
        click.echo(json.dumps({"machine": host, mode: result}, indent=2))
    else:
        click.echo(f"machine: {host['cores']} cores, {host['cpu']}, Python {host['python']}")
        click.echo(report(result))


@click.command("bench")
@click.option(
    "--ingest-seconds", default=5.0, show_default=True, help="Measured, per endpoint and round."
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Ingest turns per endpoint; the ratio is the median of the rounds' ratios.",
)
@click.option("--concurrency", default=8, show_default=True, help="Ingest connections.")
@click.option("--rate", default=100.0, show_default=True, help="Events/s for webhook to key.")
@click.option("--seconds", default=15.0, show_default=True, help="How long to send at --rate.")
@click.option(
    "--settle", default=60.0, show_default=True, help="How long to wait for the last keys."
)
@click.option(
    "--burst",
    type=click.IntRange(1, 100_000),
    help="Instead: N one-off purchases of one product at once (devtools.bench.burst).",
)
@click.option(
    "--starts",
    type=click.IntRange(1, 10_000),
    help="Instead: N subscriptions started at once, their start events in every order, "
    "with and without STRIPE_API_KEY (devtools.bench.starts).",
)
@click.option(
    "--start-gap", default=1.0, show_default=True, help="With --starts: seconds between events."
)
@click.option(
    "--stripe-latency-ms",
    default=250.0,
    show_default=True,
    help="With --starts: the Stripe stand-in's latency.",
)
@click.option(
    "--reconcile",
    "reconciled",
    type=click.IntRange(1, 1_000_000),
    help="Instead: reconcile N licenses seeded in the sandbox (devtools.bench.reconcile).",
)
@click.option(
    "--retention",
    "retained",
    type=click.IntRange(1, 10_000_000),
    help="Instead: webhook latency while N old deliveries are pruned "
    "(devtools.bench.retention; --ingest-seconds, --concurrency).",
)
@click.option(
    "--latency-ms",
    default=80.0,
    show_default=True,
    help="With --burst, --starts or --reconcile: sandbox latency per call.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="With --burst: worker processes.",
)
@click.option(
    "--lost-reply-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="With --burst: replies lost after the call was applied.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option(
    "--usage",
    is_flag=True,
    help="Measure POST /usage instead: records/s beside the bare endpoint, and one call "
    "per key and window.",
)
@click.option("--usage-batch", default=100, show_default=True, help="Records per usage batch.")
@click.option(
    "--usage-records", default=500, show_default=True, help="Records per key in one window."
)
@click.option(
    "--scrape",
    type=click.IntRange(1, 100_000_000),
    help="Instead: one /metrics scrape's database reads with N intents, before and now.",
)
@click.option(
    "--postgres",
    help="With --scrape: a PostgreSQL server URL to make a throwaway database on "
    "(default: a temporary SQLite file).",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep databases and process logs in this directory.",
)
def command(
    ingest_seconds: float,
    rounds: int,
    concurrency: int,
    rate: float,
    seconds: float,
    settle: float,
    burst: int | None,
    starts: int | None,
    start_gap: float,
    stripe_latency_ms: float,
    reconciled: int | None,
    retained: int | None,
    latency_ms: float,
    workers: int,
    lost_reply_rate: float,
    as_json: bool,
    usage: bool,
    usage_batch: int,
    usage_records: int,
    scrape: int | None,
    postgres: str | None,
    keep: Path | None,
) -> None:
    """Measure ingest throughput, webhook-to-key latency and memory against their targets.

    Starts its own redis-server, web, worker and sandbox processes on free ports. A
    missed target is reported, not an error: the exit code is 0.
    """
    host = machine()
    if scrape is not None:
        scraped = bench_scrape.run(scrape, postgres)
        _emit(host, "scrape", scraped, bench_scrape.report, as_json=as_json)
        return
    if starts is not None:
        with stack(keep) as st:
            measured = starts_mode.run(
                st,
                st.start_redis(),
                n=starts,
                gap=start_gap,
                latency_ms=latency_ms,
                stripe_latency_ms=stripe_latency_ms,
                timeout=settle,
            )
        _emit(host, "starts", measured, starts_mode.report, as_json=as_json)
        return
    if reconciled is not None:
        from devtools.bench import reconcile as bench_reconcile

        with stack(keep) as st:
            result = bench_reconcile.run(st, reconciled, latency_ms=latency_ms)
        _emit(host, "reconcile", result, bench_reconcile.report, as_json=as_json)
        return
    if retained is not None:
        from devtools.bench import retention as bench_retention

        with stack(keep) as st:
            pruned = bench_retention.run(
                st, retained, seconds=ingest_seconds, concurrency=concurrency
            )
        _emit(host, "retention", pruned, bench_retention.report, as_json=as_json)
        return
    if burst is not None:
        with stack(keep) as st:
            result = burst_mode.run(
                st,
                st.start_redis(),
                n=burst,
                latency_ms=latency_ms,
                lost_reply_rate=lost_reply_rate,
                timeout=settle,
                workers=workers,
            )
        _emit(host, "burst", result, burst_mode.report, as_json=as_json)
        return
    if usage:
        _usage(ingest_seconds, rounds, concurrency, usage_batch, usage_records, settle, keep)
        return
    if not as_json:
        click.echo(
            f"machine: {host['cores']} cores, {host['cpu']}, Python {host['python']}\n"
            f"ingest: {rounds} rounds of {ingest_seconds:g} s per endpoint at concurrency "
            f"{concurrency}; "
            f"webhook to key: {rate:g} events/s for {seconds:g} s\n",
            err=True,
        )
    with stack(keep) as st:
        redis_url = st.start_redis()
        ingested = default_mode.ingest(
            st, redis_url, seconds=ingest_seconds, concurrency=concurrency, rounds=rounds
        )
        timed = default_mode.latency(st, redis_url, rate=rate, seconds=seconds, settle=settle)
    rows = default_mode.figures(ingested, timed)
    missed = [f.name for f in rows if f.passed is False]
    if as_json:
        report = {
            "machine": host,
            "options": {
                "ingest_seconds": ingest_seconds,
                "rounds": rounds,
                "concurrency": concurrency,
                "rate": rate,
                "seconds": seconds,
            },
            "figures": [{**asdict(f), "passed": f.passed} for f in rows],
            "missed": missed,
            "ingest": ingested,
            "webhook_to_key": timed,
        }
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(default_mode.table(rows))
    served = {n: ingested[n]["cpu_us_per_request"] for n in ("bare", "bridge", "crm")}
    if all(v is not None for v in served.values()):
        click.echo(
            "\nServer CPU per ingest request (median of the rounds): "
            + ", ".join(f"{name} {us:.0f} µs" for name, us in served.items())
        )
    cpu = timed["cpu_ms_per_event"]
    if cpu:
        click.echo(
            "\nCPU per event at the measured rate: "
            + ", ".join(f"{name} {ms:g} ms" for name, ms in cpu.items())
        )
    click.echo(f"\nmissed: {', '.join(missed)}" if missed else "\nall targets met")
