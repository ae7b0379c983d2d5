"""Operations: look at events and intents, and replay the ones that failed or need a person.

    cryptolens-bridge events --provider stripe --type invoice.paid --since 2026-01-01
    cryptolens-bridge events show evt_1
    cryptolens-bridge intents --status failed
    cryptolens-bridge intents show stripe:sub:sub_1:expires:1700000000
    cryptolens-bridge replay stripe:sub:sub_1:expires:1700000000 --dry-run
    cryptolens-bridge replay stripe:sub:sub_1:expires:1700000000
    cryptolens-bridge replay evt_1            (every failed or needs_review intent of it)
    cryptolens-bridge replay stripe:pi:pi_1:create_key --key ABCDE-FGHIJ-KLMNO-PQRST

A replay puts an intent back to pending with a fresh attempt budget and wakes a worker;
the worker reads Cryptolens back before acting, as always. An intent in ``needs_review``
is there because a read-back was ambiguous: replay it only after looking, and for a key
creation say which key is the license's (``--key``), so that none is created twice.

Stored text is printed with its control characters escaped (``bridge.ops.terminal``):
ids, types and notes come from senders. What cannot be done as asked raises
``bridge.ops.errors`` (``bridge.cli`` prints it, escaped; the admin page shows it).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import click

from bridge.config import BridgeConfig
from bridge.core.intents import Effect, Status
from bridge.core.queue import connect, enqueue
from bridge.core.settings import Settings
from bridge.ops.errors import NotReplayable, UnknownRecord
from bridge.ops.terminal import say
from bridge.store import errors as store_errors
from bridge.store import intents as store_intents
from bridge.store import operator
from bridge.store.db import Engine, make_engine
from bridge.store.tables import Intent, WebhookEvent

_SINCE = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"])


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def _intent_json(row: Intent) -> dict[str, Any]:
    return {
        "id": row.id,
        "effect": row.effect,
        "license": row.license_ref,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "result": json.loads(row.result) if row.result else None,
        "event_id": row.event_id,
        "updated_at": row.updated_at.isoformat(),
    }


@click.group("intents", invoke_without_command=True)
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--effect", type=click.Choice([e.value for e in Effect]), default=None)
@click.option("--provider", default=None, help="stripe, hubspot, ... (the ref's prefix)")
@click.option("--since", type=_SINCE, default=None, help="Stored since (UTC).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def intents_command(
    ctx: click.Context,
    status: str | None,
    effect: str | None,
    provider: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List intents, newest first (BRIDGE_DATABASE_URL); `intents show ID` for one."""
    if ctx.invoked_subcommand is not None:
        return
    engine = make_engine(Settings().database_url)
    rows = operator.intent_list(
        engine, status=status, effect=effect, provider=provider, since=_utc(since), limit=limit
    )
    for row in rows:
        if as_json:
            click.echo(json.dumps(_intent_json(row)))
        else:
            error = f"  {row.last_error}" if row.last_error else ""
            say(f"{row.status:<12} {row.attempts:>3}  {row.id}{error}")
    engine.dispose()


@intents_command.command("show")
@click.argument("intent_id")
@click.option("--json", "as_json", is_flag=True)
def intent_show_command(intent_id: str, as_json: bool) -> None:
    """One intent, with its recorded Cryptolens calls."""
    engine = make_engine(Settings().database_url)
    try:
        found = operator.intent_calls(engine, intent_id)
    finally:
        engine.dispose()
    if found is None:
        raise UnknownRecord(f"no intent {intent_id}")
    row, attempts = found
    calls = [
        {
            "method": a.method,
            "sent_at": a.sent_at.isoformat(),
            "outcome": a.outcome,
            "detail": json.loads(a.detail) if a.detail else None,
        }
        for a in attempts
    ]
    data = {**_intent_json(row), "params": json.loads(row.params), "calls": calls}
    if as_json:
        click.echo(json.dumps(data))
        return
    for name, value in data.items():
        if name != "calls":
            say(f"{name:<12} {value}")
    for call in calls:
        say(f"call         {call['method']} {call['outcome'] or 'in flight'} {call['detail']}")


def _event_json(row: WebhookEvent, intents: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "provider": row.provider,
        "external_id": row.external_id,
        "type": row.type,
        "received_at": row.received_at.isoformat(),
        "outcome": row.outcome,
        "note": row.note,
    }
    if intents is not None:
        data["intents"] = intents
    return data


@click.group("events", invoke_without_command=True)
@click.option("--provider", default=None)
@click.option("--type", "event_type", default=None, help="e.g. invoice.paid")
@click.option("--status", type=click.Choice(["planned", "ignored"]), default=None)
@click.option("--since", type=_SINCE, default=None, help="Received since (UTC).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def events_command(
    ctx: click.Context,
    provider: str | None,
    event_type: str | None,
    status: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored deliveries, newest first; `events show ID` for one and its intents."""
    if ctx.invoked_subcommand is not None:
        return
    engine = make_engine(Settings().database_url)
    try:
        rows = operator.event_list(
            engine,
            provider=provider,
            event_type=event_type,
            outcome=status,
            since=_utc(since),
            limit=limit,
        )
    finally:
        engine.dispose()
    for row in rows:
        if as_json:
            click.echo(json.dumps(_event_json(row)))
        else:
            note = f"  {row.note}" if row.note else ""
            head = f"{row.id:>6} {row.provider:<8} {row.outcome:<8} {row.type:<40}"
            say(f"{head} {row.external_id}{note}")


@events_command.command("show")
@click.argument("event_id")
@click.option("--payload", is_flag=True, help="Also print the stored payload.")
@click.option("--json", "as_json", is_flag=True)
def event_show_command(event_id: str, payload: bool, as_json: bool) -> None:
    """One delivery (its provider id, or the row id) and the intents it implied."""
    engine = make_engine(Settings().database_url)
    try:
        found = operator.event_intents(engine, event_id)
    finally:
        engine.dispose()
    if found is None:
        raise UnknownRecord(f"no event {event_id}")
    row, intents = found
    data = {**_event_json(row), "intents": [_intent_json(i) for i in intents]}
    if payload:
        data["payload"] = json.loads(row.payload)
    if as_json:
        click.echo(json.dumps(data))
        return
    for name in ("id", "provider", "external_id", "type", "received_at", "outcome", "note"):
        say(f"{name:<12} {data[name]}")
    for i in intents:
        say(f"intent       {i.status:<12} {i.id}")
    if payload:
        click.echo(json.dumps(data["payload"], indent=2))


def replay(engine: Engine, intent_id: str, *, key: str | None = None) -> None:
    """Make a failed or needs-review intent pending again (and claim ``key`` for it):
    the store's replay, its refusals as the operator's errors."""
    try:
        store_intents.replay(engine, intent_id, key=key)
    except store_errors.UnknownIntent as exc:
        raise UnknownRecord(str(exc)) from None
    except (store_errors.NotReplayable, store_errors.KeyHeld) as exc:
        raise NotReplayable(str(exc)) from None


def _targets(engine: Engine, ids: tuple[str, ...], *, replayable: bool) -> list[str]:
    """Intent ids for the command's arguments: an intent's id, or an event's (its
    provider id or row id: its intents; with ``replayable``, those failed or in review)."""
    found: list[str] = []
    for given in ids:
        named = operator.named_intents(engine, given, replayable=replayable)
        if named is None:
            raise UnknownRecord(f"no intent or event {given}")
        found.extend(named)
    return list(dict.fromkeys(found))


def _print_dry_runs(
    settings: Settings, engine: Engine, intent_ids: list[str], as_json: bool
) -> None:
    from bridge.ops.context import ProviderContext
    from bridge.ops.dryrun import dry_run
    from bridge.ops.reconcile import client_for

    async def plans() -> None:
        client, http = client_for(settings)
        ctx = ProviderContext(settings, BridgeConfig.load(settings.config_path))
        try:
            for intent_id in intent_ids:
                plan = await dry_run(engine, client, ctx, intent_id)
                assert plan is not None  # _targets found it
                if as_json:
                    click.echo(json.dumps(plan.as_json()))
                    continue
                say(f"{plan.intent_id} ({plan.effect}, {plan.status})")
                key = plan.key or "no key yet"
                say(f"  license {plan.license_ref}: {key}")
                for name, value in plan.state.items():
                    say(f"  now {name}: {value}")
                for call in plan.calls:
                    say(f"  would call {call.line()}")
                if not plan.calls:
                    click.echo("  would call nothing")
                for note in plan.notes:
                    say(f"  note: {note}")
        finally:
            await ctx.aclose()
            await http.aclose()

    asyncio.run(plans())


@click.command("replay")
@click.argument("ids", nargs=-1, required=True)
@click.option("--key", default=None, help="For a create_key in needs_review: the key it made.")
@click.option(
    "--dry-run",
    "--plan",  # its first name, kept for the runbooks that say it
    "dry",
    is_flag=True,
    help="Print the Cryptolens calls it would make; change nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: one JSON object per intent.")
def replay_command(ids: tuple[str, ...], key: str | None, dry: bool, as_json: bool) -> None:
    """Put failed / needs_review intents (or an event's) back to pending and wake a worker.

    With --dry-run, print the exact calls each would make now, from the key's current state
    in Cryptolens, and change nothing.
    """
    settings = Settings()
    engine = make_engine(settings.database_url)
    try:
        intent_ids = _targets(engine, ids, replayable=not dry)
        if dry:
            _print_dry_runs(settings, engine, intent_ids, as_json)
            return
        if not intent_ids:
            raise NotReplayable("nothing to replay: no failed or needs_review intent")
        for intent_id in intent_ids:
            replay(engine, intent_id, key=key)
            say(f"pending again: {intent_id}")
    finally:
        engine.dispose()

    async def wake() -> int:
        redis = connect(settings.redis_url)
        try:
            return await enqueue(redis, intent_ids)
        finally:
            await redis.aclose()

    try:
        asyncio.run(wake())
    except Exception as exc:  # the worker's relay picks them up anyway
        click.echo(f"could not reach Redis ({type(exc).__name__}); the relay will queue them")
