"""``reconcile``: each kind of drift, made on purpose in the sandbox behind the bridge's
back, is found; ``--repair`` fixes it through intents, once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import httpx
from click.testing import CliRunner
from sqlmodel import Session, col, update

from bridge.core.intents import Effect, Status
from bridge.cryptolens import CryptolensClient
from bridge.cryptolens.models import LicenseKey
from bridge.ops import reconcile as rc
from bridge.ops.reconcile_compare import Report, compare
from bridge.ops.reconcile_expect import Expected
from bridge.store.tables import License
from tests.fixtures import stripe_builders as sb
from tests.fixtures.admin import drain_once
from tests.fixtures.pipeline import Pipeline, now, shifted
from tests.fixtures.runs import add_intent, finish, runtime

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


async def run(bridge: Pipeline, *, repair: bool = False, since: datetime | None = None) -> Report:
    async with httpx.AsyncClient() as http:
        client = CryptolensClient(
            http, token=bridge.settings.token(), base_url=bridge.settings.cryptolens_api_url
        )
        return await rc.reconcile(bridge.engine, client, repair=repair, since=since)


def calls(bridge: Pipeline) -> dict[str, int]:
    """Calls the sandbox received so far, per method."""
    return {m: c["received"] for m, c in bridge.sandbox.state()["calls"].items()}


async def reads(bridge: Pipeline, **options: Any) -> tuple[Report, dict[str, int]]:
    """A reconcile run, and the reads of keys it made: GetKeys pages and GetKey calls."""
    before = calls(bridge)
    report = await run(bridge, **options)
    after = calls(bridge)
    made = {m: after.get(m, 0) - before.get(m, 0) for m in ("product/GetKeys", "key/GetKey")}
    return report, made


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

    report, made = await reads(bridge)
    # Issue 15, 6: the three keys come in one GetKeys page, not three GetKey calls.
    assert made == {"product/GetKeys": 1, "key/GetKey": 0}
    found = {(d.ref, d.kind) for d in report.drift}
    assert found == {
        (f"stripe:pi:{BROKEN}", "no_key"),
        (f"stripe:pi:{PAID}", "customer"),
        (f"stripe:pi:{PAID}", "manual_block"),
        (f"stripe:sub:{sb.SUB}", "expiry"),
        (f"stripe:pi:{REFUNDED}", "not_blocked"),
    }
    assert report.stored == []  # no --repair: nothing changed
    assert report.errors == {}

    manual = next(d for d in report.drift if d.kind == "manual_block")
    assert manual.repair is None  # the vendor's block: reported, never lifted

    repaired = await run(bridge, repair=True)
    assert len(repaired.stored) == 4
    again = await run(bridge, repair=True)  # before the worker ran: the same ids, stored once
    assert again.stored == []
    before = bridge.counts()
    await bridge.drain()
    left = {i.id: i.status for i in bridge.intents().values() if i.status != "done"}
    # The failed creation stays failed (history); its repair made the key.
    assert left == {f"stripe:pi:{BROKEN}:create_key": "failed"}
    assert set(repaired.stored) <= set(bridge.intents())

    assert [(d.ref, d.kind) for d in (await run(bridge)).drift] == [
        (f"stripe:pi:{PAID}", "manual_block")
    ]
    assert (await run(bridge, repair=True)).stored == []
    after = bridge.counts()
    assert after["keys_created"] == before["keys_created"] + 1  # the broken purchase's
    state = {k["key"]: k for k in bridge.sandbox.state()["keys"]}
    assert state[license_of(bridge, f"stripe:pi:{REFUNDED}").key]["block"] is True
    assert state[license_of(bridge, f"stripe:pi:{PAID}").key]["block"] is True  # by hand


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
    assert "4 repair intent(s) stored" in result.output
    await bridge.drain()
    result = await asyncio.to_thread(CliRunner().invoke, rc.command, ["--repair"], env=env)
    assert result.exit_code == 0, result.output
    assert "1 drift, 0 repair intent(s) stored" in result.output
    # Only the vendor's manual block is left: reported, and no alert for it.
    result = await asyncio.to_thread(CliRunner().invoke, rc.command, ["--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    assert [d["kind"] for d in json.loads(result.output)["drift"]] == ["manual_block"]
    statuses = {i.status for i in bridge.intents().values()}
    assert statuses == {Status.DONE.value, Status.FAILED.value}


class TestBlocks:
    def test_a_block_the_bridge_may_have_made_is_lifted_and_a_manual_one_is_not(self) -> None:
        """Issue 15, 3: ``--repair`` unblocked keys the vendor blocked by hand. A block is
        the bridge's only if its last block call that may have landed was a BlockKey."""
        found = LicenseKey.model_validate(
            {"productId": 1001, "key": "K", "expires": "2030-01-01T00:00:00", "block": True}
        )
        want = Expected(
            ref="stripe:pi:pi_x",
            key="K",
            product_id=1001,
            customer_id=None,
            buyer={},
            expires_at=None,
            create=None,
            create_params={},
            under_way=False,
            decided_at=1700000000,
        )
        [manual] = compare(want, found)
        assert (manual.kind, manual.repair) == ("manual_block", None)
        [ours] = compare(dataclasses.replace(want, blocked_by_us=True), found)
        assert ours.kind == "blocked" and ours.repair is not None
        assert (ours.repair.effect, ours.repair.occurred_at) == (Effect.UNBLOCK, 1700000000)

    async def test_a_key_unblocked_then_blocked_by_hand_is_the_vendors(
        self, bridge: Pipeline
    ) -> None:
        """The bridge blocked (unpaid) and unblocked (active again) the key; the vendor
        then blocked it by hand: the bridge's last call was an UnblockKey."""
        delta = now() - sb.T0
        await bridge.post(shifted(sb.subscription(basil=True), delta))
        await bridge.post(shifted(sb.invoice(basil=True, with_payments=True), delta))
        for status, previous, at in (("unpaid", "active", 60), ("active", "unpaid", 120)):
            event = sb.status_change(
                status=status, previous=previous, created=now() + at, event_id=f"evt_{status}"
            )
            await bridge.post(event)
            await bridge.drain()
        bridge.assert_all_done()
        assert (bridge.counts()["blocks"], bridge.counts()["unblocks"]) == (1, 1)
        sub = license_of(bridge, f"stripe:sub:{sb.SUB}")
        bridge.sandbox.call("key/BlockKey", ProductId=sub.product_id, Key=sub.key)
        report = await run(bridge, repair=True)
        assert [(d.kind, d.repair) for d in report.drift] == [("manual_block", None)]
        assert report.stored == []
        await bridge.drain()
        assert bridge.only_key()["block"] is True

    async def test_a_won_dispute_is_unblocked_and_not_blocked_again(self, bridge: Pipeline) -> None:
        """Issue 15, 3: ``charge.dispute.closed`` was not handled, so reconcile saw the
        dispute's block as missing once the vendor, having won, unblocked the key by hand,
        and ``--repair`` blocked it again."""
        await bridge.post(purchase(PAID))
        await bridge.post(sb.dispute(payment_intent=PAID))
        await bridge.drain()
        assert bridge.only_key()["block"] is True
        await bridge.post(sb.dispute_closed("won", payment_intent=PAID, created=now()))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["block"] is False
        report = await run(bridge, repair=True)
        assert (report.drift, report.stored) == ([], [])

    async def test_a_lost_dispute_stays_blocked(self, bridge: Pipeline) -> None:
        await bridge.post(purchase(PAID))
        await bridge.post(sb.dispute(payment_intent=PAID))
        await bridge.post(sb.dispute_closed("lost", payment_intent=PAID, created=now()))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["block"] is True
        paid = license_of(bridge, f"stripe:pi:{PAID}")
        bridge.sandbox.call("key/UnblockKey", ProductId=paid.product_id, Key=paid.key)
        report = await run(bridge, repair=True)
        assert [d.kind for d in report.drift] == ["not_blocked"]
        await bridge.drain()
        assert bridge.only_key()["block"] is True


class TestOrder:
    async def test_a_customer_repair_does_not_undo_a_newer_contact_change(
        self, bridge: Pipeline
    ) -> None:
        """Issue 15, 3 (reproduced): the key was relinked by hand; ``--repair`` stored a
        relink to the bridge's customer; a newer CRM contact change ran before it. The
        repair, dated like the decision it restores, is superseded by the newer one."""
        await bridge.post(purchase(PAID))
        await bridge.drain()
        paid = license_of(bridge, f"stripe:pi:{PAID}")
        call = bridge.sandbox.call
        stranger = call("customer/AddCustomer", Name="Someone", Email="someone@example.org")
        call(
            "key/ChangeCustomer",
            ProductId=paid.product_id,
            Key=paid.key,
            CustomerId=stranger["customerId"],
        )
        [repair] = [d.repair for d in (await run(bridge, repair=True)).drift if d.repair]
        assert repair.effect is Effect.LINK_CUSTOMER
        change = add_intent(
            bridge.engine,
            f"stripe:pi:{PAID}:customer:newer",
            "set_customer",
            f"stripe:pi:{PAID}",
            {"customer": {"email": "new.contact@example.org", "name": "New Contact"}},
            now() + 60,
        )
        async with runtime(bridge.settings, bridge.engine) as rt:
            assert await finish(rt, change) == {change: "done"}
            assert await finish(rt, repair.id) == {repair.id: "done"}
        assert "superseded_by" in (bridge.intents()[repair.id].result or "")
        newer = license_of(bridge, f"stripe:pi:{PAID}").customer_id
        assert newer not in (None, stranger["customerId"])
        body = call("key/GetKey", ProductId=paid.product_id, Key=paid.key)
        assert body["licenseKey"]["customer"]["id"] == newer
        assert (await run(bridge)).drift == []


class DenyGetKeys(httpx.AsyncBaseTransport):
    """Cryptolens as a token without the GetKeys permission sees it; the rest is the
    sandbox's."""

    def __init__(self) -> None:
        self.sandbox = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.lower().endswith("/product/getkeys"):
            return httpx.Response(200, json={"result": 1, "message": "Access denied."})
        return await self.sandbox.handle_async_request(request)

    async def aclose(self) -> None:
        await self.sandbox.aclose()


class TestReads:
    """Issue 15, 6: keys are read a GetKeys page (99 keys) at a time where that takes
    fewer calls than one GetKey per license, and drift is found either way."""

    async def test_a_key_no_page_returns_is_gone_and_read_once_to_be_sure(
        self, bridge: Pipeline
    ) -> None:
        await drifted(bridge)
        # The key the store holds for the paid purchase is not in Cryptolens (deleted).
        with Session(bridge.engine) as s:
            s.exec(
                update(License)
                .where(col(License.ref) == f"stripe:pi:{PAID}")
                .values(key="GONEX-GONEX-GONEX-GONEX")
            )
            s.commit()
        report, made = await reads(bridge)
        # The page did not return it; one GetKey says NotFound (not moved to a page read).
        assert made == {"product/GetKeys": 1, "key/GetKey": 1}
        assert {(d.ref, d.kind) for d in report.drift} == {
            (f"stripe:pi:{BROKEN}", "no_key"),
            (f"stripe:pi:{PAID}", "no_key"),
            (f"stripe:sub:{sb.SUB}", "expiry"),
            (f"stripe:pi:{REFUNDED}", "not_blocked"),
        }
        gone = next(d for d in report.drift if d.ref == f"stripe:pi:{PAID}")
        assert gone.key == "GONEX-GONEX-GONEX-GONEX" and "gone" in gone.detail
        assert report.checked == 4 and report.errors == {}

    async def test_a_few_licenses_since_a_date_are_read_key_by_key(self, bridge: Pipeline) -> None:
        """``--since`` left one license of three: one GetKey beats a page."""
        await bridge.post(purchase(PAID))
        await bridge.post(purchase(REFUNDED))
        await bridge.drain()
        mark = datetime.now(UTC)
        await bridge.post(purchase(BROKEN))
        await bridge.drain()
        bridge.assert_all_done()
        broken = license_of(bridge, f"stripe:pi:{BROKEN}")
        bridge.sandbox.call("key/BlockKey", ProductId=broken.product_id, Key=broken.key)
        report, made = await reads(bridge, since=mark)
        assert made == {"product/GetKeys": 0, "key/GetKey": 1}
        assert [(d.ref, d.kind) for d in report.drift] == [(f"stripe:pi:{BROKEN}", "manual_block")]
        report, made = await reads(bridge)  # all three: one page
        assert made == {"product/GetKeys": 1, "key/GetKey": 0}
        assert [(d.ref, d.kind) for d in report.drift] == [(f"stripe:pi:{BROKEN}", "manual_block")]

    async def test_a_product_full_of_the_vendors_keys_is_read_key_by_key_after_one_page(
        self, bridge: Pipeline
    ) -> None:
        """Cryptolens holds 300 keys the bridge never made before its two: the first page
        shows four pages, three more to read for two licenses, so two GetKey instead."""
        for _ in range(300):
            await asyncio.to_thread(
                bridge.sandbox.call, "key/CreateKeyFromTemplate", LicenseTemplateId=1
            )
        await bridge.post(purchase(PAID))
        await bridge.post(purchase(REFUNDED))
        await bridge.post(sb.charge_refunded(payment_intent=REFUNDED))
        await bridge.drain()
        bridge.assert_all_done()
        refunded = license_of(bridge, f"stripe:pi:{REFUNDED}")
        bridge.sandbox.call("key/UnblockKey", ProductId=refunded.product_id, Key=refunded.key)
        report, made = await reads(bridge)
        assert made == {"product/GetKeys": 1, "key/GetKey": 2}
        assert [(d.ref, d.kind) for d in report.drift] == [(f"stripe:pi:{REFUNDED}", "not_blocked")]

    async def test_a_token_without_getkeys_reads_key_by_key(self, bridge: Pipeline) -> None:
        """A token made for the worker has GetKey, not GetKeys: reconcile still works."""
        await drifted(bridge)
        before = calls(bridge)
        async with httpx.AsyncClient(transport=DenyGetKeys()) as http:
            client = CryptolensClient(
                http, token=bridge.settings.token(), base_url=bridge.settings.cryptolens_api_url
            )
            report = await rc.reconcile(bridge.engine, client)
        after = calls(bridge)
        assert after.get("key/GetKey", 0) - before.get("key/GetKey", 0) == 3
        assert {(d.ref, d.kind) for d in report.drift} == {
            (f"stripe:pi:{BROKEN}", "no_key"),
            (f"stripe:pi:{PAID}", "customer"),
            (f"stripe:pi:{PAID}", "manual_block"),
            (f"stripe:sub:{sb.SUB}", "expiry"),
            (f"stripe:pi:{REFUNDED}", "not_blocked"),
        }
        assert report.errors == {}

    async def test_an_unread_page_leaves_its_licenses_unread_not_drifted(
        self, bridge: Pipeline
    ) -> None:
        await drifted(bridge)
        bridge.sandbox.set_faults(script=[{"method": "product/GetKeys", "fault": "fail_before"}])
        report, made = await reads(bridge)
        assert made == {"product/GetKeys": 1, "key/GetKey": 0}
        # Only the license without a key is known without Cryptolens.
        assert [(d.ref, d.kind) for d in report.drift] == [(f"stripe:pi:{BROKEN}", "no_key")]
        assert set(report.errors) == {
            f"stripe:sub:{sb.SUB}",
            f"stripe:pi:{PAID}",
            f"stripe:pi:{REFUNDED}",
        }
        assert all("Transient" in e for e in report.errors.values())
        assert report.checked == 4
