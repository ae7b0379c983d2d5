"""The ``[stripe]`` table of the TOML file: what each Stripe price becomes (templates,
grace days), what an unpaid subscription does to its key, and the buyer's side: the
license lookup, the write-back and the catch-up."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.core.settings import Section


class PriceMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^(price|plan)_\w+$")
    template_id: int = Field(gt=0)
    grace_days: int | None = Field(default=None, ge=0, le=365)


class StripeConfig(Section):
    TABLE: ClassVar[str] = "stripe"

    default_template_id: int | None = Field(default=None, gt=0)
    grace_days: int = Field(default=3, ge=0, le=365)
    # "unpaid" blocks a key when the subscription is unpaid; "past_due" blocks it already
    # on the first failed renewal attempt.
    unpaid_policy: Literal["unpaid", "past_due"] = "unpaid"
    price: tuple[PriceMapping, ...] = ()
    # The buyer's key: GET /checkout/{session_id}/license (bridge.stripe.lookup) answers
    # for sessions up to license_lookup_days old; off, the route does not exist (404).
    license_lookup: bool = False
    license_lookup_days: int = Field(default=7, ge=1, le=30)
    # The key written onto the subscription or payment intent's metadata (needs
    # STRIPE_API_KEY; bridge.stripe.writeback).
    write_back: bool = False
    # The worker lists Stripe's events of the last catch_up_hours every this many minutes
    # and records those the bridge missed (bridge.stripe.catchup); 0: never.
    catch_up_interval_minutes: int = Field(default=0, ge=0, le=1440)
    catch_up_hours: int = Field(default=24, ge=1, le=720)

    @model_validator(mode="after")
    def _window_covers_interval(self) -> StripeConfig:
        # A run must look back past the previous run, or events between them are missed.
        if self.catch_up_interval_minutes > self.catch_up_hours * 60:
            raise ValueError(
                "catch_up_hours must cover catch_up_interval_minutes (each run looks back "
                "over the window, and the window must reach the previous run)"
            )
        return self

    def mapping_for(self, price_id: str | None) -> PriceMapping | None:
        if price_id is None:
            return None
        return next((p for p in self.price if p.id == price_id), None)

    def grace_for(self, price_id: str | None) -> int:
        mapping = self.mapping_for(price_id)
        if mapping is not None and mapping.grace_days is not None:
            return mapping.grace_days
        return self.grace_days
