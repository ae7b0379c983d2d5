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
license, per product whichever takes fewer calls (:func:`check`). Drift, by kind:

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

The comparison (:func:`compare`) takes what the store expects and the key as read, and
nothing else: how keys are read (pages or one GetKey each, in :func:`check`) can change
apart.

GetWebAPILog would say which keys changed since a time in one call per product, but not
how they changed (a block and an unblock are both "changed"); a GetKeys page answers for
99 keys directly: 100,000 licenses are about 1,000 calls (``bench --reconcile``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bridge.core import blocks
from bridge.core.intents import Effect, IntentSpec, Status, merge_start
from bridge.core.queue import connect, enqueue
from bridge.core.settings import Settings
from bridge.cryptolens import AccessDenied, CryptolensClient, NotFound, make_http_client
from bridge.cryptolens.models import KeysPage, LicenseKey
from bridge.store import operator
from bridge.store.db import Engine, make_engine
from bridge.store.inbox import add_intents
from bridge.store.tables import Intent, License

CONCURRENCY = 8  # GetKey / GetKeys calls in flight
PAGE_SIZE = 99  # keys in a GetKeys page
_BLOCK_CALLS = ("key/BlockKey", "key/UnblockKey")
# Attempts whose call may have changed the key: applied, or never known.
_MAY_HAVE_LANDED = (None, "applied", "unknown")
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
    create: Intent | None  # the key creation that should have made the key
    create_params: dict[str, Any]
    under_way: bool  # an intent of it is still pending or running
    ending: tuple[blocks.Stored, ...] = ()  # the ending blocks in force, oldest first
    payment_block: str | None = None  # the payment-status block in force
    decided_at: int | None = None  # when that payment-status decision was made
    # The last BlockKey / UnblockKey of the bridge's that may have landed was a BlockKey:
    # a block on the key can be the bridge's own.
    blocked_by_us: bool = False
    customer_at: int = 0  # when the customer decision the store holds was made

    @property
    def blocked_for(self) -> str | None:
        """The reason the key should be blocked, or None."""
        return self.ending[0].reason if self.ending else self.payment_block


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


#: Drift that is reported and never repaired, nor counted for the exit status: the
#: vendor's own doing in Cryptolens.
REPORTED_ONLY = frozenset({"manual_block"})


@dataclass
class Report:
    checked: int = 0
    drift: list[Drift] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # repair intents stored by this run
    errors: dict[str, str] = field(default_factory=dict)  # license -> why it was not checked

    @property
    def actionable(self) -> list[Drift]:
        """The drift a person or ``--repair`` should act on (all but REPORTED_ONLY)."""
        return [d for d in self.drift if d.kind not in REPORTED_ONLY]


def expectations(engine: Engine, since: datetime | None = None) -> list[Expected]:
    """Every license with a planned key creation (created since ``since``, if given)."""
    store = operator.licenses_whole(engine, _BLOCK_CALLS, since)
    last_call: dict[str, str] = {}  # key scope -> the last block call that may have landed
    for scope, method, outcome in store.block_calls:
        if scope is not None and outcome in _MAY_HAVE_LANDED:
            last_call[scope] = method
    aliases = store.aliases
    by_ref: dict[str, list[Intent]] = {}
    for intent in store.intents:
        by_ref.setdefault(aliases.get(intent.license_ref, intent.license_ref), []).append(intent)
    result: list[Expected] = []
    seen: set[str] = set()
    for create in store.creates:
        ref = aliases.get(create.license_ref, create.license_ref)
        if ref in seen:
            continue
        seen.add(ref)
        params: dict[str, Any] = json.loads(create.params)
        for hint in store.hints.get(create.id, []):
            params = merge_start(params, json.loads(hint))
        intents = by_ref.get(ref, [])
        # The worker's block calls share the scope "key:<ref>" (jobs.effects.readback).
        ours = last_call.get(f"key:{ref}") == "key/BlockKey"
        result.append(
            _expected(ref, store.licenses.get(ref), create, params, intents, blocked_by_us=ours)
        )
    return result


def _expected(
    ref: str,
    license_: License | None,
    create: Intent,
    params: dict[str, Any],
    intents: list[Intent],
    *,
    blocked_by_us: bool = False,
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
    stored = [
        blocks.Stored.of(i.id, Effect(i.effect), json.loads(i.params), i.occurred_at)
        for i in intents
        if i.effect in (Effect.BLOCK.value, Effect.UNBLOCK.value)
    ]
    # The customer the store holds was decided by the newest customer change applied, or
    # else by the link at the purchase (dated like the key's creation).
    customer_at = create.occurred_at
    if license_ is not None and license_.customer_decided_at is not None:
        customer_at = license_.customer_decided_at
    return Expected(
        ref=ref,
        key=license_.key if license_ else None,
        product_id=license_.product_id if license_ else None,
        customer_id=license_.customer_id if license_ else None,
        buyer=buyer,
        expires_at=max(targets) if targets else None,
        create=create,
        create_params=params,
        under_way=any(i.status in _UNDER_WAY for i in intents),
        ending=tuple(blocks.ending_in_force(stored)),
        payment_block=blocks.payment_block(license_.block_reason) if license_ else None,
        decided_at=license_.block_decided_at if license_ else None,
        customer_at=customer_at,
        blocked_by_us=blocked_by_us,
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
        # Dated like the decision it restores: a newer contact change still wins.
        when = want.customer_at
        repair = _spec(want, "customer", want.customer_id, Effect.LINK_CUSTOMER, params, when)
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
    drifts.extend(_block_drift(want, found))
    return drifts


def _block_drift(want: Expected, found: LicenseKey) -> list[Drift]:
    key, decided = want.key, want.decided_at or 0
    if want.blocked_for is None and found.block:
        if not want.blocked_by_us:
            # The vendor blocked it in Cryptolens: theirs to lift, never the bridge's.
            detail = "blocked in Cryptolens, not by the bridge: left as it is"
            return [Drift(want.ref, "manual_block", detail, key)]
        repair = _spec(want, "unblock", decided, Effect.UNBLOCK, {"reason": "reconcile"}, decided)
        return [Drift(want.ref, "blocked", "blocked, and nothing says why", key, repair)]
    if want.blocked_for is not None and not found.block:
        if want.ending:
            # The ending block it restores, dated and named like it (a won dispute lifts
            # both).
            end = want.ending[0]
            params: dict[str, Any] = {"reason": end.reason, "repairs": end.id}
            if end.dispute is not None:
                params["dispute"] = end.dispute
            value = f"{end.reason}:{end.dispute}" if end.dispute else end.reason
            repair = _spec(want, "block", value, Effect.BLOCK, params, end.occurred_at)
        else:
            reason = want.blocked_for
            value = f"{reason}:{decided}"
            repair = _spec(want, "block", value, Effect.BLOCK, {"reason": reason}, decided)
        detail = f"not blocked though {want.blocked_for}"
        return [Drift(want.ref, "not_blocked", detail, key, repair)]
    return []


def by_pages(licenses: int, pages: int) -> bool:
    """Whether to read ``licenses`` keys of a product through GetKeys' ``pages`` (99 keys
    a page) rather than one GetKey each: whichever makes fewer calls. Every call costs
    about the same round trip (80 ms and more to Cryptolens) and the page reads are
    spread over the same few connections, so calls are the cost; a tie goes to GetKey,
    whose answer is the one key asked for."""
    return pages < licenses


def _pages(keys: int) -> int:
    return -(-keys // PAGE_SIZE)


async def check(
    client: CryptolensClient,
    wanted: Sequence[Expected],
    *,
    held: Mapping[int, int] | None = None,
    advance: Callable[[], None] = lambda: None,
) -> Report:
    """Read every license back from Cryptolens; the drift found (nothing is changed).

    Per product, the keys come from GetKeys pages or from one GetKey each, whichever
    takes fewer calls (:func:`by_pages`). ``held`` is how many keys the store holds per
    product (all of them, not only those ``wanted``): Cryptolens holds those (less the few
    deleted there), so ``ceil(held / 99)`` pages is about the least they can cost. A product whose
    licenses to check are no more than that (``--since`` narrowed them to a few) is read
    key by key without a call spent to learn more; otherwise the first page says how
    many pages there really are (the vendor's own keys count too), and the licenses it
    did not hold are read by the rest of the pages or key by key, whichever is fewer.

    A key our store holds that no page returned is read once more by GetKey: NotFound
    says it is gone (deleted in Cryptolens), and a key a deletion moved onto a page
    already read (pages are offsets) is still found. Either way each license goes
    through :func:`compare`, the one comparison, and the progress advances per license.
    """
    report = Report()
    results: dict[str, list[Drift]] = {}
    gate = asyncio.Semaphore(CONCURRENCY)
    held = held or {}

    def done(want: Expected, found: LicenseKey | None) -> None:
        try:
            results[want.ref] = compare(want, found)
        except Exception as exc:  # one unreadable key does not stop the others
            failed(want, exc)
            return
        report.checked += 1
        advance()

    def failed(want: Expected, exc: BaseException) -> None:
        report.errors[want.ref] = f"{type(exc).__name__}: {exc}"
        report.checked += 1
        advance()

    async def one(want: Expected) -> None:
        assert want.key is not None and want.product_id is not None
        try:
            async with gate:
                try:
                    found: LicenseKey | None = await client.get_key(want.product_id, want.key)
                except NotFound:
                    found = None  # deleted in Cryptolens: the license has no key
        except Exception as exc:
            failed(want, exc)
            return
        done(want, found)

    async def page(product_id: int, number: int) -> KeysPage:
        async with gate:
            return await client.get_keys(product_id, page=number)

    async def product(product_id: int, group: list[Expected]) -> None:
        if not by_pages(len(group), _pages(held.get(product_id, 0))):
            await asyncio.gather(*(one(w) for w in group))
            return
        unseen: dict[str, list[Expected]] = {}
        for want in group:
            assert want.key is not None
            unseen.setdefault(want.key, []).append(want)
        unread: list[BaseException] = []

        def take(found: KeysPage) -> None:
            for key in found.keys:
                for want in unseen.pop(key.key, []):
                    done(want, key)

        async def read(number: int) -> None:
            try:
                take(await page(product_id, number))
            except Exception as exc:
                unread.append(exc)

        try:
            first = await page(product_id, 1)
        except AccessDenied:
            # A token made for the worker, before reconcile read pages, may lack GetKeys:
            # GetKey, which it has, still reads every key.
            await asyncio.gather(*(one(w) for w in group))
            return
        except Exception as exc:
            unread.append(exc)
        else:
            take(first)
            if by_pages(len(unseen), first.page_count - 1):
                await asyncio.gather(*(read(n) for n in range(2, first.page_count + 1)))
        left = [w for same in unseen.values() for w in same]
        if unread:  # a page unread: what it held is not known, which is not drift
            for want in left:
                failed(want, unread[0])
            return
        await asyncio.gather(*(one(w) for w in left))

    products: dict[int, list[Expected]] = {}
    for want in wanted:
        if want.key is not None and want.product_id is not None and not want.under_way:
            products.setdefault(want.product_id, []).append(want)
        else:
            done(want, None)
    await asyncio.gather(*(product(p, group) for p, group in products.items()))
    for want in wanted:
        report.drift.extend(results.get(want.ref, []))
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
