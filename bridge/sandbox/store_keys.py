"""The store's license keys: made from a template or CreateKey's parameters, read,
changed, and their recorded usage."""

from __future__ import annotations

import secrets
import sqlite3
import string
import time
from typing import Any

from bridge.sandbox.config import Template
from bridge.sandbox.store_data_objects import DataObjectStore
from bridge.sandbox.store_records import KEY, KeyRecord, NewKey

# Bytes below this are uniform modulo 26; the rest are drawn again.
_LETTER_BYTES = 256 // 26 * 26


def _new_key_string() -> str:
    """20 letters, each uniform and independent (as ``secrets.choice`` would give), from
    one read of the OS's generator rather than one per letter."""
    letters = ""
    while len(letters) < 20:
        letters += "".join(
            string.ascii_uppercase[b % 26] for b in secrets.token_bytes(24) if b < _LETTER_BYTES
        )
    return "-".join(letters[i : i + 5] for i in range(0, 20, 5))


def subscription_item_for(global_id: int) -> str:
    """The id of the Stripe subscription item a key is linked to when none is given."""
    return f"si_sandbox{global_id}"


class KeyStore(DataObjectStore):
    """Keys (a template's keys come with its data objects, hence the base)."""

    def create_key(self, template: Template, now: int) -> KeyRecord:
        """A key as CreateKeyFromTemplate makes it: the template's parameters, and a v2
        template's data objects."""
        spec = NewKey(
            product_id=template.product_id,
            period=template.period,
            features=template.features,
            notes=template.notes,
            max_no_of_machines=template.max_no_of_machines,
            trial_activation=template.trial_activation,
            template_id=template.id,
            subscription=template.subscription,
        )
        with self.transaction():
            record = self.new_key(spec, now)
            for obj in template.data_objects:
                self.add_data_object(
                    KEY, record.global_id, obj.name, obj.string_value, obj.int_value
                )
        return record

    def new_key(self, spec: NewKey, now: int) -> KeyRecord:
        """A new key of ``spec``, numbered per product (MAX(id) + 1) as the service does."""
        features = sum(1 << i for i, on in enumerate(spec.features) if on)
        with self.transaction():
            row = self._db.execute(
                "SELECT COALESCE(MAX(id), 0) + 1 FROM keys WHERE product_id = ?",
                (spec.product_id,),
            ).fetchone()
            while True:
                key = _new_key_string()
                try:
                    cursor = self._db.execute(
                        "INSERT INTO keys (product_id, id, key, created, expires, period,"
                        " features, notes, block, customer_id, max_no_of_machines,"
                        " trial_activation, template_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            spec.product_id,
                            row[0],
                            key,
                            now,
                            now + spec.period * 86400,
                            spec.period,
                            features,
                            spec.notes,
                            int(spec.block),
                            spec.customer_id,
                            spec.max_no_of_machines,
                            int(spec.trial_activation),
                            spec.template_id,
                        ),
                    )
                    break
                except sqlite3.IntegrityError:  # the one-in-26^20 collision
                    continue
            self._db.execute(
                "INSERT INTO key_created_ns (global_id, ns) VALUES (?, ?)",
                (cursor.lastrowid, time.time_ns()),
            )
            if spec.subscription:
                self._db.execute(
                    "UPDATE keys SET subscription_item = ? WHERE global_id = ?",
                    (subscription_item_for(int(cursor.lastrowid or 0)), cursor.lastrowid),
                )
            record = self.key_by_id(int(cursor.lastrowid or 0))
        assert record is not None
        return record

    def product_keys(
        self, product_id: int, offset: int = 0, limit: int | None = None
    ) -> list[KeyRecord]:
        """The product's keys in id order, ``limit`` of them from ``offset`` (all: None).
        GetKeys with a search query filters them all in Python; without one it reads a
        page here, so paging through 100,000 keys is not 1,000 reads of all of them."""
        with self.transaction():
            rows = self._db.execute(
                "SELECT * FROM keys WHERE product_id = ? ORDER BY id LIMIT ? OFFSET ?",
                (product_id, -1 if limit is None else limit, offset),
            ).fetchall()
        return [KeyRecord(**dict(row)) for row in rows]

    def count_product_keys(self, product_id: int) -> int:
        with self.transaction():
            row = self._db.execute(
                "SELECT COUNT(*) FROM keys WHERE product_id = ?", (product_id,)
            ).fetchone()
        return int(row[0])

    def key_by_id(self, global_id: int) -> KeyRecord | None:
        with self.transaction():
            row = self._db.execute("SELECT * FROM keys WHERE global_id = ?", (global_id,))
            found = row.fetchone()
        return KeyRecord(**dict(found)) if found else None

    def find_key(self, product_id: int, key: str) -> KeyRecord | None:
        with self.transaction():
            found = self._db.execute(
                "SELECT * FROM keys WHERE product_id = ? AND key = ?", (product_id, key)
            ).fetchone()
        return KeyRecord(**dict(found)) if found else None

    def update_key(self, record: KeyRecord, **changes: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in changes)
        with self.transaction():
            self._db.execute(
                f"UPDATE keys SET {columns} WHERE global_id = ?",  # noqa: S608 - our names
                (*changes.values(), record.global_id),
            )

    def record_usage(self, record: KeyRecord, amount: int, now: int) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE keys SET usage = usage + ? WHERE global_id = ?",
                (amount, record.global_id),
            )
            self._db.execute(
                "INSERT INTO usage_records (product_id, key, amount, time) VALUES (?, ?, ?, ?)",
                (record.product_id, record.key, amount, now),
            )

    def link_subscription_item(self, record: KeyRecord, item: str | None) -> None:
        self.update_key(record, subscription_item=item)
