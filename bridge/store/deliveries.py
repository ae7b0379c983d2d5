"""The ``delivery_log`` and ``delivery_count`` tables: a bounded record of the deliveries
that stored no new event (refusals and duplicates), written by :class:`DeliveryRecorder`.

A verified delivery is an event row (``webhook_event``); a refused one leaves nothing,
which is right for the data and wrong for the operator who wants to know why Stripe's
dashboard shows failures. :class:`DeliveryRecorder` keeps the newest :data:`KEEP` of them
(provider, outcome, cause, a short detail, the peer's address: never a body or a
header value) and counts every one by provider and cause.

Every endpoint (Stripe, HubSpot, Pipedrive, the generic CRM contract, ``POST /usage``)
calls :meth:`DeliveryRecorder.refused` or :meth:`DeliveryRecorder.duplicate`, which name
the provider and the cause in one shared vocabulary, so the admin page compares providers:

    no_header          no signature or Authorization header at all
    malformed_header   a header that does not parse (or the wrong auth scheme)
    timestamp          the signature matches, but is dated outside the tolerance
    no_match           no secret, credential or token matches
    throttled          not checked: this client failed too often (bridge.core.throttle)
    url_mismatch       HubSpot: a client secret matches, but for another URL than the
                       one the bridge rebuilt (BRIDGE_PUBLIC_URL)
    legacy_signature   HubSpot: only a v1/v2 signature (HUBSPOT_ACCEPT_LEGACY_SIGNATURES off)
    too_large, bad_encoding, bad_json, not_an_event, bad_body, too_many, bad_payload,
    no_such_source, database_unavailable
                       the body or the request itself, as the endpoint answered it
    bad_event          HubSpot: events of a batch skipped (once per batch, with a count)
    bad_records        POST /usage: records of a batch refused (once, with a count)
    idempotency_conflict  POST /usage: records reusing a key for other content (idem)
    duplicate          verified, but already stored (usage: once per batch, with a count)

Noting only appends to memory and returns. One background task writes what has piled
up in one transaction, in a thread, so neither a refusal nor the happy path waits on
the database. A flood of forged requests cannot grow memory: past :data:`BUFFER`
unwritten rows the oldest are dropped (the counts still include them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Engine, bindparam, text

from bridge.core.logs import get_logger
from bridge.store.db import transaction
from bridge.store.payloads import storable_text
from bridge.store.tables import utcnow

log = get_logger(__name__)

KEEP = 1000  # rows kept in delivery_log
BUFFER = 1000  # rows waiting to be written
_DETAIL = 300  # the column's width

REFUSED, DUPLICATE = "refused", "duplicate"

_INSERT = text(
    "INSERT INTO delivery_log (provider, outcome, cause, detail, external_id, client,"
    " received_at) VALUES (:provider, :outcome, :cause, :detail, :external_id, :client, :at)"
).bindparams(bindparam("at", type_=DateTime(timezone=True)))
# Both SQLite (3.24+) and PostgreSQL spell an upsert this way.
_COUNT = text(
    "INSERT INTO delivery_count (provider, cause, outcome, count, last_at)"
    " VALUES (:provider, :cause, :outcome, :n, :at)"
    " ON CONFLICT (provider, cause) DO UPDATE SET count = delivery_count.count + :n,"
    " last_at = :at"
).bindparams(bindparam("at", type_=DateTime(timezone=True)))
_TRIM = text("DELETE FROM delivery_log WHERE id <= (SELECT MAX(id) FROM delivery_log) - :keep")


@dataclass(frozen=True, slots=True)
class Note:
    provider: str
    outcome: str
    cause: str
    detail: str | None
    external_id: str | None
    client: str | None
    at: datetime


def client_of(scope: Mapping[str, Any]) -> str | None:
    """The peer's address from an ASGI scope (a proxy's, behind one)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _detail(text: str) -> str:
    """A detail within its column, escaped where a database could not take it (an
    escape is at most six characters: never hashed, cut after)."""
    return storable_text(text[:_DETAIL], 6 * _DETAIL)[:_DETAIL]


class DeliveryRecorder:
    def __init__(self, engine: Engine, *, keep: int = KEEP, buffer: int = BUFFER) -> None:
        self._engine = engine
        self._keep = keep
        self._rows: deque[Note] = deque(maxlen=buffer)
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def note(
        self,
        provider: str,
        outcome: str,
        cause: str,
        *,
        detail: str | None = None,
        external_id: str | None = None,
        client: str | None = None,
    ) -> None:
        """Remember one delivery; written shortly after, off the request's path."""
        self._rows.append(
            Note(
                provider,
                outcome,
                cause,
                # A sender's id may hold a NUL, which PostgreSQL refuses: escaped, or
                # the whole batch of notes would fail to be written.
                _detail(detail) if detail else None,
                storable_text(external_id, 255) if external_id else None,
                client[:64] if client else None,
                utcnow(),
            )
        )
        self._counts[(provider, cause, outcome)] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    def refused(
        self, provider: str, cause: str, scope: Mapping[str, Any], detail: str | None = None
    ) -> None:
        """A request refused: its cause and our message, never its body or a header's value."""
        self.note(provider, REFUSED, cause, detail=detail, client=client_of(scope))

    def duplicate(
        self,
        provider: str,
        scope: Mapping[str, Any],
        external_id: str | None,
        detail: str | None = None,
    ) -> None:
        """A verified delivery whose id was stored before."""
        self.note(
            provider,
            DUPLICATE,
            DUPLICATE,
            detail=detail,
            external_id=external_id,
            client=client_of(scope),
        )

    async def _flush(self) -> None:
        while self._rows or self._counts:
            rows = list(self._rows)
            self._rows.clear()
            counts = dict(self._counts)
            self._counts.clear()
            try:
                await asyncio.to_thread(self._write, rows, counts)
            except Exception as exc:  # a record for operators: never worth a failed request
                log.warning("delivery log not written", error=type(exc).__name__, rows=len(rows))
                return

    def _write(self, rows: list[Note], counts: dict[tuple[str, str, str], int]) -> None:
        now = utcnow()
        with transaction(self._engine) as connection:
            if rows:
                connection.execute(
                    _INSERT,
                    [
                        {
                            "provider": r.provider,
                            "outcome": r.outcome,
                            "cause": r.cause,
                            "detail": r.detail,
                            "external_id": r.external_id,
                            "client": r.client,
                            "at": r.at,
                        }
                        for r in rows
                    ],
                )
                connection.execute(_TRIM, {"keep": self._keep})
            for (provider, cause, outcome), n in sorted(counts.items()):
                connection.execute(
                    _COUNT,
                    {"provider": provider, "cause": cause, "outcome": outcome, "n": n, "at": now},
                )

    async def flush(self) -> None:
        """Wait until everything noted so far is written (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
