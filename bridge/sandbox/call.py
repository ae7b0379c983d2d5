"""One API call as a handler sees it, with the checks every key method shares.

The order of the checks follows the service: the token and its method lock first (done
by the app), then the input, then the product lock and the product, then the key and the
key lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.sandbox.config import Product, SandboxConfig, Token
from bridge.sandbox.params import (
    ACCESS_DENIED,
    INCORRECT_INPUT,
    NO_KEY,
    NO_PRODUCT,
    Params,
    Refusal,
)
from bridge.sandbox.store import Store
from bridge.sandbox.store_records import KeyRecord


@dataclass(frozen=True)
class Call:
    params: Params
    token: Token
    store: Store
    config: SandboxConfig
    ip: str
    now: int

    def product(self, product_id: int | None = None) -> Product:
        """The product named by ``ProductId`` (required), within the token's product lock."""
        if product_id is None:
            product_id = self.params.required_int("ProductId")
        if self.token.product_id and product_id != self.token.product_id:
            raise Refusal(ACCESS_DENIED)
        product = self.config.product(product_id)
        if product is None:
            raise Refusal(NO_PRODUCT)
        return product

    def key(self) -> KeyRecord:
        """The key named by ``ProductId`` and ``Key`` (both required), within the locks."""
        product_id = self.params.required_int("ProductId")
        key = self.params.text("Key")
        if key is None:
            raise Refusal(INCORRECT_INPUT)
        product = self.product(product_id)
        if self.token.key and key != self.token.key:
            raise Refusal(ACCESS_DENIED)
        record = self.store.find_key(product.id, key.strip())
        if record is None:
            raise Refusal(NO_KEY)
        return record


Handler = Callable[[Call], dict[str, Any]]


def ok(message: str | None = "", **fields: Any) -> dict[str, Any]:
    """A successful answer: the fields, then ``result`` and ``message`` as the service
    puts them last."""
    return {**fields, "result": 0, "message": message}


def iso(unix: int) -> str:
    """The service's datetime format: naive ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S")
