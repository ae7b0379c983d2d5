"""bridge.template_choice: a key creation's template, asked of its license ref's provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.core.errors import NoTemplate
from bridge.core.settings import Settings
from bridge.template_choice import final_template, resolve_template

CONFIG = BridgeConfig(
    {
        "stripe": {"default_template_id": 9, "price": [{"id": "price_a", "template_id": 2}]},
        "hubspot": {"pipeline": [{"id": "sales", "template_id": 5}], "default_template_id": 6},
    }
)


@dataclass
class Context:
    """A worker context without clients: these resolutions ask no API."""

    settings: Settings = field(default_factory=lambda: Settings(_env_file=None))
    config: BridgeConfig = CONFIG

    def provider_client(self, provider: str) -> Any:
        return None


async def test_the_planners_template_is_taken_as_it_is() -> None:
    params = {"template_id": 7, "template_source": "price"}
    assert await resolve_template(Context(), "stripe:pi:pi_1", params) == (7, "price")


async def test_stripe_price_mapping_then_default() -> None:
    ctx = Context()
    assert await resolve_template(ctx, "stripe:pi:pi_1", {"price_id": "price_a"}) == (2, "mapping")
    assert (
        await resolve_template(ctx, "stripe:pi:pi_1", {"price_id": "price_b"}, default=False)
        is None
    )
    assert await resolve_template(ctx, "stripe:pi:pi_1", {"price_id": "price_b"}) == (9, "default")


async def test_hubspot_pipeline_then_default() -> None:
    ctx = Context()
    assert await resolve_template(ctx, "hubspot:deal:1", {"pipeline": "sales"}) == (5, "pipeline")
    assert await resolve_template(ctx, "hubspot:deal:1", {"pipeline": "other"}) == (6, "default")


async def test_a_ref_of_no_provider_has_no_template() -> None:
    assert await resolve_template(Context(), "nobody:1", {}, default=False) is None
    with pytest.raises(NoTemplate):
        await resolve_template(Context(), "nobody:1", {})


async def test_no_default_is_no_template() -> None:
    ctx = Context(config=BridgeConfig())
    with pytest.raises(NoTemplate, match="default_template_id"):
        await resolve_template(ctx, "stripe:pi:pi_1", {"price_id": "price_b"})


SUB = "stripe:sub:sub_1"


def start(hints_from: list[str], **params: Any) -> dict[str, Any]:
    """A subscription's merged create_key params, without STRIPE_API_KEY."""
    return {"start": "subscription", "hints_from": hints_from, **params}


class TestFinalTemplate:
    """Without STRIPE_API_KEY a subscription's template is final once no start event still
    to come may carry a richer source than the hint in hand, whatever its rank."""

    async def test_a_mapped_price_still_waits_for_the_session(self) -> None:
        params = start(["price", "purchase"], price_id="price_a")
        assert await final_template(Context(), SUB, params) is None

    async def test_every_source_carried_decides_at_once(self) -> None:
        carried = ["price", "purchase", "session"]
        assert await final_template(Context(), SUB, start(carried, price_id="price_a")) == (
            2,
            "mapping",
        )
        # Nothing names one, and nothing still can: the default, without waiting.
        assert await final_template(Context(), SUB, start(carried)) == (9, "default")

    async def test_the_sessions_metadata_is_the_richest(self) -> None:
        params = start(["session"], template_id=4, template_rank=5, template_source="session")
        assert await final_template(Context(), SUB, params) == (4, "session")

    async def test_a_basil_invoice_leaves_the_prices_metadata_to_come(self) -> None:
        # The session and a basil invoice (its line names the price by id only): the
        # subscription's event may still bring price metadata, above the mapping...
        mapped = start(["purchase", "session"], price_id="price_a")
        assert await final_template(Context(), SUB, mapped) is None
        # ...but not above the subscription's own metadata.
        named = start(
            ["purchase", "session"], template_id=6, template_rank=4, template_source="purchase"
        )
        assert await final_template(Context(), SUB, named) == (6, "purchase")

    async def test_a_stored_start_without_hints_from_waits(self) -> None:
        # An intent stored before hints_from existed: nothing says what it carried.
        params = {"start": "subscription", "template_id": 6, "template_rank": 4}
        assert await final_template(Context(), SUB, params) is None

    async def test_starts_of_one_event_are_decided_at_once(self) -> None:
        payment = {"start": "payment", "price_id": "price_b"}
        assert await final_template(Context(), "stripe:pi:pi_1", payment) == (9, "default")
        deal = {"pipeline": "sales"}
        assert await final_template(Context(), "hubspot:deal:1", deal) == (5, "pipeline")
