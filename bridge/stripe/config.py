"""The ``[stripe]`` table of the TOML file: what each Stripe price becomes (templates,
grace days) and what an unpaid subscription does to its key."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

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

    def mapping_for(self, price_id: str | None) -> PriceMapping | None:
        if price_id is None:
            return None
        return next((p for p in self.price if p.id == price_id), None)

    def grace_for(self, price_id: str | None) -> int:
        mapping = self.mapping_for(price_id)
        if mapping is not None and mapping.grace_days is not None:
            return mapping.grace_days
        return self.grace_days
