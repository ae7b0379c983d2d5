"""Operations: look at intents, and replay the ones that failed or need a person.

    cryptolens-bridge intents --status failed
    cryptolens-bridge replay stripe:sub:sub_1:expires:1700000000
    cryptolens-bridge replay stripe:pi:pi_1:create_key --key ABCDE-FGHIJ-KLMNO-PQRST

A replay puts an intent back to pending with a fresh attempt budget and wakes a worker;
the worker reads Cryptolens back before acting, as always. An intent in ``needs_review``
is there because a read-back was ambiguous: replay it only after looking, and for a key
creation say which key is the license's (``--key``), so that none is created twice.
"""

from __future__ import annotations

import asyncio
import json

import click
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.core.db import make_engine, session
from bridge.core.intents import Effect, Status
from bridge.core.models import Intent, License, LicenseAlias, utcnow
from bridge.core.queue import connect, enqueue
from bridge.core.settings import Settings

REPLAYABLE = {Status.FAILED.value, Status.NEEDS_REVIEW.value}


@click.command("intents")
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def intents_command(status: str | None, limit: int, as_json: bool) -> None:
    """List intents, newest first (BRIDGE_DATABASE_URL)."""
    engine = make_engine(Settings().database_url)
    with Session(engine) as s:
        query = select(Intent).order_by(col(Intent.created_at).desc()).limit(limit)
        if status is not None:
            query = query.where(col(Intent.status) == status)
        rows = s.exec(query).all()
    for row in rows:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "id": row.id,
                        "effect": row.effect,
                        "status": row.status,
                        "attempts": row.attempts,
                        "last_error": row.last_error,
                        "result": json.loads(row.result) if row.result else None,
                    }
                )
            )
        else:
            error = f"  {row.last_error}" if row.last_error else ""
            click.echo(f"{row.status:<12} {row.attempts:>3}  {row.id}{error}")
    engine.dispose()


def replay(engine: Engine, intent_id: str, *, key: str | None = None) -> None:
    """Make a failed or needs-review intent pending again (and claim ``key`` for it)."""
    with session(engine) as s:
        intent = s.get(Intent, intent_id, with_for_update=True)
        if intent is None:
            raise click.ClickException(f"no intent {intent_id}")
        if intent.status not in REPLAYABLE:
            raise click.ClickException(
                f"{intent_id} is {intent.status}; only failed or needs_review intents are replayed"
            )
        if key is not None:
            if intent.effect != Effect.CREATE_KEY.value:
                raise click.ClickException("--key is for create_key intents")
            alias = s.get(LicenseAlias, intent.license_ref)
            license_ = s.get(License, alias.ref if alias else intent.license_ref)
            if license_ is None:
                raise click.ClickException("that intent's license has no row yet")
            license_.key = key
        elif (
            intent.status == Status.NEEDS_REVIEW.value and intent.effect == Effect.CREATE_KEY.value
        ):
            raise click.ClickException(
                "a key creation needs --key KEY (the key you found is this license's) so "
                "that no second key is made"
            )
        intent.status = Status.PENDING.value
        intent.attempts = 0
        intent.next_attempt_at = None
        intent.lease_owner = None
        intent.lease_until = None
        intent.updated_at = utcnow()


@click.command("replay")
@click.argument("intent_ids", nargs=-1, required=True)
@click.option("--key", default=None, help="For a create_key in needs_review: the key it made.")
def replay_command(intent_ids: tuple[str, ...], key: str | None) -> None:
    """Put failed / needs_review intents back to pending and wake a worker."""
    settings = Settings()
    engine = make_engine(settings.database_url)
    try:
        for intent_id in intent_ids:
            replay(engine, intent_id, key=key)
            click.echo(f"pending again: {intent_id}")
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
