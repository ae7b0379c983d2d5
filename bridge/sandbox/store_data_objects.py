"""The store's data objects: named integers and strings on the user, a product or a key."""

from __future__ import annotations

from typing import Any

from bridge.sandbox.store_records import SQLITE_INTEGERS, DataObjectRecord
from bridge.sandbox.store_schema import Database


class DataObjectStore(Database):
    def add_data_object(
        self,
        referencer_type: int,
        referencer_id: int,
        name: str | None,
        string_value: str | None,
        int_value: int,
    ) -> DataObjectRecord:
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO data_objects (referencer_type, referencer_id, name, string_value,"
                " int_value) VALUES (?, ?, ?, ?, ?)",
                (referencer_type, referencer_id, name, string_value, int_value),
            )
            found = self.data_object(int(cursor.lastrowid or 0))
        assert found is not None
        return found

    def data_object(self, object_id: int) -> DataObjectRecord | None:
        if object_id not in SQLITE_INTEGERS:
            return None  # no data object has such an id
        with self.transaction():
            row = self._db.execute("SELECT * FROM data_objects WHERE id = ?", (object_id,))
            found = row.fetchone()
        return DataObjectRecord(**dict(found)) if found else None

    def data_objects(
        self, referencer: tuple[int, int] | None = None, contains: str | None = None
    ) -> list[DataObjectRecord]:
        """The data objects of one referencer (type, id), or all; in id order. ``contains``
        keeps those whose name contains it, ignoring case."""
        where: list[str] = []
        args: list[Any] = []
        if referencer is not None:
            where.append("referencer_type = ? AND referencer_id = ?")
            args.extend(referencer)
        if contains:
            where.append("instr(lower(COALESCE(name, '')), ?) > 0")
            args.append(contains.lower())
        sql = "SELECT * FROM data_objects"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self.transaction():
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [DataObjectRecord(**dict(row)) for row in rows]

    def count_data_objects(self) -> int:
        with self.transaction():
            return int(self._db.execute("SELECT COUNT(*) FROM data_objects").fetchone()[0])

    def update_data_object(self, record: DataObjectRecord, **changes: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in changes)
        with self.transaction():
            self._db.execute(
                f"UPDATE data_objects SET {columns} WHERE id = ?",  # noqa: S608 - our names
                (*changes.values(), record.id),
            )

    def remove_data_object(self, record: DataObjectRecord) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM data_objects WHERE id = ?", (record.id,))
