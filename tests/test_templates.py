"""jobs.templates: a key creation's template, asked of the provider its license ref names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.core.errors import NoTemplate
from bridge.core.settings import BridgeConfig, Settings
from jobs.templates import resolve_template

CONFIG = BridgeConfig.model_validate(
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
