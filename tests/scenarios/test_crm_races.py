"""Two customer changes of one CRM deal's key, in every order and at once: the newest
wins, and each is applied at most once (the jobs.effects docstring's SET_CUSTOMER)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine

from bridge.core.settings import Settings
from tests.fixtures.runs import (
    add_intent,
    add_license,
    finish,
    license_row,
    runtime,
    sandbox_key,
    step,
)
from tests.fixtures.servers import SandboxServer

REF = "crm:zoho:deal:RACE"
OLDER, NEWER = 1_780_000_000_000, 1_780_000_060_000  # unix ms: a deal's intents' unit


def change(engine: Engine, at: int, email: str) -> str:
    params = {"customer": {"email": email, "name": None, "company": None}}
    return add_intent(engine, f"{REF}:customer:{at}", "set_customer", REF, params, at)


def linked_email(sandbox: SandboxServer, engine: Engine) -> str:
    customer_id = license_row(engine, REF).customer_id
    customers = {c["id"]: c["email"] for c in sandbox.state()["customers"]}
    return str(customers[customer_id])


@pytest.mark.parametrize("order", ["older first", "newer first", "at once"])
async def test_the_newest_change_wins_in_every_order(
    bridge_settings: Settings, engine: Engine, sandbox_server: SandboxServer, order: str
) -> None:
    key, _ = sandbox_key(sandbox_server)
    add_license(engine, REF, key)
    older = change(engine, OLDER, "old@example.com")
    newer = change(engine, NEWER, "new@example.com")
    async with runtime(bridge_settings, engine) as one, runtime(bridge_settings, engine) as two:
        if order == "older first":
            assert await step(one, older) == "done"
            assert await step(two, newer) == "done"
        elif order == "newer first":
            assert await step(one, newer) == "done"
            assert await step(two, older) == "done"
        else:
            statuses = await asyncio.gather(finish(one, older), finish(two, newer))
            assert [s for d in statuses for s in d.values()] == ["done", "done"]
    assert linked_email(sandbox_server, engine) == "new@example.com"
    assert license_row(engine, REF).customer_decided_at == NEWER
    changes = sandbox_server.state()["counts"]["customer_changes"]
    # Older first: both applied, one after the other; newer first: the older superseded.
    expected = {"older first": {2}, "newer first": {1}, "at once": {1, 2}}[order]
    assert changes in expected  # never more than one per change
