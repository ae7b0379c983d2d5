"""The store's customers: in SQL, and kept in memory too (see
:class:`~bridge.sandbox.customer_index.CustomerIndex`)."""

from __future__ import annotations

import secrets

from bridge.sandbox.customer_index import CustomerIndex
from bridge.sandbox.store_records import SQLITE_INTEGERS, CustomerRecord
from bridge.sandbox.store_schema import Database


class CustomerStore(Database):
    def add_customer(
        self, name: str, email: str, company_name: str, notes: str, now: int
    ) -> CustomerRecord:
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO customers (name, email, company_name, created, secret, notes)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, email, company_name, now, secrets.token_hex(16), notes),
            )
            # Read back, so the record holds what SQLite stored.
            found = self._db.execute(
                "SELECT * FROM customers WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
            customer = CustomerRecord(**dict(found))
            if self._customers is not None:
                self._customers.add(customer)
        return customer

    def customer(self, customer_id: int) -> CustomerRecord | None:
        if customer_id not in SQLITE_INTEGERS:
            # What the SQL lookup this replaced did (an HTTP 500), so no answer changes.
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        with self.transaction():
            return self._customer_index().get(customer_id)

    def customers(self) -> list[CustomerRecord]:
        """Every customer, in id order."""
        with self.transaction():
            return self._customer_index().all()

    def customers_containing(self, needle: str) -> list[CustomerRecord]:
        """A superset, in id order, of the customers with ``needle`` (lower-cased) in their
        name, company name, email or secret, lower-cased (``CustomerIndex.containing``)."""
        with self.transaction():
            return self._customer_index().containing(needle)

    def _customer_index(self) -> CustomerIndex:
        # A file may have a second writer (another sandbox on it); SQLite's data_version
        # changes when another connection commits, and a rebuild then picks that up.
        # A memory database is this connection's alone.
        if self.path is not None:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                self._customers, self._data_version = None, version
        if self._customers is None:
            index = CustomerIndex()
            for row in self._db.execute("SELECT * FROM customers ORDER BY id"):
                index.add(CustomerRecord(**dict(row)))
            self._customers = index
        return self._customers
