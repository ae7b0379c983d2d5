"""The wire protocol (paths, methods, parameter names, booleans) and access token scopes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.sandbox.app import create_app
from bridge.sandbox.config import (
    DEFAULT_PRODUCT_ID,
    DEFAULT_TOKEN,
    Product,
    SandboxConfig,
    SeedCustomer,
    Template,
    Token,
)
from tests.fixtures.servers import SandboxServer, run_asgi

PRODUCT = DEFAULT_PRODUCT_ID
DENIED = {"result": 1, "message": "Access denied."}


class TestPaths:
    @pytest.mark.parametrize(
        "path",
        [
            "/api/key/CreateKeyFromTemplate",
            "/API/KEY/createkeyfromtemplate",
            "/api//key/CreateKeyFromTemplate",
            "/api/key/CreateKeyFromTemplate/",
            "//api/key//CreateKeyFromTemplate//",
        ],
    )
    def test_case_slashes_and_trailing_slash(
        self, sandbox_server: SandboxServer, path: str
    ) -> None:
        data = {"token": DEFAULT_TOKEN, "LicenseTemplateId": "1"}
        response = httpx.post(sandbox_server.root + path, data=data)
        assert response.status_code == 200
        assert response.json()["result"] == 0

    def test_get_with_query_string(self, sandbox_server: SandboxServer) -> None:
        params = {"token": DEFAULT_TOKEN, "LicenseTemplateId": "2"}
        response = httpx.get(sandbox_server.url + "key/CreateKeyFromTemplate", params=params)
        assert response.json()["result"] == 0
        assert sandbox_server.state()["keys"][0]["period"] == 365

    def test_json_body(self, sandbox_server: SandboxServer) -> None:
        body = {"token": DEFAULT_TOKEN, "LicenseTemplateId": 3}
        response = httpx.post(sandbox_server.url + "key/CreateKeyFromTemplate", json=body)
        assert response.json()["result"] == 0

    def test_unknown_method_is_404(self, sandbox_server: SandboxServer) -> None:
        response = httpx.post(sandbox_server.url + "key/Teleport", data={"token": DEFAULT_TOKEN})
        assert response.status_code == 404
        assert response.json()["result"] == 1


class TestParameters:
    def test_names_are_case_insensitive(self, sandbox_server: SandboxServer) -> None:
        key = sandbox_server.call("key/CreateKeyFromTemplate", licensetemplateid=1)["key"]
        body = sandbox_server.call("key/GetKey", PRODUCTID=PRODUCT, kEy=key)
        assert body["licenseKey"]["key"] == key
        response = httpx.post(
            sandbox_server.url + "key/GetKey",
            data={"TOKEN": DEFAULT_TOKEN, "productId": str(PRODUCT), "key": key},
        )
        assert response.json()["result"] == 0

    @pytest.mark.parametrize("value", ["true", "True", "TRUE", "1"])
    def test_booleans_true(self, sandbox_server: SandboxServer, value: str) -> None:
        key = sandbox_server.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key, Metadata=value)
        assert "metadata" in body

    @pytest.mark.parametrize("value", ["false", "False", "0", ""])
    def test_booleans_false(self, sandbox_server: SandboxServer, value: str) -> None:
        key = sandbox_server.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
        body = sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key, Metadata=value)
        assert body["result"] == 0 and "metadata" not in body

    def test_bad_boolean_and_integer(self, sandbox_server: SandboxServer) -> None:
        key = sandbox_server.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
        bad = {"result": 1, "message": "The input parameters were incorrect."}
        assert (
            sandbox_server.call("key/GetKey", ProductId=PRODUCT, Key=key, Metadata="maybe") == bad
        )
        assert sandbox_server.call("key/GetKey", ProductId="one", Key=key) == bad

    def test_token_is_required(self, sandbox_server: SandboxServer) -> None:
        response = httpx.post(sandbox_server.url + "key/CreateKeyFromTemplate", data={})
        assert response.json() == DENIED
        assert sandbox_server.call("key/CreateKeyFromTemplate", token="wrong") == DENIED
        calls = sandbox_server.state()["calls"]["key/CreateKeyFromTemplate"]
        assert calls == {"received": 2, "applied": 2, "succeeded": 0}


SCOPED = SandboxConfig(
    products=(Product(PRODUCT, "Main"), Product(2002, "Other")),
    templates=(
        Template(1, "Monthly", PRODUCT, 30),
        Template(2, "Yearly", PRODUCT, 365),
        Template(5, "Other", 2002, 30),
    ),
    tokens=(
        Token(DEFAULT_TOKEN),
        Token("extend-only", methods=frozenset({"extendlicense"})),
        Token("product-main", product_id=PRODUCT),
        Token("template-2", feature_lock=2),
    ),
    customers=(SeedCustomer("Seed Sam", "sam@example.com", "Seeds Inc"),),
)


@pytest.fixture(scope="module")
def scoped() -> Iterator[SandboxServer]:
    with run_asgi(create_app(SCOPED)) as root:
        yield SandboxServer(root)


class TestScopes:
    def test_method_lock(self, scoped: SandboxServer) -> None:
        key = scoped.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
        target = {"ProductId": PRODUCT, "Key": key}
        assert scoped.call("key/ExtendLicense", token="extend-only", NoOfDays=1, **target) == {
            "result": 0,
            "message": "",
        }
        assert scoped.call("key/BlockKey", token="extend-only", **target) == DENIED
        assert scoped.call("ai/GetEvents", token="extend-only") == DENIED

    def test_product_lock(self, scoped: SandboxServer) -> None:
        main = scoped.call("key/CreateKeyFromTemplate", token="product-main", LicenseTemplateId=1)
        assert main["result"] == 0
        other = scoped.call("key/CreateKeyFromTemplate", token="product-main", LicenseTemplateId=5)
        assert other == DENIED
        other_key = scoped.call("key/CreateKeyFromTemplate", LicenseTemplateId=5)["key"]
        assert (
            scoped.call("key/GetKey", token="product-main", ProductId=2002, Key=other_key) == DENIED
        )
        templates = scoped.call("licensetemplate/GetLicenseTemplates", token="product-main")
        assert {t["productId"] for t in templates["licenseTemplates"]} == {PRODUCT}
        logs = scoped.call("ai/GetWebAPILog", token="product-main", Limit=1000)["logs"]
        assert logs and {entry["productId"] for entry in logs} == {PRODUCT}
        products = scoped.call("product/GetProducts", token="product-main")["products"]
        assert [p["id"] for p in products] == [PRODUCT]

    def test_feature_lock_restricts_template(self, scoped: SandboxServer) -> None:
        assert (
            scoped.call("key/CreateKeyFromTemplate", token="template-2", LicenseTemplateId=2)[
                "result"
            ]
            == 0
        )
        body = scoped.call("key/CreateKeyFromTemplate", token="template-2", LicenseTemplateId=1)
        assert body == {
            "result": 1,
            "message": "The specified template id is not allowed because feature lock. Please "
            "use an access token with feature lock set to 0 or set it to the id of the "
            "license template.",
        }

    def test_key_lock(self, tmp_path: Path) -> None:
        # The lock names a key string, so make the keys first and restart on the same file.
        db = tmp_path / "sandbox.db"
        with run_asgi(create_app(db_path=db)) as root:
            sandbox = SandboxServer(root)
            key = sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
            other = sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
        config = SandboxConfig(tokens=(Token(DEFAULT_TOKEN), Token("one-key", key=key)))
        with run_asgi(create_app(config, db_path=db)) as root:
            sandbox = SandboxServer(root, token="one-key")
            assert sandbox.call("key/GetKey", ProductId=PRODUCT, Key=key)["result"] == 0
            assert sandbox.call("key/GetKey", ProductId=PRODUCT, Key=other) == DENIED
            assert sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1) == DENIED
            sandbox.call("key/ExtendLicense", token=DEFAULT_TOKEN, ProductId=PRODUCT, Key=other)
            logs = sandbox.call("ai/GetWebAPILog", ProductId=PRODUCT, Limit=100)["logs"]
            assert {entry["key"] for entry in logs} == {key}


class TestCatalog:
    def test_seed_customers_and_search(self, scoped: SandboxServer) -> None:
        added = scoped.call(
            "customer/AddCustomer",
            Name="Grace",
            Email="grace@navy.mil",
            CompanyName="Navy",
            EnableCustomerAssociation="True",
        )
        assert added["result"] == 0 and added["secret"] and "portalLink" in added
        customers = scoped.call("customer/GetCustomers")["customers"]
        assert [c["name"] for c in customers][:2] == ["Seed Sam", "Grace"]
        for search in ("grace", "NAVY", "navy.mil", added["secret"]):
            found = scoped.call("customer/GetCustomers", Search=search)["customers"]
            assert [c["id"] for c in found] == [added["customerId"]]
        by_id = scoped.call("customer/GetCustomers", CustomerId=added["customerId"])
        assert [c["name"] for c in by_id["customers"]] == ["Grace"]
        assert len(scoped.call("customer/GetCustomers", Limit=1)["customers"]) == 1

    def test_add_customer_limits(self, scoped: SandboxServer) -> None:
        body = scoped.call("customer/AddCustomer", Name="x" * 101)
        assert body == {"result": 1, "message": "The input parameters were incorrect."}

    def test_license_templates_like_the_example(self, sandbox_server: SandboxServer) -> None:
        body = sandbox_server.call("licensetemplate/GetLicenseTemplates")
        monthly = body["licenseTemplates"][0]
        assert (monthly["id"], monthly["name"], monthly["productId"]) == (1, "Monthly", PRODUCT)
        assert monthly["parameters"].startswith('{"ProductId":1001,"Period":30,"F1":true,')
        assert [t["name"] for t in body["licenseTemplates"]] == ["Monthly", "Yearly", "Perpetual"]
