"""Launch bursts: key creations of one template in flight together, still exactly once.

Many one-off purchases of one product arrive at once and one worker creates their keys
concurrently. Lost replies (one, several, all), a creation that was never applied, a key
someone else makes inside the window, and two templates of one product interleaved: one
key per purchase, every key the bridge made held by exactly one license, nothing else
claimed. Both databases; the sandbox over HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlmodel import Session, select

from bridge.core.intents import TAG_PREFIX
from bridge.store.tables import License
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import Pipeline
from tests.scenarios.test_key_recovery import someone_else_creates_a_key

N = 8


def purchase(n: int, *, template: int | None = None) -> dict[str, Any]:
    metadata = {"cryptolens_template_id": str(template)} if template else None
    event = sb.checkout_session(
        payment_intent=f"pi_burst_{n:03d}", amount_total=1000 + n, metadata=metadata
    )
    event["id"] = f"evt_burst_{n:03d}"
    sb.obj(event)["id"] = f"cs_burst_{n:03d}"
    sb.obj(event)["customer_details"]["email"] = f"burst{n}@example.com"
    return event


async def burst(bridge: Pipeline, events: list[dict[str, Any]]) -> None:
    responses = await asyncio.gather(*(bridge.post(e) for e in events))
    assert {r.status_code for r in responses} == {200}
    await bridge.drain(max_jobs=50)


def licenses(bridge: Pipeline) -> dict[str, License]:
    with Session(bridge.engine) as s:
        return {row.ref: row for row in s.exec(select(License)).all()}


def assert_one_key_per_purchase(
    bridge: Pipeline, n: int, *, foreign: frozenset[str] = frozenset()
) -> None:
    bridge.assert_all_done()
    held = {ref: row.key for ref, row in licenses(bridge).items()}
    assert len(held) == n and None not in held.values()
    assert len(set(held.values())) == n  # no key given twice
    state = bridge.sandbox.state()
    made = {k["key"] for k in state["keys"]}
    assert made - foreign == set(held.values())  # no key of the bridge unaccounted for
    for key in state["keys"]:
        if key["key"] in foreign:
            assert TAG_PREFIX not in (key["notes"] or "")
            assert key["customer_id"] is None
        else:
            assert key["notes"].count(TAG_PREFIX) == 1
            assert key["customer_id"] is not None
    assert state["counts"]["events"] == n


def lost_creations(k: int, fault: str = "lost_reply") -> list[dict[str, str]]:
    return [{"method": "key/CreateKey", "fault": fault}] * k


class TestBurst:
    async def test_a_burst_makes_one_key_per_purchase(self, bridge: Pipeline) -> None:
        await burst(bridge, [purchase(n) for n in range(N)])
        assert_one_key_per_purchase(bridge, N)
        assert bridge.counts()["keys_created"] == N

    @pytest.mark.parametrize("lost", [1, 3, N], ids=["one", "several", "all"])
    async def test_lost_replies_inside_a_burst_are_given_their_keys(
        self, bridge: Pipeline, lost: int
    ) -> None:
        bridge.sandbox.set_faults(script=lost_creations(lost))
        await burst(bridge, [purchase(n) for n in range(N)])
        assert_one_key_per_purchase(bridge, N)
        assert bridge.counts()["keys_created"] == N  # each lost key found, none made twice
        assert bridge.sandbox.state()["faults"]["script"] == []

    async def test_a_creation_never_applied_is_made_again(self, bridge: Pipeline) -> None:
        bridge.sandbox.set_faults(script=[*lost_creations(1, "lost_request"), *lost_creations(2)])
        await burst(bridge, [purchase(n) for n in range(N)])
        assert_one_key_per_purchase(bridge, N)
        assert bridge.counts()["keys_created"] == N

    async def test_two_templates_of_one_product_interleaved(self, bridge: Pipeline) -> None:
        bridge.sandbox.set_faults(script=lost_creations(3))
        templates = {n: 1 + n % 2 for n in range(N)}  # 1, 2, 1, 2, ...
        await burst(bridge, [purchase(n, template=templates[n]) for n in range(N)])
        assert_one_key_per_purchase(bridge, N)
        by_key = {k["key"]: k["period"] for k in bridge.sandbox.state()["keys"]}
        for ref, row in licenses(bridge).items():
            n = int(ref.rsplit("_", 1)[1])
            assert row.template_id == templates[n]
            # the key is of the template it claims (Monthly: 30 days, Yearly: 365)
            assert by_key[row.key] == {1: 30, 2: 365}[templates[n]]


class TestSomeoneElseInTheWindow:
    """Another client of the vendor makes keys of the product from the same network: the
    tags in the bridge's keys tell them apart."""

    @pytest.fixture
    def bridge_config(self) -> str:
        return """
[stripe]
default_template_id = 1
"""

    async def test_a_foreign_key_inside_the_window_is_left_alone(self, bridge: Pipeline) -> None:
        await burst(bridge, [purchase(100)])
        # Someone else makes a key of the product: inside the window the lost replies'
        # read-back looks at (it starts READ_BACK_SLACK before the first attempt).
        foreign = someone_else_creates_a_key(bridge.sandbox)
        bridge.sandbox.set_faults(script=lost_creations(2))
        await burst(bridge, [purchase(n) for n in range(N)])
        assert_one_key_per_purchase(bridge, N + 1, foreign=frozenset({foreign}))
        assert bridge.counts()["keys_created"] == N + 2
