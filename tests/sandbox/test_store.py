"""State in SQLite: what one app wrote, the next app on the same file still has."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.sandbox.app import create_app
from bridge.sandbox.config import DEFAULT_PRODUCT_ID, SandboxConfig, SeedCustomer
from bridge.sandbox.store import Store
from tests.fixtures.servers import SandboxServer, run_asgi

PRODUCT = DEFAULT_PRODUCT_ID


def test_state_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.db"
    with run_asgi(create_app(db_path=db)) as root:
        sandbox = SandboxServer(root)
        key = sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"]
        sandbox.call("key/ExtendLicense", ProductId=PRODUCT, Key=key, NoOfDays=3)
        customer = sandbox.call("customer/AddCustomer", Name="Ada")["customerId"]
        sandbox.call("ai/RegisterEvent", EventName="start")
        sandbox.link_subscription_item(PRODUCT, key, "si_kept")
        sandbox.call("subscription/RecordUsage", ProductId=PRODUCT, Key=key, Amount=4)
        before = sandbox.state()
    with run_asgi(create_app(db_path=db)) as root:
        sandbox = SandboxServer(root)
        after = sandbox.state()
        assert after["keys"] == before["keys"]
        assert after["web_api_log"] == before["web_api_log"]
        assert after["usage"] == {key: 4}
        assert sandbox.call("key/GetKey", ProductId=PRODUCT, Key=key)["result"] == 0
        assert [c["id"] for c in after["customers"]] == [customer]
        sandbox.call("ai/RegisterEvent", EventName="again")
        ids = [e["id"] for e in sandbox.state()["events"]]
        assert len(ids) == 2 and ids[1] > ids[0]


def test_memory_state_is_per_app() -> None:
    with run_asgi(create_app()) as root:
        SandboxServer(root).call("key/CreateKeyFromTemplate", LicenseTemplateId=1)
    with run_asgi(create_app()) as root:
        assert SandboxServer(root).state()["counts"]["keys"] == 0


def test_seed_customers_are_added_once(tmp_path: Path) -> None:
    config = SandboxConfig(customers=(SeedCustomer("Sam", "sam@example.com", "Seeds"),))
    db = tmp_path / "sandbox.db"
    for _ in range(2):
        store = Store(config, db)
        assert [c.name for c in store.customers()] == ["Sam"]
        store.close()


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(SandboxConfig(), tmp_path / "sandbox.db")
    try:
        with pytest.raises(RuntimeError), store.transaction():
            store.add_customer("Ada", "", "", "", 0)
            raise RuntimeError
        assert store.customers() == []
    finally:
        store.close()
