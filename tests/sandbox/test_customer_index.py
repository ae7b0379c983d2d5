"""GetCustomers' Search through the trigram index gives exactly what a full scan gives."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import pytest

from bridge.sandbox.config import SandboxConfig
from bridge.sandbox.customer_index import CustomerIndex
from bridge.sandbox.store import Store
from bridge.sandbox.store_records import CustomerRecord
from tests.fixtures.servers import SandboxServer

# Letters whose lower case is longer than, or not the same letter as, their upper case.
ODD_CASES = ["İ", "ẞ", "ß", "K", "Å", "Σ", "ς", "ﬀ"]


def _matches(customer: CustomerRecord, search: str) -> bool:
    """The Search predicate as GetCustomers applies it (bridge/sandbox/catalog.py)."""
    needle = search.lower()
    fields = (customer.name, customer.company_name, customer.email, customer.secret)
    return any(needle in field.lower() for field in fields)


def _customer(
    customer_id: int, name: str, email: str, company: str = "", secret: str = ""
) -> CustomerRecord:
    return CustomerRecord(customer_id, name, email, company, 0, secret or f"s{customer_id}", "")


def _random_text(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "@.-_ " + "".join(ODD_CASES)
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def _index(customers: list[CustomerRecord]) -> CustomerIndex:
    index = CustomerIndex()
    for customer in customers:
        index.add(customer)
    return index


class TestCustomerIndex:
    def test_same_matches_as_a_scan(self) -> None:
        rng = random.Random(1)
        customers = [
            _customer(i, _random_text(rng), _random_text(rng), _random_text(rng))
            for i in range(1, 400)
        ]
        index = _index(customers)
        searches = [_random_text(rng) for _ in range(300)]
        # Slices of real fields, in other cases, so that most searches find something.
        for customer in rng.sample(customers, 100):
            field = rng.choice([customer.name, customer.email, customer.secret])
            start = rng.randint(0, max(len(field) - 1, 0))
            piece = field[start : start + rng.randint(1, 8)]
            searches += [piece, piece.upper(), piece.swapcase()]
        searches += [*ODD_CASES, "", "a", "ab", "s1", "S1", "zzzzzz"]
        for search in searches:
            scan = [c for c in customers if _matches(c, search)]
            assert [c for c in index.containing(search.lower()) if _matches(c, search)] == scan

    def test_an_email_inside_another_is_found_with_it(self) -> None:
        customers = [
            _customer(1, "Ann", "ann@example.com"),
            _customer(2, "Joanne", "joann@example.com"),
            _customer(3, "Ann", "Ann@Example.com.au"),
            _customer(4, "Other", "other@example.org", company="ann@example.com Ltd"),
        ]
        found = [c.id for c in _index(customers).containing("ann@example.com")]
        assert found == [1, 2, 3, 4]

    def test_no_stray_candidates_for_an_email(self) -> None:
        customers = [_customer(i, f"Buyer {i}", f"buyer{i}@example.com") for i in range(1, 2000)]
        candidates = _index(customers).containing("buyer1234@example.com")
        assert [c.id for c in candidates] == [1234]

    def test_ids_must_grow(self) -> None:
        index = _index([_customer(5, "a", "a@x")])
        with pytest.raises(ValueError):
            index.add(_customer(5, "b", "b@x"))
        assert [c.id for c in index.all()] == [5]


class TestStoreKeepsTheIndex:
    def test_added_customers_are_searchable(self) -> None:
        store = Store(SandboxConfig())
        try:
            assert store.customers_containing("ada@example.com") == []
            ada = store.add_customer("Ada", "ada@example.com", "", "", 1)
            bob = store.add_customer("Bob", "bob@example.com", "", "", 2)
            assert store.customers_containing("ada@example.com") == [ada]
            assert store.customers() == [ada, bob]
            assert store.customer(bob.id) == bob
        finally:
            store.close()

    def test_a_rolled_back_customer_is_not_found(self) -> None:
        store = Store(SandboxConfig())
        try:
            kept = store.add_customer("Kept", "kept@example.com", "", "", 1)
            with pytest.raises(RuntimeError), store.transaction():
                gone = store.add_customer("Gone", "gone@example.com", "", "", 2)
                assert store.customers_containing("gone@example.com") == [gone]
                raise RuntimeError
            assert store.customers_containing("gone@example.com") == []
            assert store.customer(gone.id) is None
            assert store.customers() == [kept]
            again = store.add_customer("Gone", "gone@example.com", "", "", 3)
            assert store.customers_containing("gone@example.com") == [again]
        finally:
            store.close()

    def test_reset_empties_it(self) -> None:
        store = Store(SandboxConfig())
        try:
            store.add_customer("Ada", "ada@example.com", "", "", 1)
            store.reset()
            assert store.customers() == []
            assert store.customers_containing("ada@example.com") == []
        finally:
            store.close()

    def test_another_writer_on_the_file_is_seen(self, tmp_path: Path) -> None:
        db = tmp_path / "sandbox.db"
        first, second = Store(SandboxConfig(), db), Store(SandboxConfig(), db)
        try:
            ada = first.add_customer("Ada", "ada@example.com", "", "", 1)
            assert second.customers_containing("ada@example.com") == [ada]
            bob = second.add_customer("Bob", "bob@example.com", "", "", 2)
            assert first.customers_containing("bob@example.com") == [bob]
            assert first.customer(bob.id) == bob
            assert first.customers() == [ada, bob]
        finally:
            first.close()
            second.close()


def _scan(
    customers: list[CustomerRecord],
    search: str | None = None,
    with_id: bool = False,
    customer_id: int = 0,
    limit: int = 0,
    newest_first: bool = False,
) -> list[int]:
    """GetCustomers as a full scan: the sandbox's code before the index, kept as the
    reference the indexed answers must equal."""
    if customer_id:
        customers = [c for c in customers if c.id == customer_id]
    if search:
        customers = [
            c for c in customers if _matches(c, search) or (with_id and search.strip() == str(c.id))
        ]
    if newest_first:
        customers = sorted(customers, key=lambda c: (c.created, c.id), reverse=True)
    if limit:
        customers = customers[:limit]
    return [c.id for c in customers]


class TestGetCustomers:
    def test_answers_equal_a_scan(self, sandbox_server: SandboxServer) -> None:
        emails = ["ann@example.com", "joann@example.com", "ANN@EXAMPLE.COM.au", "x@y.z"]
        emails += [f"buyer{i}@example.com" for i in range(120)]
        for i, email in enumerate(emails):
            body = sandbox_server.call(
                "customer/AddCustomer", Name=f"Name {i}", Email=email, CompanyName=f"Co{i % 7}"
            )
            assert body["result"] == 0
        rows = sandbox_server.state()["customers"]
        customers = [CustomerRecord(**row) for row in rows]
        first = customers[0].id
        searches: list[dict[str, Any]] = [
            {"Search": "ann@example.com"},
            {"Search": "Ann@Example.Com"},
            {"Search": "buyer1@example.com"},
            {"Search": "buyer1"},
            {"Search": "co3"},
            {"Search": "x"},
            {"Search": "@"},
            {"Search": "nobody@example.com"},
            {"Search": customers[5].secret.upper()},
            {"Search": f" {first + 3} ", "IncludeIdInSearch": "true"},
            {"Search": str(first + 3)},
            {"Search": f"0{first + 3}", "IncludeIdInSearch": "true"},
            {"Search": "buyer", "Limit": 5, "SortByCreatedDescending": "true"},
            {"Search": "buyer1", "CustomerId": first + 10},
            {"CustomerId": first + 10},
            {"CustomerId": -1},
            {"CustomerId": 10**20},
            {"Search": str(10**20), "IncludeIdInSearch": "true"},
            {"Search": "9" * 5000, "IncludeIdInSearch": "true"},
            {"Limit": 3},
            {},
        ]
        for params in searches:
            found = sandbox_server.call("customer/GetCustomers", **params)
            expected = _scan(
                customers,
                search=params.get("Search"),
                with_id="IncludeIdInSearch" in params,
                customer_id=params.get("CustomerId", 0),
                limit=params.get("Limit", 0),
                newest_first="SortByCreatedDescending" in params,
            )
            assert [c["id"] for c in found["customers"]] == expected, params
