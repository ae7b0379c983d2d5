"""data/* methods (data objects on a license key), over HTTP against the running sandbox."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cryptolens.models import DataObject, LicenseKey
from bridge.sandbox.app import create_app
from bridge.sandbox.config import DEFAULT_PRODUCT_ID, DEFAULT_TOKEN, SandboxConfig, Token
from bridge.sandbox.store import Store
from tests.fixtures.servers import SandboxServer, run_asgi

PRODUCT = DEFAULT_PRODUCT_ID
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
NOT_PERMITTED = "Not enough permission."
NO_PRODUCT = "Not enough permission and/or product not found."
NO_KEY = "Not enough permission and/or key not found."
INT32_LIMIT = "Cannot increment/decrement value since the limit was reached for an int32."
INCORRECT = "The input parameters were incorrect."


def _refused(message: str) -> dict[str, Any]:
    return {"result": 1, "message": message}


def _create(sandbox: SandboxServer) -> str:
    body = sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)
    assert body["result"] == 0, body
    key: str = body["key"]
    return key


def _add(sandbox: SandboxServer, key: str, **params: Any) -> int:
    body = sandbox.call("data/AddDataObjectToKey", ProductId=PRODUCT, Key=key, **params)
    assert body["result"] == 0, body
    object_id: int = body["id"]
    return object_id


def _on(sandbox: SandboxServer, method: str, key: str, **params: Any) -> dict[str, Any]:
    return sandbox.call(f"data/{method}", ProductId=PRODUCT, Key=key, **params)


def _objects(sandbox: SandboxServer, key: str) -> list[dict[str, Any]]:
    body = sandbox.call("key/GetKey", ProductId=PRODUCT, Key=key)
    objects: list[dict[str, Any]] = body["licenseKey"]["dataObjects"]
    return objects


def _int_value(sandbox: SandboxServer, object_id: int) -> int:
    row = next(o for o in sandbox.state()["data_objects"] if o["id"] == object_id)
    value: int = row["int_value"]
    return value


@pytest.fixture
def key(sandbox_server: SandboxServer) -> str:
    return _create(sandbox_server)


class TestAdd:
    def test_answer_and_get_key(self, sandbox_server: SandboxServer, key: str) -> None:
        body = sandbox_server.call(
            "data/AddDataObjectToKey",
            ProductId=PRODUCT,
            Key=key,
            Name="usage",
            StringValue="meter",
            IntValue=3,
        )
        assert body == {"id": body["id"], "result": 0, "message": None}
        assert _objects(sandbox_server, key) == [
            {"id": body["id"], "name": "usage", "stringValue": "meter", "intValue": 3}
        ]
        state = sandbox_server.state()
        assert state["counts"]["data_objects"] == state["counts"]["data_objects_added"] == 1
        entry = state["web_api_log"][-1]
        assert (entry["state"], entry["do_id"], entry["do_int_value"]) == (8011, body["id"], 3)

    def test_defaults_are_null_and_zero(self, sandbox_server: SandboxServer, key: str) -> None:
        # The SDK sends StringValue="" for "not given".
        object_id = _add(sandbox_server, key, StringValue="")
        assert _objects(sandbox_server, key) == [
            {"id": object_id, "name": None, "stringValue": None, "intValue": 0}
        ]

    def test_limits(self, sandbox_server: SandboxServer, key: str) -> None:
        _add(sandbox_server, key, Name="n" * 100, StringValue="s" * 10000)
        too_long = _on(sandbox_server, "AddDataObjectToKey", key, Name="n" * 101)
        assert too_long == _refused("The 'Name' should have the size of max 100 chars.")
        too_much = _on(sandbox_server, "AddDataObjectToKey", key, StringValue="s" * 10001)
        assert too_much == _refused("The 'StringValue' should have the size of max 10000 chars.")
        for value in (INT32_MAX + 1, INT32_MIN - 1, "x"):
            body = _on(sandbox_server, "AddDataObjectToKey", key, IntValue=value)
            assert body == _refused(INCORRECT)
        _add(sandbox_server, key, IntValue=INT32_MIN)
        assert sandbox_server.state()["counts"]["data_objects"] == 2

    def test_check_for_duplicates(self, sandbox_server: SandboxServer, key: str) -> None:
        _add(sandbox_server, key, Name="seats")
        _add(sandbox_server, key, Name="seats")  # names may repeat unless checked
        body = _on(sandbox_server, "AddDataObjectToKey", key, Name="seats", CheckForDuplicates=True)
        assert body == _refused("Data object with the same name already exists.")
        other = _create(sandbox_server)
        _add(sandbox_server, other, Name="seats", CheckForDuplicates=True)  # per key
        assert sandbox_server.state()["counts"]["data_objects"] == 3

    def test_unknown_key_or_product(self, sandbox_server: SandboxServer) -> None:
        body = _on(sandbox_server, "AddDataObjectToKey", "AAAAA-AAAAA-AAAAA-AAAAA", Name="a")
        assert body == _refused(NO_KEY)
        body = sandbox_server.call("data/AddDataObjectToKey", ProductId=9, Key="A", Name="a")
        assert body == _refused(NO_PRODUCT)
        assert sandbox_server.call("data/AddDataObjectToKey", Name="a") == _refused(INCORRECT)


class TestModels:
    def test_the_clients_models_read_the_answers(
        self, sandbox_server: SandboxServer, key: str
    ) -> None:
        object_id = _add(sandbox_server, key, Name="seats", IntValue=2)
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key)
        license_key = LicenseKey.model_validate(body["licenseKey"])
        assert license_key.data_objects == (
            DataObject(id=object_id, name="seats", string_value=None, int_value=2),
        )
        every = sandbox_server.call("data/ListDataObjects", ShowAll=True)["dataObjects"]
        listed = DataObject.model_validate(every[0])
        assert (listed.referencer_type, listed.referencer_id) == (
            2,
            license_key_global_id(sandbox_server),
        )
        hidden = {**body["licenseKey"], "dataObjects": None}
        assert LicenseKey.model_validate(hidden).data_objects == ()


def license_key_global_id(sandbox: SandboxServer) -> int:
    global_id: int = sandbox.state()["keys"][0]["global_id"]
    return global_id


class TestIncrementDecrement:
    def test_the_sign_of_the_step_is_ignored(self, sandbox_server: SandboxServer, key: str) -> None:
        object_id = _add(sandbox_server, key, Name="calls")
        for step in (5, -5):
            body = _on(sandbox_server, "IncrementIntValueToKey", key, Id=object_id, IntValue=step)
            assert body == {"result": 0, "message": None}
        _on(sandbox_server, "DecrementIntValueToKey", key, Id=object_id, IntValue=-3)
        assert _int_value(sandbox_server, object_id) == 7
        state = sandbox_server.state()
        assert (state["counts"]["int_increments"], state["counts"]["int_decrements"]) == (2, 1)
        logged = [(e["state"], e["do_id"], e["do_int_value"]) for e in state["web_api_log"][-3:]]
        assert logged == [(8014, object_id, 5), (8014, object_id, -5), (8015, object_id, -3)]

    def test_by_name(self, sandbox_server: SandboxServer, key: str) -> None:
        first = _add(sandbox_server, key, Name="calls")
        _add(sandbox_server, key, Name="calls")
        # The SDK sends Id=0 with a name.
        _on(sandbox_server, "IncrementIntValueToKey", key, Id=0, Name="calls", IntValue=2)
        assert _int_value(sandbox_server, first) == 2  # the oldest of that name
        body = _on(sandbox_server, "IncrementIntValueToKey", key, Name="none", IntValue=2)
        assert body == _refused(NOT_PERMITTED)

    def test_overflow_is_refused_and_changes_nothing(
        self, sandbox_server: SandboxServer, key: str
    ) -> None:
        top = _add(sandbox_server, key, IntValue=INT32_MAX - 1)
        bottom = _add(sandbox_server, key, IntValue=INT32_MIN + 1)
        assert _on(sandbox_server, "IncrementIntValueToKey", key, Id=top, IntValue=1)["result"] == 0
        body = _on(sandbox_server, "IncrementIntValueToKey", key, Id=top, IntValue=1)
        assert body == _refused(INT32_LIMIT)
        body = _on(sandbox_server, "DecrementIntValueToKey", key, Id=bottom, IntValue=2)
        assert body == _refused(INT32_LIMIT)
        huge = _on(sandbox_server, "IncrementIntValueToKey", key, Id=bottom, IntValue=2**70)
        assert huge == _refused(INT32_LIMIT)
        assert (_int_value(sandbox_server, top), _int_value(sandbox_server, bottom)) == (
            INT32_MAX,
            INT32_MIN + 1,
        )
        assert sandbox_server.state()["counts"]["int_increments"] == 1

    def test_enabled_bounds(self, sandbox_server: SandboxServer, key: str) -> None:
        object_id = _add(sandbox_server, key, IntValue=8)
        bounded: dict[str, Any] = {"Id": object_id, "EnableBound": "True", "Bound": 10}
        assert (
            _on(sandbox_server, "IncrementIntValueToKey", key, IntValue=2, **bounded)["result"] == 0
        )  # up to the bound, inclusive
        body = _on(sandbox_server, "IncrementIntValueToKey", key, IntValue=1, **bounded)
        assert body["result"] == 1
        floor: dict[str, Any] = {"Id": object_id, "EnableBound": "True", "Bound": 0}
        assert (
            _on(sandbox_server, "DecrementIntValueToKey", key, IntValue=10, **floor)["result"] == 0
        )
        assert (
            _on(sandbox_server, "DecrementIntValueToKey", key, IntValue=1, **floor)["result"] == 1
        )
        assert (
            _on(sandbox_server, "DecrementIntValueToKey", key, Id=object_id, IntValue=1)["result"]
            == 0
        )  # a bound holds only when enabled
        assert _int_value(sandbox_server, object_id) == -1

    def test_another_keys_object(self, sandbox_server: SandboxServer, key: str) -> None:
        other = _create(sandbox_server)
        theirs = _add(sandbox_server, other)
        for method in ("IncrementIntValueToKey", "SetIntValueToKey", "RemoveDataObjectToKey"):
            assert _on(sandbox_server, method, key, Id=theirs, IntValue=1) == _refused(
                NOT_PERMITTED
            )
        assert _on(sandbox_server, "SetIntValueToKey", key, Id=99999) == _refused(NOT_PERMITTED)
        assert _on(sandbox_server, "SetIntValueToKey", key, IntValue=1) == _refused(INCORRECT)
        assert _int_value(sandbox_server, theirs) == 0


class TestSetAndRemove:
    def test_set_int_value(self, sandbox_server: SandboxServer, key: str) -> None:
        object_id = _add(sandbox_server, key, Name="seats")
        _on(sandbox_server, "SetIntValueToKey", key, Name="seats", IntValue=-42)
        assert _int_value(sandbox_server, object_id) == -42
        # Remarks: "beyond the limits of an int32, zero will be assigned".
        body = _on(sandbox_server, "SetIntValueToKey", key, Id=object_id, IntValue=INT32_MAX + 1)
        assert body == {"result": 0, "message": None}
        assert _int_value(sandbox_server, object_id) == 0
        assert sandbox_server.state()["counts"]["int_sets"] == 2

    def test_set_string_value(self, sandbox_server: SandboxServer, key: str) -> None:
        object_id = _add(sandbox_server, key, StringValue="old")
        _on(sandbox_server, "SetStringValueToKey", key, Id=object_id, StringValue="new")
        assert _objects(sandbox_server, key)[0]["stringValue"] == "new"
        body = _on(
            sandbox_server, "SetStringValueToKey", key, Id=object_id, StringValue="s" * 10001
        )
        assert body == _refused("The 'StringValue' should have the size of max 10000 chars.")

    def test_remove(self, sandbox_server: SandboxServer, key: str) -> None:
        kept = _add(sandbox_server, key, Name="kept")
        gone = _add(sandbox_server, key, Name="gone")
        body = _on(sandbox_server, "RemoveDataObjectToKey", key, Id=gone)
        assert body == {"result": 0, "message": None}
        assert [o["id"] for o in _objects(sandbox_server, key)] == [kept]
        assert _on(sandbox_server, "RemoveDataObjectToKey", key, Id=gone) == _refused(NOT_PERMITTED)
        _on(sandbox_server, "RemoveDataObjectToKey", key, Name="kept")
        state = sandbox_server.state()
        assert state["data_objects"] == [] and state["counts"]["data_objects_removed"] == 2


class TestList:
    def test_to_key_with_contains(self, sandbox_server: SandboxServer, key: str) -> None:
        first = _add(sandbox_server, key, Name="cust_name", StringValue="Artem")
        _add(sandbox_server, key, Name="location", StringValue="Sweden")
        _add(sandbox_server, _create(sandbox_server), Name="cust_other")
        body = _on(sandbox_server, "ListDataObjectsToKey", key, Contains="CUST")
        assert body == {
            "dataObjects": [
                {"id": first, "name": "cust_name", "stringValue": "Artem", "intValue": 0}
            ],
            "result": 0,
            "message": None,
        }
        assert len(_on(sandbox_server, "ListDataObjectsToKey", key)["dataObjects"]) == 2
        assert sandbox_server.state()["counts"]["data_object_lists"] == 2

    def test_general_listing(self, sandbox_server: SandboxServer, key: str) -> None:
        object_id = _add(sandbox_server, key, Name="seats", IntValue=5)
        global_id = sandbox_server.state()["keys"][0]["global_id"]
        by_key = sandbox_server.call(
            "data/ListDataObjects", ReferencerType=2, ReferencerId=global_id
        )
        assert by_key["dataObjects"] == [
            {"id": object_id, "name": "seats", "stringValue": None, "intValue": 5}
        ]
        assert sandbox_server.call("data/ListDataObjects")["dataObjects"] == []  # the user's
        by_product = sandbox_server.call(
            "data/ListDataObjects", ReferencerType=1, ReferencerId=PRODUCT
        )
        assert by_product["dataObjects"] == []
        every = sandbox_server.call("data/ListDataObjects", ShowAll=True, Contains="sea")
        assert every["dataObjects"] == [
            {
                "referencerId": global_id,
                "referencerType": 2,
                "id": object_id,
                "name": "seats",
                "stringValue": None,
                "intValue": 5,
            }
        ]

    def test_general_listing_refusals(self, sandbox_server: SandboxServer) -> None:
        call = sandbox_server.call
        assert call("data/ListDataObjects", ReferencerType=3) == _refused(
            "Incorrect 'ReferencerType'. It can either be 0 (for a User), 1 (for a Product) "
            "and 2 (for a Key)."
        )
        assert call("data/ListDataObjects", ReferencerType=2, ReferencerId=99999) == _refused(
            NO_KEY
        )
        assert call("data/ListDataObjects", ReferencerType=1, ReferencerId=7) == _refused(
            NO_PRODUCT
        )


# Scoped tokens, as on the access token page.
SCOPED = SandboxConfig(
    tokens=(
        Token(DEFAULT_TOKEN),
        Token("increment-only", methods=frozenset({"incrementintvalue"})),
        Token("step-one", feature_lock=1),
        Token("other-product", product_id=2002),
        Token("main-product", product_id=PRODUCT),
        Token("usage-old-name", methods=frozenset({"recordusage"})),
        Token("usage", methods=frozenset({"subscription"})),
    ),
    data_object_limit=3,
)


@pytest.fixture(scope="module")
def scoped() -> Iterator[SandboxServer]:
    with run_asgi(create_app(SCOPED)) as root:
        yield SandboxServer(root)


class TestPermissions:
    def test_the_method_permission_covers_the_key_path(self, scoped: SandboxServer) -> None:
        key = _create(scoped)
        object_id = _add(scoped, key)
        step: dict[str, Any] = {"ProductId": PRODUCT, "Key": key, "Id": object_id, "IntValue": 1}
        assert (
            scoped.call("data/IncrementIntValueToKey", token="increment-only", **step)["result"]
            == 0
        )
        for method in ("data/DecrementIntValueToKey", "data/AddDataObjectToKey"):
            assert scoped.call(method, token="increment-only", **step) == _refused("Access denied.")

    def test_feature_lock_bounds_the_step(self, scoped: SandboxServer) -> None:
        key = _create(scoped)
        object_id = _add(scoped, key)
        step: dict[str, Any] = {"ProductId": PRODUCT, "Key": key, "Id": object_id}
        assert (
            scoped.call("data/IncrementIntValueToKey", token="step-one", IntValue=1, **step)[
                "result"
            ]
            == 0
        )
        for method in ("data/IncrementIntValueToKey", "data/DecrementIntValueToKey"):
            body = scoped.call(method, token="step-one", IntValue=-2, **step)
            assert body == _refused(
                "The increment/decrement value not allowed by security settings."
            )

    def test_product_lock(self, scoped: SandboxServer) -> None:
        key = _create(scoped)
        target: dict[str, Any] = {"ProductId": PRODUCT, "Key": key}
        assert scoped.call("data/AddDataObjectToKey", token="other-product", **target) == (
            _refused(NO_PRODUCT)
        )
        assert (
            scoped.call("data/ListDataObjectsToKey", token="main-product", **target)["result"] == 0
        )
        # A product lock keeps the token off the user's objects, and ShowAll narrows.
        assert scoped.call("data/ListDataObjects", token="main-product") == _refused(NOT_PERMITTED)
        every = scoped.call("data/ListDataObjects", token="other-product", ShowAll=True)
        assert every["dataObjects"] == []

    def test_data_object_limit(self, scoped: SandboxServer) -> None:
        httpx.post(f"{scoped.root}/sandbox/reset").raise_for_status()
        key = _create(scoped)
        for _ in range(3):
            _add(scoped, key)
        body = _on(scoped, "AddDataObjectToKey", key)
        assert body == _refused("The limit of the number of data objects was achieved.")

    def test_record_usage_needs_the_subscription_permission(self, scoped: SandboxServer) -> None:
        key = _create(scoped)
        scoped.link_subscription_item(PRODUCT, key)
        usage: dict[str, Any] = {"ProductId": PRODUCT, "Key": key, "Amount": 1}
        refused = scoped.call("subscription/RecordUsage", token="usage-old-name", **usage)
        assert refused == _refused("Access denied.")
        assert scoped.call("subscription/RecordUsage", token="usage", **usage)["result"] == 0


class TestRecordUsageAccount:
    def test_without_a_stripe_payment_processor(self) -> None:
        config = SandboxConfig(stripe_payment_processor=False)
        with run_asgi(create_app(config)) as root:
            sandbox = SandboxServer(root)
            key = _create(sandbox)
            sandbox.link_subscription_item(PRODUCT, key)
            body = sandbox.call("subscription/RecordUsage", ProductId=PRODUCT, Key=key, Amount=1)
            assert body == _refused("No Stripe payment processor was set up.")


class TestFaults:
    def test_lost_reply_is_applied(self, sandbox_server: SandboxServer, key: str) -> None:
        object_id = _add(sandbox_server, key)
        sandbox_server.set_faults(
            script=[{"method": "IncrementIntValueToKey", "fault": "lost_reply"}]
        )
        data = {
            "token": DEFAULT_TOKEN,
            "ProductId": PRODUCT,
            "Key": key,
            "Id": object_id,
            "IntValue": 4,
        }
        url = sandbox_server.url + "data/IncrementIntValueToKey"
        assert httpx.post(url, data=data).status_code == 504
        assert _int_value(sandbox_server, object_id) == 4  # applied, though the reply was lost
        assert httpx.post(url, data=data).json() == {"result": 0, "message": None}
        assert _int_value(sandbox_server, object_id) == 8
        calls = sandbox_server.state()["calls"]["data/IncrementIntValueToKey"]
        assert calls == {"received": 2, "applied": 2, "succeeded": 2}

    def test_fail_before_is_not_applied(self, sandbox_server: SandboxServer, key: str) -> None:
        sandbox_server.set_faults(
            script=[{"method": "data/AddDataObjectToKey", "fault": "fail_before"}]
        )
        data = {"token": DEFAULT_TOKEN, "ProductId": PRODUCT, "Key": key, "Name": "x"}
        response = httpx.post(sandbox_server.url + "data/AddDataObjectToKey", data=data)
        assert response.status_code == 503
        state = sandbox_server.state()
        assert state["data_objects"] == []
        assert state["calls"]["data/AddDataObjectToKey"] == {
            "received": 1,
            "applied": 0,
            "succeeded": 0,
        }

    def test_random_failures_apply(self, sandbox_server: SandboxServer, key: str) -> None:
        object_id = _add(sandbox_server, key)
        sandbox_server.set_faults(fail_rate=1)
        data = {"token": DEFAULT_TOKEN, "ProductId": PRODUCT, "Key": key, "Id": object_id}
        response = httpx.post(sandbox_server.url + "data/SetIntValueToKey", data=data)
        assert response.status_code == 503


class TestPersistence:
    def test_objects_survive_a_restart(self, tmp_path: Path) -> None:
        db = tmp_path / "sandbox.db"
        with run_asgi(create_app(db_path=db)) as root:
            sandbox = SandboxServer(root)
            key = _create(sandbox)
            object_id = _add(sandbox, key, Name="calls", IntValue=2)
            _on(sandbox, "IncrementIntValueToKey", key, Id=object_id, IntValue=3)
            sandbox.link_subscription_item(PRODUCT, key, "si_kept")
            before = sandbox.state()
        with run_asgi(create_app(db_path=db)) as root:
            sandbox = SandboxServer(root)
            after = sandbox.state()
            assert after["data_objects"] == before["data_objects"]
            assert after["web_api_log"] == before["web_api_log"]
            assert after["keys"][0]["subscription_item"] == "si_kept"
            assert _objects(sandbox, key)[0]["intValue"] == 5
            assert _add(sandbox, key) > object_id

    def test_a_file_from_before_gains_the_new_columns(self, tmp_path: Path) -> None:
        db = tmp_path / "old.db"
        Store(SandboxConfig(), db).close()
        with sqlite3.connect(db) as old:
            for table, column in (
                ("keys", "subscription_item"),
                ("web_api_log", "do_id"),
                ("web_api_log", "do_int_value"),
            ):
                old.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        old.close()
        with run_asgi(create_app(db_path=db)) as root:
            sandbox = SandboxServer(root)
            key = _create(sandbox)
            _add(sandbox, key, IntValue=1)
            assert sandbox.state()["web_api_log"][-1]["do_int_value"] == 1
