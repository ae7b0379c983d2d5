"""jobs.runner: backoff bounds, and what each kind of failure makes of an intent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import pytest
from arq import Retry
from sqlalchemy import Engine

from bridge.core.errors import NoTemplate
from bridge.core.settings import Settings
from bridge.crm.errors import CrmRateLimited, PermanentCrmError, UnknownCrmError
from bridge.store import claims, intents
from bridge.store.tables import utcnow
from jobs.runner import _failed_run, backoff
from jobs.runtime import Runtime
from tests.fixtures.runs import add_intent, add_license, intent

REF = "hubspot:deal:1"


@pytest.mark.parametrize("attempt", [1, 2, 3, 8, 30])
def test_backoff_is_between_half_and_the_whole_capped_ceiling(attempt: int) -> None:
    ceiling = min(10.0, 0.5 * 2 ** (attempt - 1))
    for _ in range(50):
        assert ceiling / 2 <= backoff(attempt, base=0.5, cap=10.0) <= ceiling


@dataclass
class FakeRuntime:
    """What ``_failed_run`` uses of a runtime: settings, the engine and the clock."""

    engine: Engine
    settings: Settings = field(
        default_factory=lambda: Settings(
            _env_file=None, BRIDGE_MAX_ATTEMPTS=3, BRIDGE_RETRY_BASE_SECONDS=1.0
        )
    )
    clock: Callable[[], datetime] = utcnow

    def now(self) -> datetime:
        return self.clock()


def claimed(engine: Engine) -> claims.Claimed:
    add_license(engine, REF, "KEY-1")
    add_intent(engine, "i1", "write_back", REF, {"deal_id": "1"}, 100)
    found = claims.claim(engine, "i1", "w1", 30)
    assert isinstance(found, claims.Claimed)
    return found


async def test_a_permanent_error_fails_at_once(engine: Engine) -> None:
    rt = cast(Runtime, FakeRuntime(engine))
    status = await _failed_run(
        rt, claimed(engine), intents.Outcome(), PermanentCrmError("HTTP 403")
    )
    assert status == "failed"
    row = intent(engine, "i1")
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "HTTP 403")


async def test_no_template_fails_at_once(engine: Engine) -> None:
    rt = cast(Runtime, FakeRuntime(engine))
    assert await _failed_run(rt, claimed(engine), intents.Outcome(), NoTemplate("none")) == "failed"


async def test_a_retryable_error_backs_off_and_a_429_waits_its_retry_after(engine: Engine) -> None:
    rt = cast(Runtime, FakeRuntime(engine))
    with pytest.raises(Retry) as retry:
        await _failed_run(rt, claimed(engine), intents.Outcome(), CrmRateLimited("HTTP 429", 120))
    assert retry.value.defer_score == 120_000  # the service's Retry-After, over the backoff
    row = intent(engine, "i1")
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 429")


async def test_an_unknown_outcome_is_retried_until_the_attempts_run_out(engine: Engine) -> None:
    rt = cast(Runtime, FakeRuntime(engine))
    c = claimed(engine)
    for attempt in (1, 2):
        with pytest.raises(Retry):
            await _failed_run(rt, c, intents.Outcome(), UnknownCrmError("no reply"))
        assert intent(engine, "i1").attempts == attempt
        again = claims.claim(engine, "i1", "w1", 30, at=utcnow().replace(year=2100))
        assert isinstance(again, claims.Claimed)
        c = again
    assert await _failed_run(rt, c, intents.Outcome(), UnknownCrmError("no reply")) == "failed"
    assert intent(engine, "i1").last_error == "gave up after 3 attempts: no reply"
