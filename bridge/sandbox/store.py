"""The sandbox's state: one SQLite database, in memory unless a file is given.

One code path for both modes, so a test of the file mode also tests the memory mode.
Every id is an AUTOINCREMENT key, so ids only grow, across restarts and resets alike:
a client that keeps a ``StartingAfter`` cursor never sees an id twice.

Its parts, one a concept: :mod:`~bridge.sandbox.store_schema` (the schema, the
connection and its transactions), :mod:`~bridge.sandbox.store_keys`,
:mod:`~bridge.sandbox.store_data_objects`, :mod:`~bridge.sandbox.store_customers`,
:mod:`~bridge.sandbox.store_analytics` (events and the Web API Log) and
:mod:`~bridge.sandbox.store_inspection` (call counts and snapshots); the rows they hold
are in :mod:`~bridge.sandbox.store_records`.
"""

from __future__ import annotations

from pathlib import Path

from bridge.sandbox.config import SandboxConfig
from bridge.sandbox.store_analytics import AnalyticsStore
from bridge.sandbox.store_customers import CustomerStore
from bridge.sandbox.store_inspection import InspectionStore
from bridge.sandbox.store_keys import KeyStore
from bridge.sandbox.store_schema import TABLES


class Store(KeyStore, CustomerStore, AnalyticsStore, InspectionStore):
    def __init__(self, config: SandboxConfig, db_path: Path | None = None) -> None:
        self.config = config
        super().__init__(db_path)
        with self.transaction():
            self._create()
            self._seed()

    def _seed(self) -> None:
        if self._db.execute("SELECT COUNT(*) FROM customers").fetchone()[0]:
            return
        for customer in self.config.customers:
            self.add_customer(customer.name, customer.email, customer.company_name, "", 0)

    def reset(self) -> None:
        with self.transaction():
            for table in TABLES:
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - constant names
            self._customers = None
            self._seed()
