"""The ``license`` and ``license_alias`` tables: which Cryptolens key a license ref
means, what the bridge learned about it, and which keys are spoken for.

A provider may name one license several ways (a subscription, and its payment intent or
charge: ``license_alias``). :func:`resolve` is the one answer to "which license does this
ref mean"; statements that select a license's intents under any of its names use
:data:`NAMED_BY_REF`. This module is the only writer of both tables: a delivery's aliases
(``bridge.store.inbox``) and a usage key's own license (``bridge.store.ledger``) are
inserted through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine

from bridge.core.intents import usage_license_ref
from bridge.store import attempts, leases
from bridge.store.dbapi import Sql, Tx, insert_rows, tx
from bridge.store.errors import KeyHeld, NotReplayable

# The intents of a license under its ref or any alias (``:ref`` resolved already).
NAMED_BY_REF = (
    "(license_ref = :ref OR license_ref IN (SELECT alias FROM license_alias WHERE ref = :ref))"
)

_RESOLVE = Sql("SELECT ref FROM license_alias WHERE alias = :alias")
_GET = Sql(
    """SELECT product_id, "key", customer_id, block_decided_at, block_reason, ended_by,
    customer_decided_at FROM license WHERE ref = :ref {for_update}"""
)
# A row may already be there: another intent of the license parked on it (a stub, see
# claim), or an earlier creation that made no key.
_NEW = Sql(
    """INSERT INTO license (ref, product_id, template_id, created_by, created_at)
    VALUES (:ref, :product_id, :template_id, :created_by, :created_at)
    ON CONFLICT (ref) DO NOTHING"""
)
_STUB = Sql(
    """INSERT INTO license (ref, created_at) VALUES (:ref, :created_at)
    ON CONFLICT (ref) DO NOTHING"""
)
_TEMPLATE = Sql(
    """UPDATE license SET product_id = :product_id, template_id = :template_id,
    created_by = COALESCE(created_by, :created_by) WHERE ref = :ref"""
)
_KEY = Sql('UPDATE license SET "key" = :key WHERE ref = :ref')
_PRODUCT = Sql(
    "UPDATE license SET product_id = :product_id, template_id = :template_id WHERE ref = :ref"
)
_HOLDERS = Sql('SELECT ref, "key" FROM license WHERE product_id = :product_id AND "key" = :key')

# What a run may learn about its license and write with its outcome.
FACTS = (
    "customer_id",
    "block_decided_at",
    "block_reason",
    "ended_by",
    "customer_decided_at",
)
_UPDATES = {
    columns: Sql(
        # Column names from the fixed tuple above, never from input.
        "UPDATE license SET "  # noqa: S608
        + ", ".join(f"{c} = :{c}" for c in columns)
        + " WHERE ref = :ref"
    )
    for columns in (
        tuple(c for i, c in enumerate(FACTS) if mask >> i & 1) for mask in range(1, 2 ** len(FACTS))
    )
}


@dataclass(frozen=True)
class LicenseView:
    ref: str
    product_id: int | None
    key: str | None
    customer_id: int | None
    block_decided_at: int | None
    block_reason: str | None
    ended_by: str | None = None  # an ending block in force (bridge.core.blocks)
    customer_decided_at: int | None = None  # the newest customer change applied


def resolve(t: Tx, ref: str) -> str:
    """The license ``ref`` means: the ref an alias names, or ``ref`` itself."""
    row = t.one(_RESOLVE, {"alias": ref})
    return row[0] if row is not None else ref


def add_aliases(t: Tx, aliases: dict[str, str]) -> None:
    """Store the aliases (alias -> ref) not stored yet: a name, once given, is kept."""
    insert_rows(
        t,
        "INSERT INTO license_alias (alias, ref)",
        sorted(aliases.items()),
        "ON CONFLICT (alias) DO NOTHING",
    )


def resolve_ref(engine: Engine, ref: str) -> str:
    """:func:`resolve` in a transaction of its own."""
    with tx(engine) as t:
        return resolve(t, ref)


def read(t: Tx, ref: str) -> LicenseView | None:
    """The license's row, locked (PostgreSQL) until the transaction ends."""
    row = t.one(_GET, {"ref": ref})
    return None if row is None else LicenseView(ref, *row)


def stub(t: Tx, ref: str, now: datetime) -> None:
    """A row for a license that has none yet (to park on: see ``claims``)."""
    t.run(_STUB, {"ref": ref, "created_at": t.time(now)})


def learn(t: Tx, ref: str, facts: dict[str, Any]) -> None:
    """Write what a run learned about the license (columns of :data:`FACTS`)."""
    if not facts:
        return
    unknown = set(facts) - set(FACTS)
    if unknown:  # pragma: no cover - effects only learn these facts
        raise ValueError(f"not a license fact: {sorted(unknown)}")
    columns = tuple(c for c in FACTS if c in facts)
    t.run(_UPDATES[columns], {"ref": ref, **facts})


def for_creation(
    t: Tx, ref: str, created_by: str, product_id: int, template_id: int, now: datetime
) -> str | None:
    """The license a creation is for, inserted if new, read locked; its key if it has one.

    Insert-or-keep, then read it locked: an intent parking on this license at the same
    moment inserts its stub row concurrently (PostgreSQL), and either way one row is
    there to lock."""
    values = {
        "ref": ref,
        "product_id": product_id,
        "template_id": template_id,
        "created_by": created_by,
        "created_at": t.time(now),
    }
    t.run(_NEW, values)
    row = t.one(_GET, {"ref": ref})
    assert row is not None
    return cast(str | None, row[1]) or None


def record_template(t: Tx, ref: str, created_by: str, product_id: int, template_id: int) -> None:
    """The template (and product) a creation is sent with, on its license."""
    t.run(
        _TEMPLATE,
        {
            "ref": ref,
            "product_id": product_id,
            "template_id": template_id,
            "created_by": created_by,
        },
    )


def set_license_key(
    engine: Engine,
    ref: str,
    key: str,
    attempt_id: int | None,
    *,
    release: tuple[str, str] | None = None,
    product: tuple[int, int] | None = None,
) -> None:
    """Claim ``key`` for the license, and close the attempt that made it, atomically;
    ``release`` (name, owner) lets go of the creation lease in the same transaction;
    ``product`` (product id, template id) is what the key was made of, when that is not
    what the license row says (a later hint changed it). KeyHeld, changing nothing, when
    another license holds the key or an open review lists it."""
    with tx(engine) as t:
        if release is not None:
            leases.drop(t, *release)
        row = t.one(_GET, {"ref": ref})
        product_id = product[0] if product is not None else (row[0] if row else None)
        if product_id is not None and _held(t, int(product_id), {key}, but=ref):
            raise KeyHeld(f"the key {key} is another license's, or listed in an open review")
        if product is not None:
            t.run(_PRODUCT, {"ref": ref, "product_id": product[0], "template_id": product[1]})
        t.run(_KEY, {"ref": ref, "key": key})
        if attempt_id is not None:
            attempts.settle(t, attempt_id, "applied")


_EXISTS = Sql("SELECT 1 FROM license WHERE ref = :ref")
_HOLDER = Sql('SELECT ref FROM license WHERE "key" = :key AND ref <> :ref ORDER BY ref')


def give_key(t: Tx, ref: str, key: str) -> None:
    """A person's answer to a review: ``key`` is license ``ref``'s. Refused when the
    license has no row yet, or another license (of any product) holds the key."""
    if t.one(_EXISTS, {"ref": ref}) is None:
        raise NotReplayable("that intent's license has no row yet")
    holder = t.one(_HOLDER, {"key": key, "ref": ref})
    if holder is not None:
        raise KeyHeld(f"that key is license {holder[0]}'s: one key is never two licenses'")
    t.run(_KEY, {"ref": ref, "key": key})


def _held(t: Tx, product_id: int, keys: set[str], *, but: str | None = None) -> set[str]:
    """Which of ``keys`` a license (other than ``but``) holds, or an open review lists."""
    held = {
        k
        for key in sorted(keys)
        for ref_, k in t.all(_HOLDERS, {"product_id": product_id, "key": key})
        if k and ref_ != but
    }
    return held | attempts.listed(t, keys)


def claimed_keys(engine: Engine, product_id: int, keys: set[str]) -> set[str]:
    """Which of ``keys`` a license holds, or an open review lists as a candidate."""
    if not keys:
        return set()
    with tx(engine) as t:
        return _held(t, product_id, keys)


# -- usage: the licenses a key's usage runs under (bridge.store.ledger, the collector)

_BY_KEY = Sql('SELECT ref FROM license WHERE product_id = :product_id AND "key" = :key')
_NEW_USAGE = Sql(
    """INSERT INTO license (ref, product_id, "key", created_by, created_at)
    VALUES (:ref, :product_id, :key, 'usage', :now) ON CONFLICT (ref) DO NOTHING"""
)
_SUBSCRIPTION = Sql(
    """SELECT ref FROM license WHERE product_id = :product_id AND "key" = :key
    AND ref LIKE :prefix ORDER BY ref"""
)
_KEYS = Sql(
    '''SELECT DISTINCT "key" FROM license WHERE product_id = :product_id
    AND "key" IS NOT NULL ORDER BY "key"'''
)


def for_usage(t: Tx, product_id: int, key: str, now: datetime) -> str:
    """The license the key is known by (a Stripe subscription first), else a license of
    its own (``key:<product>:<key digest>``; one made before key digests,
    ``key:<product>:<key>``, is kept): runs on one key never overlap either way."""
    refs = sorted(ref for (ref,) in t.all(_BY_KEY, {"product_id": product_id, "key": key}))
    for prefix in ("stripe:sub:", ""):
        for ref in refs:
            if ref.startswith(prefix) and not ref.startswith("key:"):
                return str(ref)
    own = [ref for ref in refs if ref.startswith("key:")]
    if own:
        return str(own[0])
    ref = usage_license_ref(product_id, key)
    t.run(_NEW_USAGE, {"ref": ref, "product_id": product_id, "key": key, "now": t.time(now)})
    return ref


def keys_of_product(engine: Engine, product_id: int) -> list[str]:
    """The product's keys the bridge knows (its licenses): whose counters it reads."""
    with tx(engine) as t:
        rows = t.all(_KEYS, {"product_id": product_id})
        return [str(k) for (k,) in rows]


def subscription_ref(engine: Engine, product_id: int, key: str) -> str | None:
    """The Stripe subscription license (``stripe:sub:<id>``) the key belongs to, if known."""
    with tx(engine) as t:
        params = {"product_id": product_id, "key": key, "prefix": "stripe:sub:%"}
        row = t.one(_SUBSCRIPTION, params)
        return None if row is None else str(row[0])
