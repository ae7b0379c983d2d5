"""``cryptolens-bridge reconcile``: what the store says each license should be, against
what Cryptolens holds, and repairs through intents.

For every license the store knows (a paid purchase, a subscription, and any provider's
license ref: a CRM's won deal is one more ref with the same intents), the *expected*
state is read from the store alone:

    key          a key creation was planned                  (else: nothing to check)
    customer     the customer the bridge linked, or the buyer's email if none yet
    expiry       the latest target of the extensions done (ExtendLicense rounds up)
    blocked      an ending block holds (canceled, refund, a dispute not won: the rule
                 of ``bridge.core.blocks``) or its payment-status block is in force

and compared with the key Cryptolens holds, read by GetKeys pages or one GetKey per
license, per product whichever takes fewer calls (``bridge.ops.reconcile_read.check``).
Drift, by kind (``bridge.ops.reconcile_compare.compare``):

    no_key             paid, but no key (its creation failed; needs_review is left to a person)
    customer           the key is not linked to the buyer's customer, or to another one
    expiry             the key expires before the paid period (plus grace) ends
    blocked            the key is blocked, nothing in the store says why, and the last
                       block call of the bridge's that may have landed was a BlockKey
    manual_block       the key is blocked and no call of the bridge's blocked it: the
                       vendor's block, reported, never lifted (no repair; not counted
                       for the exit status)
    not_blocked        the license ended or is blocked for payment, and the key is not

``--repair`` stores one intent per drift, under an id made from the license and the state
it restores (``<ref>:reconcile:<kind>:<value>``), through the same insert-on-conflict as a
delivery's intents: a repair planned twice is stored once, and the worker applies it with
its usual read-back, so each repair is exactly once too. After the worker ran them, the
next reconcile finds nothing; run again before, it adds nothing.

A repair is dated like the decision it restores (``occurred_at``: the customer decision,
the payment-status decision, the ending block), so the worker orders it among the
license's other decisions like that one: a change decided later (a CRM contact change,
"active again") that ran before the repair is not undone by it.

Its parts, one concept each: ``bridge.ops.reconcile_expect`` (the store's side),
``bridge.ops.reconcile_read`` (the keys, a page at a time or one by one),
``bridge.ops.reconcile_compare`` (the drift and its repair); this module runs them and is
the command.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bridge.core.queue import connect, enqueue
from bridge.core.settings import Settings
from bridge.cryptolens import CryptolensClient, make_http_client
from bridge.ops.reconcile_compare import Report
from bridge.ops.reconcile_expect import expectations
from bridge.ops.reconcile_read import CONCURRENCY, check
from bridge.store import operator
from bridge.store.db import Engine, make_engine
from bridge.store.inbox import add_intents


def client_for(settings: Settings) -> tuple[CryptolensClient, httpx.AsyncClient]:
    """A Cryptolens client for one CLI run, and the HTTP client to close after it."""
    http = make_http_client(
        connect_timeout=settings.cryptolens_connect_timeout,
        read_timeout=settings.cryptolens_read_timeout,
        max_connections=CONCURRENCY,
    )
    base = settings.cryptolens_api_url
    return CryptolensClient(http, token=settings.token(), base_url=base), http


async def reconcile(
    engine: Engine,
    client: CryptolensClient,
    *,
    since: datetime | None = None,
    repair: bool = False,
    progress: bool = False,
) -> Report:
    """Check every license (and store the repairs, with ``repair``)."""
    wanted = await asyncio.to_thread(expectations, engine, since)
    held = await asyncio.to_thread(operator.keys_held, engine)
    with Progress(
        TextColumn("reconcile"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not progress,
    ) as bar:
        task = bar.add_task("licenses", total=len(wanted))
        report = await check(client, wanted, held=held, advance=lambda: bar.advance(task))
    if repair:
        specs = [d.repair for d in report.drift if d.repair is not None]
        report.stored = await asyncio.to_thread(add_intents, engine, specs)
    return report


@click.command("reconcile")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Only licenses whose key creation was stored since (UTC).",
)
@click.option("--repair", is_flag=True, help="Store an intent per drift (exactly once).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def command(since: datetime | None, repair: bool, as_json: bool) -> None:
    """Compare every paid license with Cryptolens; report (and --repair) drift.

    Exits 1 when drift is found and not repaired (a manual block is reported only).
    """
    settings = Settings()
    engine = make_engine(settings.database_url)
    when = since.replace(tzinfo=UTC) if since is not None else None

    async def run() -> Report:
        client, http = client_for(settings)
        try:
            report = await reconcile(
                engine, client, since=when, repair=repair, progress=not as_json
            )
            if report.stored:
                redis = connect(settings.redis_url)
                try:
                    await asyncio.wait_for(enqueue(redis, report.stored), 5)
                except Exception as exc:  # the worker's relay queues pending intents anyway
                    click.echo(f"could not reach Redis ({type(exc).__name__}): the relay will")
                finally:
                    await redis.aclose()
            return report
        finally:
            await http.aclose()

    try:
        report = asyncio.run(run())
    finally:
        engine.dispose()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "checked": report.checked,
                    "drift": [d.as_json() for d in report.drift],
                    "stored": report.stored,
                    "errors": report.errors,
                },
                sort_keys=True,
            )
        )
    else:
        for d in report.drift:
            fix = f"  -> {d.repair.id}" if repair and d.repair else ""
            click.echo(f"{d.kind:<12} {d.ref}  {d.detail}{fix}")
        for ref, error in report.errors.items():
            click.echo(f"{'unreadable':<12} {ref}  {error}")
        stored = f", {len(report.stored)} repair intent(s) stored" if repair else ""
        click.echo(f"{report.checked} license(s) checked, {len(report.drift)} drift{stored}")
    if report.actionable and not repair:
        raise SystemExit(1)
