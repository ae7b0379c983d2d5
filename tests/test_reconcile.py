"""``reconcile``: each kind of drift, made on purpose in the sandbox behind the bridge's
back, is found; ``--repair`` fixes it through intents, once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from click.testing import CliRunner
from sqlmodel import Session

from bridge.core.intents import Status
from bridge.core.models import License
from bridge.cryptolens import CryptolensClient
from bridge.tools import reconcile as rc
from tests.fixtures import stripe_builders as sb
from tests.fixtures.admin import drain_once
from tests.fixtures.pipeline import Pipeline, now, shifted

PAID, REFUNDED, BROKEN = "pi_22222", "pi_11111", "pi_33333"


def purchase(payment_intent: str) -> dict[str, Any]:
    event = sb.checkout_session(payment_intent=payment_intent)
    event["id"] = f"evt_{payment_intent}"
    return event


def license_of(bridge: Pipeline, ref: str) -> License:
    with Session(bridge.engine) as s:
        found = s.get(License, ref)
    assert found is not None and found.key is not None and found.product_id is not None
    return found


async def run(bridge: Pipeline, *, repair: bool = False) -> rc.Report:
    async with httpx.AsyncClient() as http:
        client = CryptolensClient(
            http, token=bridge.settings.token(), base_url=bridge.settings.cryptolens_api_url
        )
        return await rc.reconcile(bridge.engine, client, repair=repair)


async def drifted(bridge: Pipeline) -> None:
    """A subscription, a paid purchase, a refunded one and a failed one, then Cryptolens
    changed by hand: every kind of drift, each on purpose."""
    delta = now() - sb.T0
    await bridge.post(shifted(sb.subscription(basil=True), delta))
    await bridge.post(shifted(sb.invoice(basil=True, with_payments=True), delta))
    await bridge.post(purchase(PAID))
    await bridge.post(purchase(REFUNDED))
    await bridge.post(sb.charge_refunded(payment_intent=REFUNDED))
    await bridge.drain()
    bridge.assert_all_done()
    bridge.sandbox.set_faults(script=[{"method": "key/CreateKey", "fault": "fail_before"}])
    await bridge.post(purchase(BROKEN))
    await drain_once(bridge)  # its key creation fails for good: paid, no key

    sub = license_of(bridge, f"stripe:sub:{sb.SUB}")
    paid = license_of(bridge, f"stripe:pi:{PAID}")
    refunded = license_of(bridge, f"stripe:pi:{REFUNDED}")
    call = bridge.sandbox.call
    call("key/ExtendLicense", ProductId=sub.product_id, Key=sub.key, NoOfDays=-10)
    stranger = call("customer/AddCustomer", Name="Someone", Email="someone@example.org")
    call(
        "key/ChangeCustomer",
        ProductId=paid.product_id,
        Key=paid.key,
        CustomerId=stranger["customerId"],
    )
    call("key/BlockKey", ProductId=paid.product_id, Key=paid.key)
    call("key/UnblockKey", ProductId=refunded.product_id, Key=refunded.key)


async def test_each_kind_of_drift_is_found_and_repaired_once(bridge: Pipeline) -> None:
    await drifted(bridge)

    report = await run(bridge)
    found = {(d.ref, d.kind) for d in report.drift}
    assert found == {
        (f"stripe:pi:{BROKEN}", "no_key"),
        (f"stripe:pi:{PAID}", "customer"),
        (f"stripe:pi:{PAID}", "blocked"),
        (f"stripe:sub:{sb.SUB}", "expiry"),
        (f"stripe:pi:{REFUNDED}", "not_blocked"),
    }
    assert report.stored == []  # no --repair: nothing changed
    assert report.errors == {}

    repaired = await run(bridge, repair=True)
    assert len(repaired.stored) == 5
    again = await run(bridge, repair=True)  # before the worker ran: the same ids, stored once
    assert again.stored == []
    before = bridge.counts()
    await bridge.drain()
    left = {i.id: i.status for i in bridge.intents().values() if i.status != "done"}
    # The failed creation stays failed (history); its repair made the key.
    assert left == {f"stripe:pi:{BROKEN}:create_key": "failed"}
    assert set(repaired.stored) <= set(bridge.intents())

    assert (await run(bridge)).drift == []
    assert (await run(bridge, repair=True)).stored == []
    after = bridge.counts()
    assert after["keys_created"] == before["keys_created"] + 1  # the broken purchase's
    state = {k["key"]: k for k in bridge.sandbox.state()["keys"]}
    assert state[license_of(bridge, f"stripe:pi:{REFUNDED}").key]["block"] is True
    assert state[license_of(bridge, f"stripe:pi:{PAID}").key]["block"] is False


async def test_the_command_reports_json_and_exits_1_on_drift(bridge: Pipeline) -> None:
    # The command runs its own event loop: in a thread, beside the test's.
    await drifted(bridge)
    env = {
        "BRIDGE_DATABASE_URL": bridge.settings.database_url,
        "BRIDGE_REDIS_URL": bridge.settings.redis_url,
        "CRYPTOLENS_API_URL": bridge.settings.cryptolens_api_url,
        "CRYPTOLENS_TOKEN": bridge.settings.token(),
    }
    result = await asyncio.to_thread(CliRunner().invoke, rc.command, ["--json"], env=env)
    assert result.exit_code == 1, (result.output, result.exception)
    data = json.loads(result.output)
    assert len(data["drift"]) == 5 and data["stored"] == []
    assert bridge.settings.token() not in result.output

    result = await asyncio.to_thread(CliRunner().invoke, rc.command, ["--repair"], env=env)
    assert result.exit_code == 0, result.output
    assert "5 repair intent(s) stored" in result.output
    await bridge.drain()
    result = await asyncio.to_thread(CliRunner().invoke, rc.command, ["--repair"], env=env)
    assert result.exit_code == 0, result.output
    assert "0 drift, 0 repair intent(s) stored" in result.output
    statuses = {i.status for i in bridge.intents().values()}
    assert statuses == {Status.DONE.value, Status.FAILED.value}
