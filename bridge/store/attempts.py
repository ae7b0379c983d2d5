"""The ``attempt`` table: the ledger of mutating Cryptolens calls, each written before
it is sent.

An attempt whose outcome is empty was in flight when its run stopped, or its reply was
lost ("unknown"): the next run of its intent reads Cryptolens back before it sends again.
This module is the table's only writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from bridge.store.dbapi import Sql, Tx, tx
from bridge.store.tables import utcnow

_INTENT_ATTEMPTS = Sql(
    "SELECT id, method, sent_at, detail, outcome FROM attempt WHERE intent_id = :intent_id"
    " ORDER BY id"
)
_SCOPE_UNRESOLVED = Sql(
    """SELECT attempt.id, attempt.intent_id, attempt.sent_at, attempt.detail,
    attempt.outcome, intent.status, intent.lease_until, intent.lease_owner
    FROM attempt JOIN intent ON intent.id = attempt.intent_id WHERE attempt.scope = :scope
    AND (attempt.outcome IS NULL OR attempt.outcome = 'unknown') ORDER BY attempt.id"""
)
_SCOPE_OPEN = Sql(
    """SELECT id, intent_id, sent_at, detail, method FROM attempt WHERE scope = :scope
    AND (outcome IS NULL OR outcome = 'unknown') ORDER BY id"""
)
_SETTLE = Sql("UPDATE attempt SET outcome = :outcome, finished_at = :finished_at WHERE id = :id")
_NEW = Sql(
    """INSERT INTO attempt (intent_id, method, scope, sent_at, detail)
    VALUES (:intent_id, :method, :scope, :sent_at, :detail) RETURNING id"""
)
_REFUSED_BEFORE = Sql("SELECT 1 FROM attempt WHERE intent_id = :id AND outcome = 'refused' LIMIT 1")
# Candidate keys listed by reviews still open (their attempts settled as ambiguous).
_LISTED = Sql(
    """SELECT attempt.detail FROM attempt JOIN intent ON intent.id = attempt.intent_id
    WHERE attempt.outcome = 'ambiguous' AND intent.status = 'needs_review'
    AND attempt.detail LIKE :pattern"""
)
_DETAIL = Sql("SELECT detail FROM attempt WHERE id = :id")
_SET_DETAIL = Sql("UPDATE attempt SET detail = :detail WHERE id = :id")


@dataclass(frozen=True)
class OpenAttempt:
    """An attempt whose effect is not known: in flight when its worker died, or unknown."""

    id: int
    sent_at: datetime
    detail: dict[str, Any]
    intent_id: str = ""
    method: str = ""


@dataclass(frozen=True)
class ScopeAttempt:
    """An unresolved attempt of a scope, with what its intent's row says of its run."""

    attempt: OpenAttempt
    outcome: str | None
    status: str
    lease_until: datetime | None
    lease_owner: str | None


def insert(t: Tx, intent_id: str, method: str, detail: dict[str, Any], scope: str | None) -> int:
    row = t.one(
        _NEW,
        {
            "intent_id": intent_id,
            "method": method,
            "scope": scope,
            "detail": json.dumps(detail),
            "sent_at": t.time(utcnow()),
        },
    )
    assert row is not None
    return int(row[0])


def settle(t: Tx, attempt_id: int, outcome: str) -> None:
    t.run(_SETTLE, {"id": attempt_id, "outcome": outcome, "finished_at": t.time(utcnow())})


def _open_attempt(
    t: Tx, id_: int, sent_at: Any, detail: str | None, intent_id: str, method: str = ""
) -> OpenAttempt:
    sent = t.read_time(sent_at)
    assert sent is not None
    return OpenAttempt(id_, sent, json.loads(detail or "{}"), intent_id, method)


def open_of(t: Tx, intent_id: str) -> dict[str, OpenAttempt]:
    """Per method, the intent's newest attempt if its effect is not known."""
    newest: dict[str, tuple[Any, ...]] = {}
    for row in t.all(_INTENT_ATTEMPTS, {"intent_id": intent_id}):
        newest[row[1]] = row
    return {
        method: _open_attempt(t, id_, sent_at, detail, intent_id, method)
        for method, (id_, _, sent_at, detail, outcome) in newest.items()
        if outcome in (None, "unknown")
    }


def unresolved_in_scope(t: Tx, scope: str) -> list[ScopeAttempt]:
    """The attempts in ``scope`` in flight or unknown, with their intents' run state."""
    return [
        ScopeAttempt(
            _open_attempt(t, id_, sent_at, detail, intent_id),
            outcome,
            status,
            t.read_time(until),
            lease_owner,
        )
        for id_, intent_id, sent_at, detail, outcome, status, until, lease_owner in t.all(
            _SCOPE_UNRESOLVED, {"scope": scope}
        )
    ]


def refused_before(t: Tx, intent_id: str) -> bool:
    """Whether a call of this intent was ever refused (a batch it was in, say)."""
    return t.one(_REFUSED_BEFORE, {"id": intent_id}) is not None


def listed(t: Tx, keys: set[str]) -> set[str]:
    """Which of ``keys`` an open review lists as a candidate (see :func:`list_candidates`)."""
    found: set[str] = set()
    for (detail,) in t.all(_LISTED, {"pattern": "%candidates%"}):
        found |= keys & set(json.loads(detail).get("candidates", []))
    return found


def start_attempt(
    engine: Engine,
    intent_id: str,
    method: str,
    detail: dict[str, Any],
    *,
    scope: str | None = None,
    supersedes: int | None = None,
) -> int:
    """Record a call about to be sent; ``supersedes`` is an earlier attempt the caller's
    read-back showed was not applied."""
    with tx(engine) as t:
        if supersedes is not None:
            settle(t, supersedes, "not_applied")
        return insert(t, intent_id, method, detail, scope)


def start_attempts(
    engine: Engine, method: str, details: dict[str, dict[str, Any]], *, supersedes: list[int]
) -> dict[str, int]:
    """Record one call about to be sent on behalf of several intents: one attempt row
    per intent (intent id -> its detail), all in one transaction; returns their ids."""
    with tx(engine) as t:
        for attempt_id in supersedes:
            settle(t, attempt_id, "not_applied")
        return {
            intent_id: insert(t, intent_id, method, detail, None)
            for intent_id, detail in details.items()
        }


def finish_attempts(engine: Engine, attempt_ids: list[int], outcome: str) -> None:
    with tx(engine) as t:
        for attempt_id in attempt_ids:
            settle(t, attempt_id, outcome)


def finish_attempt(engine: Engine, attempt_id: int, outcome: str) -> None:
    with tx(engine) as t:
        settle(t, attempt_id, outcome)


def open_in_scope(engine: Engine, scope: str) -> list[OpenAttempt]:
    """Every attempt in ``scope`` whose effect is not known yet, of any intent."""
    with tx(engine) as t:
        return [
            _open_attempt(t, id_, sent_at, detail, intent_id, method)
            for id_, intent_id, sent_at, detail, method in t.all(_SCOPE_OPEN, {"scope": scope})
        ]


def list_candidates(engine: Engine, attempt_id: int, keys: list[str]) -> None:
    """Record the candidate keys a review of this attempt lists (held back meanwhile)."""
    if not keys:
        return
    with tx(engine) as t:
        row = t.one(_DETAIL, {"id": attempt_id})
        detail = json.loads(row[0]) if row and row[0] else {}
        detail["candidates"] = keys
        t.run(_SET_DETAIL, {"id": attempt_id, "detail": json.dumps(detail)})
