"""ai/* methods: RegisterEvent(s), GetEvents and GetWebAPILog, cursors and filters."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bridge.sandbox.config import DEFAULT_PRODUCT_ID
from tests.fixtures.servers import SandboxServer

PRODUCT = DEFAULT_PRODUCT_ID


def _events(sandbox: SandboxServer, **params: Any) -> list[dict[str, Any]]:
    body = sandbox.call("ai/GetEvents", **params)
    assert body["result"] == 0, body
    events: list[dict[str, Any]] = body["events"]
    return events


def _logs(sandbox: SandboxServer, **params: Any) -> list[dict[str, Any]]:
    body = sandbox.call("ai/GetWebAPILog", **params)
    assert body["result"] == 0, body
    logs: list[dict[str, Any]] = body["logs"]
    return logs


def _register(sandbox: SandboxServer, count: int, **params: Any) -> None:
    events = [{"EventName": f"e{i}", "Value": i} for i in range(count)]
    body = sandbox.call("ai/RegisterEvents", Events=json.dumps(events), **params)
    assert body == {"result": 0, "message": ""}


def _key(sandbox: SandboxServer) -> str:
    key: str = sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
    return key


class TestRegisterEvent:
    def test_stores_fields_with_time_now(self, sandbox_server: SandboxServer) -> None:
        key = _key(sandbox_server)
        start = int(time.time())
        body = sandbox_server.call(
            "ai/RegisterEvent",
            ProductId=PRODUCT,
            Key=key,
            MachineCode="m1",
            FeatureName="Export",
            EventName="purchase",
            Value=2530,
            Currency="USD",
            Metadata='{"plan":"pro"}',
        )
        assert body == {"result": 0, "message": ""}
        (event,) = _events(sandbox_server)
        assert start <= event.pop("time") <= int(time.time())
        assert event == {
            "id": event["id"],
            "productId": PRODUCT,
            "key": key,
            "machineCode": "m1",
            "featureName": "Export",
            "eventName": "purchase",
            "value": 2530,
            "currency": "USD",
            "metadata": '{"plan":"pro"}',
        }

    def test_standalone_event_needs_no_product(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call("ai/RegisterEvent", MachineCode="m1", EventName="start")
        assert body["result"] == 0

    def test_key_needs_product(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call("ai/RegisterEvent", Key="AAAAA-AAAAA-AAAAA-AAAAA")
        assert body == {"result": 1, "message": "The input parameters were incorrect."}

    def test_unknown_key_and_product(self, sandbox_server: SandboxServer) -> None:
        missing = "AAAAA-AAAAA-AAAAA-AAAAA"
        body = sandbox_server.call("ai/RegisterEvent", ProductId=PRODUCT, Key=missing)
        assert body == {"result": 1, "message": "Could not find the key."}
        body = sandbox_server.call("ai/RegisterEvent", ProductId=5, EventName="x")
        assert body == {"result": 1, "message": "Could not find the product."}

    def test_ids_strictly_increase(self, sandbox_server: SandboxServer) -> None:
        _register(sandbox_server, 3)
        sandbox_server.call("ai/RegisterEvent", EventName="later")
        ids = [e["id"] for e in sandbox_server.state()["events"]]
        assert ids == sorted(set(ids)) and len(ids) == 4


class TestRegisterEvents:
    def test_uses_given_time_or_now(self, sandbox_server: SandboxServer) -> None:
        events = [{"EventName": "old", "Time": 1534407953}, {"eventname": "new"}]
        sandbox_server.call("ai/RegisterEvents", Events=json.dumps(events))
        old, new = _events(sandbox_server)
        assert (old["eventName"], old["time"]) == ("old", 1534407953)
        assert new["eventName"] == "new" and new["time"] >= int(time.time()) - 5

    @pytest.mark.parametrize("events", ["not json", '{"EventName": "x"}', "[1, 2]"])
    def test_bad_events_string(self, sandbox_server: SandboxServer, events: str) -> None:
        body = sandbox_server.call("ai/RegisterEvents", Events=events)
        assert body == {
            "result": 1,
            "message": "Events string is not correctly formatted json string.",
        }
        assert sandbox_server.state()["counts"]["events"] == 0


class TestGetEvents:
    def test_limit_defaults_to_10_and_caps_at_100(self, sandbox_server: SandboxServer) -> None:
        _register(sandbox_server, 105)
        assert len(_events(sandbox_server)) == 10
        assert len(_events(sandbox_server, Limit=1000)) == 100
        assert len(_events(sandbox_server, Limit=3)) == 3

    def test_cursors(self, sandbox_server: SandboxServer) -> None:
        _register(sandbox_server, 6)
        ids = [e["id"] for e in _events(sandbox_server)]
        after = _events(sandbox_server, StartingAfter=ids[1], Limit=2)
        assert [e["id"] for e in after] == ids[2:4]
        before = _events(sandbox_server, EndingBefore=ids[4], Limit=2)
        assert [e["id"] for e in before] == [ids[3], ids[2]]  # newest first
        unset = _events(sandbox_server, StartingAfter=0, EndingBefore=0)
        assert [e["id"] for e in unset] == ids

    def test_time_filter_timestamp_and_range(self, sandbox_server: SandboxServer) -> None:
        times = [1000, 2000, 3000, 4000]
        events = [{"EventName": str(t), "Time": t} for t in times]
        sandbox_server.call("ai/RegisterEvents", Events=json.dumps(events))

        def names(time_filter: str) -> list[str]:
            return [e["eventName"] for e in _events(sandbox_server, Time=time_filter)]

        assert names("2000") == ["2000"]
        assert names('{"gte":2000,"lt":4000}') == ["2000", "3000"]
        assert names('{"gt":2000,"lte":4000}') == ["3000", "4000"]

    @pytest.mark.parametrize("value", ["yesterday", '{"after": 5}', '{"gt": "x"}', "[1]"])
    def test_bad_time(self, sandbox_server: SandboxServer, value: str) -> None:
        body = sandbox_server.call("ai/GetEvents", Time=value)
        assert body == {"result": 1, "message": "The 'Time' parameter has the wrong format."}

    def test_product_key_and_metadata_filters(self, sandbox_server: SandboxServer) -> None:
        key = _key(sandbox_server)
        sandbox_server.call("ai/RegisterEvent", EventName="anon", Metadata='{"a":1}')
        sandbox_server.call("ai/RegisterEvent", ProductId=PRODUCT, EventName="product")
        sandbox_server.call(
            "ai/RegisterEvent", ProductId=PRODUCT, Key=key, EventName="keyed", Metadata='{"a":1}'
        )

        def names(**params: Any) -> list[str]:
            return [e["eventName"] for e in _events(sandbox_server, **params)]

        assert names() == ["anon", "product", "keyed"]
        assert names(ProductId=PRODUCT) == ["product", "keyed"]
        assert names(ProductId=PRODUCT, Key=key) == ["keyed"]
        assert names(Metadata='{"a":1}') == ["anon", "keyed"]
        assert names(Metadata='{"a": 1}') == []  # an exact string match

    def test_key_filter_requires_product(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call("ai/GetEvents", Key="AAAAA-AAAAA-AAAAA-AAAAA")
        assert body == {"result": 1, "message": "The input parameters were incorrect."}


class TestGetWebAPILog:
    def test_entry_fields(self, sandbox_server: SandboxServer) -> None:
        key = _key(sandbox_server)
        (entry,) = _logs(sandbox_server)
        assert entry["productId"] == PRODUCT and entry["key"] == key
        assert entry["state"] == 3010 and isinstance(entry["time"], int)
        assert entry["ip"] == "127.0.0.0"  # anonymised
        for field in ("id", "machineCode", "friendlyName"):
            assert field in entry

    def test_states_filter(self, sandbox_server: SandboxServer) -> None:
        key = _key(sandbox_server)
        target: dict[str, Any] = {"ProductId": PRODUCT, "Key": key}
        sandbox_server.call("key/ExtendLicense", NoOfDays=1, **target)
        sandbox_server.call("key/BlockKey", **target)
        sandbox_server.call("key/ChangeNotes", Notes="n", **target)
        assert [e["state"] for e in _logs(sandbox_server, States="[7015]")] == [7015]
        assert [e["state"] for e in _logs(sandbox_server, States="[3010,7013]")] == [3010, 7013]
        body = sandbox_server.call("ai/GetWebAPILog", States="[three]")
        assert body == {"result": 1, "message": "The input parameters were incorrect."}

    def test_product_key_and_device_filters(self, sandbox_server: SandboxServer) -> None:
        first, second = _key(sandbox_server), _key(sandbox_server)
        assert [e["key"] for e in _logs(sandbox_server, ProductId=PRODUCT, Key=second)] == [second]
        assert len(_logs(sandbox_server, ProductId=PRODUCT)) == 2
        assert _logs(sandbox_server, ProductId=PRODUCT, Key=first)[0]["key"] == first
        assert _logs(sandbox_server, MachineCode="nope") == []
        assert _logs(sandbox_server, FriendlyName="nope") == []

    def test_limit_default_10_max_1000_and_cursors(self, sandbox_server: SandboxServer) -> None:
        key = _key(sandbox_server)
        for _ in range(11):
            sandbox_server.call("key/ExtendLicense", ProductId=PRODUCT, Key=key, NoOfDays=1)
        logs = _logs(sandbox_server, Limit=5000)
        assert len(logs) == 12 and len(_logs(sandbox_server)) == 10
        ids = [e["id"] for e in logs]
        assert ids == sorted(ids)
        after = _logs(sandbox_server, StartingAfter=ids[9])
        assert [e["id"] for e in after] == ids[10:]
        before = _logs(sandbox_server, EndingBefore=ids[2])
        assert [e["id"] for e in before] == [ids[1], ids[0]]

    def test_time_filter(self, sandbox_server: SandboxServer) -> None:
        _key(sandbox_server)
        now = int(time.time())
        assert len(_logs(sandbox_server, Time=json.dumps({"gte": now - 60}))) == 1
        assert _logs(sandbox_server, Time=json.dumps({"gt": now + 60})) == []
        body = sandbox_server.call("ai/GetWebAPILog", Time="soon")
        assert body == {"result": 1, "message": "The input parameters were incorrect."}
