"""The leases one run holds, renewed while the run is alive and checked before each call.

A run owns its intent (``intent.lease_owner``) and its license (the ``license:<ref>``
lease) from the claim on, and may take more on the way: a product's key-creation lease,
a customer's lease while it is searched and added. Every lease lasts
``BRIDGE_LEASE_SECONDS`` from its last renewal; a heartbeat renews all of them every third
of that, so a run that is alive never loses them, however slow Cryptolens or the database.
A run that stops beating (its process died or froze) loses them when they run out, and
another worker may then take the intent over.

That takeover is only safe if the old run can never send a call after it: so right
before a call that changes anything, the run renews its leases in the database
(:meth:`RunLease.confirm`), which both proves it still owns them and makes them outlast
the longest the call can take (connect + read timeout, which the settings keep under a
third of a lease); if a renewal finds a lease taken, the run is lost and raises
:class:`~jobs.errors.LeaseLost` instead of sending. Settings where a lease cannot outlive
two calls are refused at start-up
(``bridge.core.settings:Settings._lease_outlasts_calls``).

Leases run on the runtime's clock (``Runtime.now()``, the wall clock in production) and
the heartbeat waits with ``Runtime.sleep``: a test sets both instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from bridge.core.logs import get_logger
from bridge.store import leases
from jobs.dbcall import in_thread
from jobs.errors import LeaseLost

if TYPE_CHECKING:
    from jobs.runtime import Runtime

log = get_logger(__name__)


class RunLease:
    """The leases of one run (see the module docstring)."""

    def __init__(
        self,
        rt: Runtime,
        intent_id: str,
        owner: str,
        names: set[str],
        companions: tuple[str, ...] = (),
    ) -> None:
        self._rt = rt
        self.intent_id = intent_id
        self.owner = owner
        self._names = set(names)
        # Intents the claim took with this one (``claims.Claimed.companions``): the run
        # holds their leases too, and is lost if it loses one of them.
        self._companions = companions
        self._seconds = rt.settings.lease_seconds
        # The claim took every lease just now; a renewal only ever extends this.
        self._valid_until = rt.now() + timedelta(seconds=self._seconds)
        self._lost = False
        self._task: asyncio.Task[None] | None = None

    @property
    def lost(self) -> bool:
        return self._lost

    def add(self, name: str) -> None:
        """A lease the run has just taken (in a transaction of its own)."""
        self._names.add(name)

    def discard(self, name: str) -> None:
        self._names.discard(name)

    def discard_companions(self, ids: list[str]) -> None:
        """Companions the run has let go of (``intents.release_companions``)."""
        self._companions = tuple(c for c in self._companions if c not in ids)

    async def renew(self) -> bool:
        """Extend every lease of the run now; False (and lost for good) if one is gone."""
        if self._lost:
            return False
        started = self._rt.now()
        missing = await in_thread(
            leases.renew_leases,
            self._rt.engine,
            self.intent_id,
            self.owner,
            sorted(self._names),
            self._seconds,
            self._companions,
            now=started,
        )
        # A lease the run let go of while the renewal ran is not a lost one.
        if missing is None or any(name in self._names for name in missing):
            self._lost = True
            log.warning("run lost its lease", intent=self.intent_id)
            return False
        # Counted from the time the renewal wrote (its ``until`` is that plus a lease).
        self._valid_until = started + timedelta(seconds=self._seconds)
        return True

    async def confirm(self) -> None:
        """Ownership checked (and every lease renewed) in the database now, or
        :class:`LeaseLost`: before each call that changes something. A lease can be lost
        before it runs out (a person replays or parks the intent meanwhile), and one
        short transaction is nothing beside a call to Cryptolens."""
        if not await self.renew():
            raise LeaseLost(self.intent_id)

    async def ensure(self, needed: float) -> None:
        """Ownership for at least ``needed`` more seconds, or :class:`LeaseLost`."""
        if self._lost:
            raise LeaseLost(self.intent_id)
        left = (self._valid_until - self._rt.now()).total_seconds()
        if left < needed and not await self.renew():
            raise LeaseLost(self.intent_id)

    async def _beat(self) -> None:
        interval = self._seconds / 3
        while not self._lost:
            await self._rt.sleep(interval)
            try:
                await self.renew()
            except Exception:  # a database hiccup: the next beat, or ensure(), tries again
                log.exception("lease renewal failed", intent=self.intent_id)

    @asynccontextmanager
    async def beating(self) -> AsyncIterator[RunLease]:
        self._task = asyncio.create_task(self._beat(), name=f"lease:{self.intent_id}")
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
