"""What every effect shares: a run of one claimed intent, its calls and its clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from bridge.cryptolens import CryptolensError, OutcomeUnknown, Transient
from bridge.store import attempts, claims, intents, leases
from jobs.dbcall import in_thread
from jobs.errors import Busy, LeaseLost, NotYet
from jobs.lease import RunLease
from jobs.runtime import Runtime

DAY = 86400
# Clock skew we tolerate between this host and Cryptolens when reading logs back.
READ_BACK_SLACK = 120

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")


@dataclass
class Run:
    """One run of one claimed intent: what it holds, and what it learns."""

    rt: Runtime
    intent: claims.Claimed
    outcome: intents.Outcome
    lease: RunLease
    # Runs another intent beside this run (the runner's; None: not at all). A new key's
    # purchase event is registered while the key is being tagged and linked.
    follow: Callable[[str], Awaitable[None]] | None = None
    started: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, intent_id: str) -> None:
        if self.follow is not None:
            self.started.append(asyncio.ensure_future(self.follow(intent_id)))

    @property
    def call_bound(self) -> float:
        """The longest one Cryptolens call can take (its client's timeouts)."""
        return self.rt.settings.call_bound_seconds

    def settle_after(self, attempt: attempts.OpenAttempt) -> datetime:
        """When an unresolved call can no longer land: its read-back is then final."""
        return attempt.sent_at + timedelta(
            seconds=self.call_bound + self.rt.settings.settle_seconds
        )

    def not_yet(self, attempt: attempts.OpenAttempt, what: str) -> None:
        """Raise NotYet unless ``attempt`` can no longer land at Cryptolens."""
        at = self.settle_after(attempt)
        now = self.rt.now()
        if now < at:
            raise NotYet(f"{what} may still land", (at - now).total_seconds())

    async def send(
        self, method: str, call: Callable[[], Awaitable[T]], *, confirmed: bool = False
    ) -> T:
        """Send a call that changes something: only once the run's leases are confirmed
        in the database (``confirmed``: the caller did it just now), and cut off at the
        call's bound so that they outlast it."""
        if not confirmed:
            await self.lease.confirm()
        try:
            async with asyncio.timeout(self.call_bound):
                return await call()
        except TimeoutError:
            raise OutcomeUnknown(method, "no complete reply within the call's bound") from None


async def mutate(
    run: Run,
    method: str,
    detail: dict[str, Any],
    call: Callable[[], Awaitable[T]],
    *,
    scope: str | None = None,
    supersedes: int | None = None,
) -> T:
    """Send one mutating call with its attempt row written first.

    On success the attempt is settled as applied with the run's outcome (one transaction
    at the end); on failure it is settled now, since the run ends with an exception.
    """
    rt = run.rt
    await run.lease.confirm()  # before the attempt row: a lost run leaves none
    attempt_id = await in_thread(
        attempts.start_attempt,
        rt.engine,
        run.intent.id,
        method,
        detail,
        scope=scope,
        supersedes=supersedes,
    )
    try:
        result = await run.send(method, call, confirmed=True)
    except LeaseLost:
        await in_thread(attempts.finish_attempt, rt.engine, attempt_id, "not_applied")  # never sent
        raise
    except CryptolensError as exc:
        await in_thread(attempts.finish_attempt, rt.engine, attempt_id, failed_outcome(exc))
        raise
    run.outcome.attempts[attempt_id] = "applied"
    return result


async def mutate_together(
    run: Run,
    method: str,
    details: dict[str, dict[str, Any]],
    call: Callable[[], Awaitable[T]],
    *,
    supersedes: list[int],
) -> T:
    """Send one mutating call on behalf of several intents (the run's own and its
    companions', ``claims.Claimed.companions``): one attempt row per intent, all written
    before the call, and all settled alike by its outcome, as :func:`mutate` does."""
    rt = run.rt
    await run.lease.confirm()  # every intent's lease: a lost run leaves no attempt
    ids = list(
        (
            await in_thread(
                attempts.start_attempts, rt.engine, method, details, supersedes=supersedes
            )
        ).values()
    )
    try:
        result = await run.send(method, call, confirmed=True)
    except LeaseLost:
        await in_thread(attempts.finish_attempts, rt.engine, ids, "not_applied")  # never sent
        raise
    except CryptolensError as exc:
        await in_thread(attempts.finish_attempts, rt.engine, ids, failed_outcome(exc))
        raise
    for attempt_id in ids:
        run.outcome.attempts[attempt_id] = "applied"
    return result


def failed_outcome(exc: CryptolensError) -> str:
    if isinstance(exc, OutcomeUnknown):
        return "unknown"
    return "not_applied" if isinstance(exc, Transient) else "refused"


def unix(value: datetime) -> int:
    return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp())


async def together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both at once, each to its end; then the first failure is raised as it is (the
    runner classifies it).

    Neither is cancelled when the other fails: a key creation cut off between its
    attempt row and its call would leave an outcome to read back for nothing, and one cut
    off after its call would lose a key it made. A failed customer lookup costs a retry
    of the lookup, not of the creation.
    """
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    a, b = results
    return a, b  # type: ignore[return-value]


@asynccontextmanager
async def held(run: Run, name: str, *, wait: float = 2.0) -> AsyncIterator[None]:
    """Hold the lease ``name``, renewed with the run's: first among this process's jobs
    (an asyncio lock, no polling), then against other processes (the database lease).
    Busy if it stays taken."""
    rt, owner = run.rt, run.intent.owner
    async with rt.local_locks.hold(name, wait):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = 0.005
        while not await in_thread(
            leases.acquire, rt.engine, name, owner, rt.settings.lease_seconds, now=rt.now()
        ):
            if loop.time() >= deadline:
                raise Busy(name)
            await asyncio.sleep(delay * (0.5 + rt.random()))
            delay = min(delay * 2, 0.1)
        run.lease.add(name)
        try:
            yield
        finally:
            run.lease.discard(name)
            await in_thread(leases.release, rt.engine, name, owner)
