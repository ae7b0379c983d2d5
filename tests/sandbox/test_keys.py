"""key/* methods and subscription/RecordUsage, over HTTP against the running sandbox."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from bridge.sandbox.config import DEFAULT_PRODUCT_ID
from tests.fixtures.servers import SandboxServer

PRODUCT = DEFAULT_PRODUCT_ID
DAY = 86400


def _create(sandbox: SandboxServer, template: int = 1) -> str:
    body = sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=template)
    assert body["result"] == 0, body
    key: str = body["key"]
    return key


def _key_row(sandbox: SandboxServer, key: str) -> dict[str, object]:
    row: dict[str, object] = next(k for k in sandbox.state()["keys"] if k["key"] == key)
    return row


def _expires(sandbox: SandboxServer, key: str) -> int:
    value = _key_row(sandbox, key)["expires"]
    assert isinstance(value, int)
    return value


class TestCreateKeyFromTemplate:
    def test_answer_matches_the_reference(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)
        assert re.fullmatch(r"[A-Z]{5}(-[A-Z]{5}){3}", body["key"])
        assert json.loads(body["rawResponse"]) == {
            "key": body["key"],
            "result": "Success",
            "message": None,
        }
        assert (body["result"], body["message"]) == (0, None)

    def test_keys_are_unique_and_logged_3010(self, sandbox_server: SandboxServer) -> None:
        keys = {_create(sandbox_server) for _ in range(5)}
        state = sandbox_server.state()
        assert len(keys) == 5
        assert state["counts"]["keys_created"] == 5
        assert [entry["state"] for entry in state["web_api_log"]] == [3010] * 5

    def test_template_period_sets_expiry(self, sandbox_server: SandboxServer) -> None:
        for template, period in ((1, 30), (2, 365), (3, 0)):
            row = _key_row(sandbox_server, _create(sandbox_server, template))
            assert row["period"] == period
            assert row["expires"] == row["created"] + period * DAY  # type: ignore[operator]

    def test_unknown_template(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call("key/CreateKeyFromTemplate", LicenseTemplateId=99)
        assert body == {"result": 1, "message": "Could not find the license template."}

    def test_missing_template_id(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call("key/CreateKeyFromTemplate")
        assert body == {"result": 1, "message": "The input parameters were incorrect."}


class TestGetKey:
    def test_license_key_object(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server, 2)
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key)
        license_key = body["licenseKey"]
        assert body["result"] == 0 and "metadata" not in body
        assert license_key["key"] == key and license_key["productId"] == PRODUCT
        assert license_key["period"] == 365 and license_key["f1"] is True
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", license_key["expires"])
        assert license_key["customer"] is None and license_key["block"] is False
        for field in ("created", "signDate", "notes", "globalId", "f8", "maxNoOfMachines"):
            assert field in license_key

    def test_customer_object(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        customer = sandbox_server.call(
            "customer/AddCustomer", Name="Bob", Email="bob@example.com", CompanyName="SKM"
        )
        sandbox_server.call(
            "key/ChangeCustomer", ProductId=PRODUCT, Key=key, CustomerId=customer["customerId"]
        )
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key)
        assert body["licenseKey"]["customer"] == {
            "id": customer["customerId"],
            "name": "Bob",
            "email": "bob@example.com",
            "companyName": "SKM",
            "created": body["licenseKey"]["customer"]["created"],
        }

    def test_metadata_license_status(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        sandbox_server.call("key/BlockKey", ProductId=PRODUCT, Key=key)
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key, Metadata="true")
        status = body["metadata"]["licenseStatus"]
        assert status["isValid"] is False and status["reasonForInvalidity"] == 2
        assert status["timeLimited"] is True and status["timeLeft"] in (29, 30)

    def test_perpetual_key_is_valid_and_not_time_limited(
        self, sandbox_server: SandboxServer
    ) -> None:
        key = _create(sandbox_server, 3)
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key, Metadata="True")
        status = body["metadata"]["licenseStatus"]
        assert status == {
            "isValid": True,
            "reasonForInvalidity": 0,
            "trial": False,
            "timeLimited": False,
            "timeLeft": 0,
        }

    def test_unknown_key_and_product(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key="AAAAA-AAAAA-AAAAA-AAAAA")
        assert body == {"result": 1, "message": "Could not find the key."}
        body = sandbox_server.call("key/GetKey", ProductId=7, Key="AAAAA-AAAAA-AAAAA-AAAAA")
        assert body == {"result": 1, "message": "Could not find the product."}


class TestExtendLicense:
    def _extend(self, sandbox: SandboxServer, key: str, days: int) -> None:
        body = sandbox.call("key/ExtendLicense", ProductId=PRODUCT, Key=key, NoOfDays=days)
        assert body == {"result": 0, "message": ""}

    def test_not_expired_adds_to_expiry(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        before = _expires(sandbox_server, key)
        self._extend(sandbox_server, key, 365)
        assert _expires(sandbox_server, key) == before + 365 * DAY

    def test_negative_days_shorten(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        before = _expires(sandbox_server, key)
        self._extend(sandbox_server, key, -10)
        assert _expires(sandbox_server, key) == before - 10 * DAY

    def test_expired_counts_from_now(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        self._extend(sandbox_server, key, -40)  # 30-day key, now 10 days past expiry
        start = int(time.time())
        self._extend(sandbox_server, key, 365)
        end = int(time.time())
        assert start + 365 * DAY <= _expires(sandbox_server, key) <= end + 365 * DAY

    def test_each_extension_is_logged_7015(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        self._extend(sandbox_server, key, 1)
        self._extend(sandbox_server, key, 1)
        state = sandbox_server.state()
        assert state["counts"]["extensions"] == 2
        assert [e["state"] for e in state["web_api_log"]] == [3010, 7015, 7015]

    def test_unknown_key(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call(
            "key/ExtendLicense", ProductId=PRODUCT, Key="AAAAA-AAAAA-AAAAA-AAAAA", NoOfDays=1
        )
        assert body == {"result": 1, "message": "Could not find the key."}
        assert sandbox_server.state()["counts"]["extensions"] == 0


class TestChangeCustomer:
    def test_associates_and_logs_7019(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        customer = sandbox_server.call("customer/AddCustomer", Name="Ada")
        body = sandbox_server.call(
            "key/ChangeCustomer", ProductId=PRODUCT, Key=key, CustomerId=customer["customerId"]
        )
        assert body["result"] == 0
        assert _key_row(sandbox_server, key)["customer_id"] == customer["customerId"]
        assert sandbox_server.state()["counts"]["customer_changes"] == 1

    def test_zero_or_unknown_dissociates(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        customer = sandbox_server.call("customer/AddCustomer", Name="Ada")
        for customer_id in (0, 424242):
            sandbox_server.call(
                "key/ChangeCustomer", ProductId=PRODUCT, Key=key, CustomerId=customer["customerId"]
            )
            body = sandbox_server.call(
                "key/ChangeCustomer", ProductId=PRODUCT, Key=key, CustomerId=customer_id
            )
            assert body == {
                "result": 1,
                "message": "Customer not found, so current key no longer references any customer.",
            }
            assert _key_row(sandbox_server, key)["customer_id"] is None


class TestChangeNotes:
    def test_changes_and_logs_7017(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        body = sandbox_server.call("key/ChangeNotes", ProductId=PRODUCT, Key=key, Notes="hello")
        assert body == {"result": 0, "message": None}
        assert _key_row(sandbox_server, key)["notes"] == "hello"
        assert sandbox_server.state()["counts"]["notes_changes"] == 1

    def test_at_most_500_characters(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        ok = sandbox_server.call("key/ChangeNotes", ProductId=PRODUCT, Key=key, Notes="x" * 500)
        assert ok["result"] == 0
        body = sandbox_server.call("key/ChangeNotes", ProductId=PRODUCT, Key=key, Notes="x" * 501)
        assert body == {
            "result": 1,
            "message": "The notes field cannot be more than 500 characters.",
        }
        assert _key_row(sandbox_server, key)["notes"] == "x" * 500


class TestBlockUnblock:
    def test_changed_then_not_changed(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        target: dict[str, Any] = {"ProductId": PRODUCT, "Key": key}
        assert sandbox_server.call("key/UnblockKey", **target)["message"] == "Not changed"
        assert sandbox_server.call("key/BlockKey", **target)["message"] == "Changed"
        assert sandbox_server.call("key/BlockKey", **target)["message"] == "Not changed"
        assert sandbox_server.call("key/UnblockKey", **target)["message"] == "Changed"
        state = sandbox_server.state()
        assert (state["counts"]["blocks"], state["counts"]["unblocks"]) == (1, 1)
        assert [e["state"] for e in state["web_api_log"]] == [3010, 7013, 7014]


def _linked(sandbox: SandboxServer) -> str:
    """A key recurring billing linked to a Stripe subscription item."""
    key = _create(sandbox)
    sandbox.link_subscription_item(PRODUCT, key)
    return key


class TestRecordUsage:
    def test_counts_per_key(self, sandbox_server: SandboxServer) -> None:
        first, second = _linked(sandbox_server), _linked(sandbox_server)
        for key, amount in ((first, 2), (first, 5), (second, 1)):
            body = sandbox_server.call(
                "subscription/RecordUsage", ProductId=PRODUCT, Key=key, Amount=amount
            )
            assert body == {"result": 0, "message": ""}
        state = sandbox_server.state()
        assert state["usage"] == {first: 7, second: 1}
        assert (state["counts"]["usage_records"], state["counts"]["usage_total"]) == (3, 8)

    def test_negative_amount_is_refused(self, sandbox_server: SandboxServer) -> None:
        key = _linked(sandbox_server)
        body = sandbox_server.call(
            "subscription/RecordUsage", ProductId=PRODUCT, Key=key, Amount=-1
        )
        assert body == {"result": 1, "message": "The input parameters were incorrect."}

    def test_a_key_without_a_subscription_item_is_refused(
        self, sandbox_server: SandboxServer
    ) -> None:
        key = _create(sandbox_server)
        body = sandbox_server.call("subscription/RecordUsage", ProductId=PRODUCT, Key=key, Amount=1)
        assert body == {"result": 1, "message": "The subscription item id could not be found."}
        state = sandbox_server.state()
        assert state["usage"] == {key: 0} and state["usage_records"] == []
        assert state["calls"]["subscription/RecordUsage"]["succeeded"] == 0

    def test_link_then_unlink(self, sandbox_server: SandboxServer) -> None:
        key = _create(sandbox_server)
        linked = sandbox_server.link_subscription_item(PRODUCT, key, "si_123")
        assert linked == {"product_id": PRODUCT, "key": key, "subscription_item": "si_123"}
        assert _key_row(sandbox_server, key)["subscription_item"] == "si_123"
        target: dict[str, Any] = {"ProductId": PRODUCT, "Key": key, "Amount": 1}
        assert sandbox_server.call("subscription/RecordUsage", **target)["result"] == 0
        sandbox_server.link_subscription_item(PRODUCT, key, None)
        assert sandbox_server.call("subscription/RecordUsage", **target)["result"] == 1
        assert sandbox_server.state()["counts"]["subscription_items"] == 0

    def test_linking_an_unknown_key_is_404(self, sandbox_server: SandboxServer) -> None:
        body = {"product_id": PRODUCT, "key": "AAAAA-AAAAA-AAAAA-AAAAA"}
        response = httpx.post(f"{sandbox_server.root}/sandbox/subscription-items", json=body)
        assert response.status_code == 404
        bad = httpx.post(f"{sandbox_server.root}/sandbox/subscription-items", json={"key": 1})
        assert bad.status_code == 400


class TestCreateKey:
    def test_parameters_notes_and_log(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call(
            "key/CreateKey", ProductId=PRODUCT, Period=30, F1="true", F3="true", Notes="n:x-1"
        )
        assert body["result"] == 0, body
        assert "customerId" not in body
        row = _key_row(sandbox_server, body["key"])
        assert (row["period"], row["notes"], row["customer_id"]) == (30, "n:x-1", None)
        assert row["expires"] == row["created"] + 30 * DAY  # type: ignore[operator]
        assert sandbox_server.state()["web_api_log"][-1]["state"] == 3010

    def test_add_or_use_existing_customer(self, sandbox_server: SandboxServer) -> None:
        buyer = {"Email": "ann@example.com", "Name": "Ann", "CompanyName": "Acme"}
        first = sandbox_server.call(
            "key/CreateKey", ProductId=PRODUCT, AddOrUseExistingCustomer="true", **buyer
        )
        second = sandbox_server.call(
            "key/CreateKey", ProductId=PRODUCT, AddOrUseExistingCustomer="true", **buyer
        )
        assert first["customerId"] == second["customerId"]
        got = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=second["key"])
        assert got["licenseKey"]["customer"]["email"] == "ann@example.com"
        assert len(sandbox_server.state()["customers"]) == 1

    def test_refusals_change_nothing(self, sandbox_server: SandboxServer) -> None:
        for params in (
            {"ProductId": 999},
            {"ProductId": PRODUCT, "Notes": "x" * 501},
            {"ProductId": PRODUCT, "Period": "-1"},
            {"ProductId": PRODUCT, "CustomerId": 77},
        ):
            assert sandbox_server.call("key/CreateKey", **params)["result"] == 1, params
        assert sandbox_server.state()["keys"] == []


class TestGetKeys:
    def test_notes_contains_pages_99(self, sandbox_server: SandboxServer) -> None:
        for i in range(100):
            sandbox_server.call("key/CreateKey", ProductId=PRODUCT, Notes=f"batch tag-{i % 2}")
        body = sandbox_server.call("product/GetKeys", ProductId=PRODUCT)
        assert (body["returned"], body["total"], body["pageCount"]) == (99, 100, 2)
        second = sandbox_server.call("product/GetKeys", ProductId=PRODUCT, Page=2)
        assert second["returned"] == 1
        found = sandbox_server.call(
            "product/GetKeys", ProductId=PRODUCT, SearchQuery='notes.contains("TAG-1")'
        )
        assert found["total"] == 50  # contains ignores case
        assert all(k["notes"] == "batch tag-1" for k in found["licenseKeys"])

    def test_key_and_id_terms(self, sandbox_server: SandboxServer) -> None:
        keys = [_create(sandbox_server) for _ in range(3)]
        query = f'key="{keys[0]}" or id >= 3'
        body = sandbox_server.call("product/GetKeys", ProductId=PRODUCT, SearchQuery=query)
        assert [k["key"] for k in body["licenseKeys"]] == [keys[0], keys[2]]

    def test_other_queries_get_the_services_error(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call(
            "product/GetKeys", ProductId=PRODUCT, SearchQuery="customer.name == 'x'"
        )
        assert body["result"] == 1
        assert body["message"].startswith("The search query causes problems.")


class TestForeignKeys:
    def test_another_client_creates_from_the_same_network(
        self, sandbox_server: SandboxServer
    ) -> None:
        mine = _create(sandbox_server, 2)
        made = httpx.post(sandbox_server.root + "/sandbox/keys", json={"template_id": 2})
        assert made.status_code == 200
        log = sandbox_server.state()["web_api_log"]
        assert [e["key"] for e in log] == [mine, made.json()["key"]]
        assert log[0]["ip"] == log[1]["ip"]

    def test_bad_request(self, sandbox_server: SandboxServer) -> None:
        made = httpx.post(sandbox_server.root + "/sandbox/keys", json={"template_id": 99})
        assert made.status_code == 400
        assert sandbox_server.state()["keys"] == []
