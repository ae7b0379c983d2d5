"""The official Cryptolens Python SDK (``licensing``), pointed at the sandbox, just works.

Only ``HelperMethods.server_address`` changes; the SDK builds its own URLs (with ``//``
and trailing slashes) and form bodies, which is the point of this test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from licensing.internal import HelperMethods
from licensing.methods import AI, Customer, Data, Key, Subscription

from bridge.sandbox.config import DEFAULT_PRODUCT_ID
from tests.fixtures.servers import SandboxServer

PRODUCT = DEFAULT_PRODUCT_ID


@pytest.fixture
def sdk(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    original = HelperMethods.server_address
    HelperMethods.server_address = sandbox_server.url
    try:
        yield sandbox_server
    finally:
        HelperMethods.server_address = original


def _new_key(token: str) -> str:
    result: Any = Key.create_key_from_template(token, 2)
    key, raw, _message = result
    assert json.loads(raw)["key"] == key
    assert isinstance(key, str)
    return key


def test_create_key_from_template(sdk: SandboxServer) -> None:
    key = _new_key(sdk.token)
    assert len(key) == 23 and key.count("-") == 3
    assert sdk.state()["counts"]["keys_created"] == 1


def test_extend_license(sdk: SandboxServer) -> None:
    key = _new_key(sdk.token)
    before = sdk.state()["keys"][0]["expires"]
    ok, _ = Key.extend_license(sdk.token, PRODUCT, key, 30)
    assert ok is True
    state = sdk.state()
    assert state["keys"][0]["expires"] == before + 30 * 86400
    assert state["counts"]["extensions"] == 1


def test_add_customer_and_change_customer(sdk: SandboxServer) -> None:
    key = _new_key(sdk.token)
    customer, message = Customer.add_customer(sdk.token, "Ada", "ada@example.com", "Engines")
    assert message == ""
    assert customer["customerId"] >= 1 and customer["secret"]
    ok, _ = Key.change_customer(sdk.token, PRODUCT, key, customer["customerId"])
    assert ok is True
    assert sdk.state()["keys"][0]["customer_id"] == customer["customerId"]


def test_block_key(sdk: SandboxServer) -> None:
    key = _new_key(sdk.token)
    assert Key.block_key(sdk.token, PRODUCT, key) == (True, "Changed")
    assert Key.block_key(sdk.token, PRODUCT, key) == (True, "Not changed")
    assert sdk.state()["keys"][0]["block"] is True


def test_record_usage_to_stripe(sdk: SandboxServer) -> None:
    key = _new_key(sdk.token)
    result, message = Subscription.record_usage_to_stripe(sdk.token, PRODUCT, key, 7)
    assert (result, message) == (None, "The subscription item id could not be found.")
    sdk.link_subscription_item(PRODUCT, key)
    result, message = Subscription.record_usage_to_stripe(sdk.token, PRODUCT, key, 7)
    assert result is not None and result["result"] == 0, message
    Subscription.record_usage_to_stripe(sdk.token, PRODUCT, key, 3)
    assert sdk.state()["usage"][key] == 10


def test_data_objects_on_a_key(sdk: SandboxServer) -> None:
    key = _new_key(sdk.token)
    added, message = Data.add_data_object_to_key(
        sdk.token, PRODUCT, key, name="calls", int_value=1, check_for_duplicates=True
    )
    assert added is not None, message
    object_id = added["id"]
    assert Data.add_data_object_to_key(
        sdk.token, PRODUCT, key, name="calls", check_for_duplicates=True
    ) == (None, "Data object with the same name already exists.")
    assert Data.increment_int_value_to_key(sdk.token, PRODUCT, key, object_id, int_value=5)[0]
    assert Data.decrement_int_value_to_key(sdk.token, PRODUCT, key, name="calls", int_value=2)[0]
    bounded = Data.increment_int_value_to_key(
        sdk.token, PRODUCT, key, object_id, int_value=1, enable_bound=True, bound=4
    )
    assert bounded[0] is None and bounded[1]
    listed, message = Data.list_key_data_objects(sdk.token, PRODUCT, key, "cal")
    assert listed is not None, message
    assert listed["dataObjects"] == [
        {"id": object_id, "name": "calls", "stringValue": None, "intValue": 4}
    ]
    removed, message = Data.remove_data_object_to_key(sdk.token, PRODUCT, key, object_id)
    assert removed is not None, message
    assert sdk.state()["data_objects"] == []
    assert Data.increment_int_value_to_key(sdk.token, PRODUCT, key, object_id, int_value=1) == (
        None,
        "Not enough permission.",
    )


def test_register_and_get_events(sdk: SandboxServer) -> None:
    key = _new_key(sdk.token)
    ok, _ = AI.register_event(
        sdk.token, PRODUCT, key, "machine-1", "Export", "start", 2530, "USD", '{"a":1}'
    )
    assert ok is True
    events, message = AI.get_events(sdk.token, product_id=PRODUCT, key=key)
    assert message == ""
    assert [(e["eventName"], e["value"], e["currency"]) for e in events] == [("start", 2530, "USD")]


def test_get_web_api_log(sdk: SandboxServer) -> None:
    key = _new_key(sdk.token)
    Key.extend_license(sdk.token, PRODUCT, key, 5)
    Key.block_key(sdk.token, PRODUCT, key)
    logs, message = AI.get_web_api_log(sdk.token, PRODUCT, key)
    assert message == ""
    assert [entry["state"] for entry in logs] == [3010, 7015, 7013]


def test_wrong_token_is_access_denied(sdk: SandboxServer) -> None:
    assert Key.create_key_from_template("not-a-token", 1) == (False, "Access denied.")
    assert Key.extend_license("not-a-token", PRODUCT, "AAAAA-AAAAA-AAAAA-AAAAA", 1) == (
        False,
        "Access denied.",
    )
    assert sdk.state()["counts"]["keys"] == 0
