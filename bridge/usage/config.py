"""The ``[usage]`` part of the TOML: which products bill usage, where, and the collector.

```toml
[usage.collector]              # runs inside the worker every interval_seconds;
products = [1001]              # `cryptolens-bridge collect` runs it once by hand
interval_seconds = 60
data_object = "usage"          # the counter's name on each key
[[usage.product]]
id = 1001
sink = "stripe_meter"          # or "cryptolens": one billing system per product
window_seconds = 60
meter_event_name = "api_calls"
```
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.core.settings import Section

Sink = Literal["cryptolens", "stripe_meter"]

# A meter's name as records give it: also a part of aggregate and intent ids, so it may
# not hold the ids' separator. Stripe's event names may be longer (100), not our meters.
METER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")


class CollectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    products: tuple[int, ...] = ()
    interval_seconds: int = Field(default=60, ge=1, le=86400)
    # Cryptolens' DataObject model: "the name ... at most 10 characters".
    data_object: str = Field(default="usage", min_length=1, max_length=10)


class UsageProduct(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(gt=0)
    sink: Sink
    window_seconds: int = Field(default=60, ge=1, le=86400)
    # Stripe's meter event name for this product's usage; ``meter_events`` names one per
    # meter (a record's optional ``meter``), this one is for the rest.
    meter_event_name: str | None = Field(default=None, min_length=1, max_length=100)
    meter_events: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> UsageProduct:
        for meter, name in self.meter_events.items():
            if not METER.fullmatch(meter) or not 0 < len(name) <= 100:
                raise ValueError(f"usage.product {self.id}: bad meter_events entry {meter!r}")
        if self.sink == "stripe_meter" and not (self.meter_event_name or self.meter_events):
            raise ValueError(
                f"usage.product {self.id}: sink stripe_meter needs meter_event_name "
                "(or meter_events)"
            )
        return self

    def event_name(self, meter: str) -> str | None:
        """The Stripe meter event name for ``meter`` ("" = none given), if any."""
        return self.meter_events.get(meter) or self.meter_event_name


class UsageConfig(Section):
    TABLE: ClassVar[str] = "usage"

    collector: CollectorConfig | None = None
    product: tuple[UsageProduct, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> UsageConfig:
        ids = [p.id for p in self.product]
        if len(ids) != len(set(ids)):
            raise ValueError("usage.product: a product id is listed twice")
        if self.collector is not None:
            missing = sorted(set(self.collector.products) - set(ids))
            if missing:
                raise ValueError(
                    f"usage.collector.products {missing} have no [[usage.product]] "
                    "(where would their usage be billed?)"
                )
        return self

    def product_for(self, product_id: int) -> UsageProduct | None:
        return next((p for p in self.product if p.id == product_id), None)
