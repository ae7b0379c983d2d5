"""``cryptolens-bridge reconcile``: what the store says each license should be, against
what Cryptolens holds, and repairs through intents.

For every license the store knows (a paid purchase, a subscription, and any provider's
license ref: a CRM's won deal is one more ref with the same intents), the *expected*
state is read from the store alone:

    key          a key creation was planned                  (else: nothing to check)
    customer     the customer the bridge linked, or the buyer's email if none yet
    expiry       the latest target of the extensions done (ExtendLicense rounds up)
    blocked      the license ended (canceled, refund, dispute) or its payment-status
                 block is in force

and compared with GetKey (one read per license, a few at a time). Drift, by kind:

    no_key             paid, but no key (its creation failed; needs_review is left to a person)
    customer           the key is not linked to the buyer's customer, or to another one
    expiry             the key expires before the paid period (plus grace) ends
    blocked            the key is blocked, and nothing in the store says why
    not_blocked        the license ended or is blocked for payment, and the key is not

``--repair`` stores one intent per drift, under an id made from the license and the state
it restores (``<ref>:reconcile:<kind>:<value>``), through the same insert-on-conflict as a
delivery's intents: a repair planned twice is stored once, and the worker applies it with
its usual read-back, so each repair is exactly once too. After the worker ran them, the
next reconcile finds nothing; run again before, it adds nothing.

GetWebAPILog would say which keys changed since a time in one call per product, but not
how they changed (a block and an unblock are both "changed"); one GetKey per license
answers directly and stays cheap at the sizes the bridge serves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.core.db import make_engine
from bridge.core.inbox import add_intents
from bridge.core.intents import Effect, IntentSpec, Status, merge_start
from bridge.core.models import Intent, License, LicenseAlias, StartHint
from bridge.core.queue import connect, enqueue
from bridge.core.settings import Settings
from bridge.cryptolens import CryptolensClient, NotFound, make_http_client
from bridge.cryptolens.models import LicenseKey

CONCURRENCY = 8  # GetKey calls in flight
# Intents that will still act on their own: no drift is reported for what they cover.
# (Waiting ones wait for a key: with the creation failed, they wait for the repair.)
_UNDER_WAY = frozenset({Status.PENDING.value, Status.RUNNING.value})


@dataclass(frozen=True)
class Expected:
    """A license as the store says it should be in Cryptolens."""

    ref: str
    key: str | None
    product_id: int | None
    customer_id: int | None
    buyer: dict[str, Any]
    expires_at: int | None
    blocked_for: str | None  # the reason it should be blocked, or None
    decided_at: int | None
    create: Intent | None  # the key creation that should have made the key
    create_params: dict[str, Any]
    under_way: bool  # an intent of it is still pending or running


@dataclass(frozen=True)
class Drift:
    ref: str
    kind: str
    detail: str
    key: str | None = None
    repair: IntentSpec | None = None

    def as_json(self) -> dict[str, Any]:
        repair = None
        if self.repair is not None:
            repair = {**asdict(self.repair), "effect": self.repair.effect.value}
        return {
            "license": self.ref,
            "kind": self.kind,
            "detail": self.detail,
            "key": self.key,
            "repair": repair,
        }


@dataclass
class Report:
    checked: int = 0
    drift: list[Drift] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # repair intents stored by this run
    errors: dict[str, str] = field(default_factory=dict)  # license -> why it was not checked


def expectations(engine: Engine, since: datetime | None = None) -> list[Expected]:
    """Every license with a planned key creation (created since ``since``, if given)."""
    with Session(engine) as s:
        query = select(Intent).where(col(Intent.effect) == Effect.CREATE_KEY.value)
        if since is not None:
            query = query.where(col(Intent.created_at) >= since)
        creates = list(s.exec(query.order_by(col(Intent.license_ref))).all())
        aliases = {a.alias: a.ref for a in s.exec(select(LicenseAlias)).all()}
        by_ref: dict[str, list[Intent]] = {}
        for intent in s.exec(select(Intent)).all():
            by_ref.setdefault(aliases.get(intent.license_ref, intent.license_ref), []).append(
                intent
            )
        result: list[Expected] = []
        seen: set[str] = set()
        for create in creates:
            ref = aliases.get(create.license_ref, create.license_ref)
            if ref in seen:
                continue
            seen.add(ref)
            params: dict[str, Any] = json.loads(create.params)
            for hint in s.exec(
                select(StartHint.params).where(col(StartHint.intent_id) == create.id)
            ).all():
                params = merge_start(params, json.loads(hint))
            license_ = s.get(License, ref)
            intents = by_ref.get(ref, [])
            result.append(_expected(ref, license_, create, params, intents))
        return result


def _expected(
    ref: str,
    license_: License | None,
    create: Intent,
    params: dict[str, Any],
    intents: list[Intent],
) -> Expected:
    targets = [
        int(p["expires_at"])
        for i in intents
        if i.status == Status.DONE.value
        and i.effect in (Effect.EXTEND.value, Effect.CREATE_KEY.value)
        and (p := json.loads(i.params)).get("expires_at") is not None
    ]
    buyer: dict[str, Any] = dict(params.get("customer") or {})
    for i in intents:
        p = json.loads(i.params)
        if isinstance(p.get("customer"), dict):
            buyer = {**p["customer"], **buyer}
    blocked_for = None
    if license_ is not None:
        blocked_for = license_.ended_by or license_.block_reason
    return Expected(
        ref=ref,
        key=license_.key if license_ else None,
        product_id=license_.product_id if license_ else None,
        customer_id=license_.customer_id if license_ else None,
        buyer=buyer,
        expires_at=max(targets) if targets else None,
        blocked_for=blocked_for,
        decided_at=license_.block_decided_at if license_ else None,
        create=create,
        create_params=params,
        under_way=any(i.status in _UNDER_WAY for i in intents),
    )


def _spec(
    want: Expected, kind: str, value: object, effect: Effect, params: dict[str, Any], at: int
) -> IntentSpec:
    return IntentSpec(
        id=f"{want.ref}:reconcile:{kind}:{value}",
        effect=effect,
        license_ref=want.ref,
        params=params,
        occurred_at=at,
    )


def compare(want: Expected, found: LicenseKey | None) -> list[Drift]:
    """The drift between what the store expects and the key Cryptolens holds."""
    if want.under_way:
        return []  # the worker has work left on it: it is not drift yet
    create = want.create
    if want.key is not None and found is None:
        detail = f"the key {want.key} is gone from Cryptolens: a person decides"
        return [Drift(want.ref, "no_key", detail, want.key)]
    if want.key is None or found is None:
        if create is None:
            return []
        if create.status == Status.NEEDS_REVIEW.value:
            detail = "its key creation needs review: claim the key on the admin page"
            return [Drift(want.ref, "no_key", detail)]
        repair = _spec(
            want, "create_key", create.id, Effect.CREATE_KEY, want.create_params, create.occurred_at
        )
        why = f"paid, but no key (key creation {create.status}: {create.last_error or ''})"
        return [Drift(want.ref, "no_key", why.strip(), None, repair)]
    drifts: list[Drift] = []
    key, at = want.key, create.occurred_at if create else 0
    linked = found.customer.id if found.customer else None
    if want.customer_id is not None and linked != want.customer_id:
        params = {"customer": want.buyer, "customer_id": want.customer_id}
        repair = _spec(want, "customer", want.customer_id, Effect.LINK_CUSTOMER, params, at)
        detail = f"linked to customer {linked}, the bridge linked {want.customer_id}"
        drifts.append(Drift(want.ref, "customer", detail, key, repair))
    elif want.customer_id is None and linked is None and want.buyer.get("email"):
        repair = _spec(
            want, "customer", "buyer", Effect.LINK_CUSTOMER, {"customer": want.buyer}, at
        )
        drifts.append(Drift(want.ref, "customer", "not linked to the buyer", key, repair))
    expires = int(found.expires.timestamp())
    if want.expires_at is not None and expires < want.expires_at:
        target = want.expires_at
        repair = _spec(want, "expires", target, Effect.EXTEND, {"expires_at": target}, at)
        detail = f"expires {found.expires.isoformat()}, paid until {target} (unix)"
        drifts.append(Drift(want.ref, "expiry", detail, key, repair))
    decided = want.decided_at or 0
    if want.blocked_for is None and found.block:
        repair = _spec(want, "unblock", decided, Effect.UNBLOCK, {"reason": "reconcile"}, decided)
        drifts.append(Drift(want.ref, "blocked", "blocked, and nothing says why", key, repair))
    elif want.blocked_for is not None and not found.block:
        reason = want.blocked_for
        repair = _spec(want, "block", reason, Effect.BLOCK, {"reason": reason}, decided)
        drifts.append(Drift(want.ref, "not_blocked", f"not blocked though {reason}", key, repair))
    return drifts


async def check(
    client: CryptolensClient,
    wanted: Sequence[Expected],
    *,
    advance: Callable[[], None] = lambda: None,
) -> Report:
    """Read every license back from Cryptolens; the drift found (nothing is changed)."""
    report = Report()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(want: Expected) -> list[Drift]:
        try:
            found = None
            if want.key is not None and want.product_id is not None and not want.under_way:
                async with gate:
                    try:
                        found = await client.get_key(want.product_id, want.key)
                    except NotFound:
                        found = None  # deleted in Cryptolens: the license has no key
            return compare(want, found)
        except Exception as exc:  # one unreadable key does not stop the others
            report.errors[want.ref] = f"{type(exc).__name__}: {exc}"
            return []
        finally:
            report.checked += 1
            advance()

    for drifts in await asyncio.gather(*(one(w) for w in wanted)):
        report.drift.extend(drifts)
    return report


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
        report = await check(client, wanted, advance=lambda: bar.advance(task))
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

    Exits 1 when drift is found and not repaired.
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
    if report.drift and not repair:
        raise SystemExit(1)
