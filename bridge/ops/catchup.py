"""``cryptolens-bridge catch-up``: record the Stripe events the webhook missed.

    cryptolens-bridge catch-up                      # the last 72 hours
    cryptolens-bridge catch-up --hours 240          # after a ten-day outage
    cryptolens-bridge catch-up --since 2026-01-05T08:00:00

Lists Stripe's events of the handled types since then (Stripe keeps 30 days) and records
every one not stored yet through the inbox, as if delivered (``bridge.stripe.catchup``).
Run twice, the second run records nothing. Needs ``STRIPE_API_KEY`` (read access to
Events).
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bridge.config import BridgeConfig
from bridge.core.errors import ConfigError
from bridge.core.queue import connect
from bridge.core.settings import Settings
from bridge.store.db import make_engine
from bridge.stripe import api
from bridge.stripe.catchup import RETENTION_DAYS, Summary, catch_up

DEFAULT_HOURS = 72  # Stripe's own retries cover about three days


def _since(since: datetime | None, hours: int | None, now: datetime) -> datetime:
    if since is not None and hours is not None:
        raise click.UsageError("give --since or --hours, not both")
    if since is not None:
        return since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    return now - timedelta(hours=hours or DEFAULT_HOURS)


def _report(summary: Summary) -> str:
    return (
        f"{summary.listed} event(s) listed in {summary.pages} page(s): {summary.recorded} "
        f"recorded ({summary.intents} intent(s)), {summary.ignored} recorded as ignored, "
        f"{summary.duplicates} already stored, {summary.refused} not understood"
    )


@click.command("catch-up")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="Events created since (ISO 8601; UTC unless it says otherwise).",
)
@click.option(
    "--hours",
    type=click.IntRange(1, RETENTION_DAYS * 24),
    default=None,
    help=f"Events of the last N hours (default {DEFAULT_HOURS}).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def command(since: datetime | None, hours: int | None, as_json: bool) -> None:
    """Record the Stripe events the webhook missed (after an outage, a disabled endpoint)."""
    now = datetime.now(UTC)
    start = _since(since, hours, now)
    try:
        settings = Settings()
        config = BridgeConfig.load(settings.config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if settings.stripe_api_key is None:
        raise click.ClickException("catch-up needs STRIPE_API_KEY (read access to Events)")
    if start < now - timedelta(days=RETENTION_DAYS):
        click.echo(f"note: Stripe keeps events for {RETENTION_DAYS} days; older ones are gone")
    engine = make_engine(settings.database_url)
    shown = not as_json and sys.stderr.isatty()

    async def run() -> Summary:
        http = api.make_http_client()
        redis = connect(settings.redis_url)
        assert settings.stripe_api_key is not None
        try:
            with Progress(
                SpinnerColumn(),
                TextColumn("catch-up: {task.completed} event(s) listed"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                disable=not shown,
            ) as bar:
                task = bar.add_task("events", total=None)
                return await catch_up(
                    engine,
                    config,
                    since=start,
                    api_key=settings.stripe_api_key.get_secret_value(),
                    api_base=settings.stripe_api_base,
                    http_client=http,
                    redis=redis,
                    progress=lambda n: bar.advance(task, n),
                )
        finally:
            await http.close_async()  # type: ignore[no-untyped-call]
            await redis.aclose()

    try:
        summary = asyncio.run(run())
    except api.StripeApiError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"since": start.isoformat(), **summary.as_json()}, sort_keys=True))
        return
    for event_id in summary.new_events:
        click.echo(f"recorded {event_id}")
    click.echo(f"since {start.isoformat()}: {_report(summary)}")
    if summary.enqueue_error:
        click.echo(f"could not reach Redis ({summary.enqueue_error}): the worker's relay will")
