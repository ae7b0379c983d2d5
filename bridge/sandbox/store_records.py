"""What the sandbox's store holds, as the rows it reads back (and a new key's makings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# A data object's ReferencerType.
USER, PRODUCT, KEY = 0, 1, 2

Paged = Literal["events", "web_api_log"]
# The integers SQLite can store; binding another one raises OverflowError.
SQLITE_INTEGERS = range(-(2**63), 2**63)
# gt/gte/lt/lte as in the Time filter; "eq" for a bare timestamp.
TimeFilter = dict[str, int]


@dataclass(frozen=True)
class KeyRecord:
    global_id: int
    product_id: int
    id: int
    key: str
    created: int
    expires: int
    period: int
    features: int  # bit i-1 holds F{i}
    notes: str
    block: int
    customer_id: int | None
    max_no_of_machines: int
    trial_activation: int
    template_id: int | None
    usage: int
    subscription_item: str | None

    def feature(self, number: int) -> bool:
        return bool(self.features >> (number - 1) & 1)


@dataclass(frozen=True)
class NewKey:
    """What a new key is made of: a template's parameters, or CreateKey's."""

    product_id: int
    period: int
    features: tuple[bool, ...]  # F1..F8
    notes: str = ""
    block: bool = False
    customer_id: int | None = None
    max_no_of_machines: int = 0
    trial_activation: bool = False
    template_id: int | None = None
    subscription: bool = False


@dataclass(frozen=True)
class CustomerRecord:
    id: int
    name: str
    email: str
    company_name: str
    created: int
    secret: str
    notes: str


@dataclass(frozen=True)
class DataObjectRecord:
    id: int
    referencer_type: int  # USER, PRODUCT or KEY
    referencer_id: int  # 0, a product id or a key's global id
    name: str | None
    string_value: str | None
    int_value: int


@dataclass(frozen=True)
class Page:
    """A cursor query on ``events`` or ``web_api_log``: equality filters plus ranges."""

    equals: dict[str, Any]
    limit: int
    starting_after: int = 0
    ending_before: int = 0
    time: TimeFilter | None = None
    contains: tuple[str, str] | None = None  # (column, text), case-insensitive
    states: Sequence[int] | None = None
    cursor: Literal["id", "time"] = "id"  # what StartingAfter/EndingBefore compare with
