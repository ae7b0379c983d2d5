"""The store's analytics: registered events and the Web API Log, read a page at a time."""

from __future__ import annotations

from typing import Any

from bridge.sandbox.store_records import KeyRecord, Page, Paged
from bridge.sandbox.store_schema import Database

_TIME_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "="}


class AnalyticsStore(Database):
    def add_event(self, event: dict[str, Any]) -> int:
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO events (product_id, key, machine_code, feature_name, event_name,"
                " value, currency, metadata, time) VALUES (:product_id, :key, :machine_code,"
                " :feature_name, :event_name, :value, :currency, :metadata, :time)",
                event,
            )
        return int(cursor.lastrowid or 0)

    def log(
        self,
        record: KeyRecord | None,
        state: int,
        ip: str,
        now: int,
        *,
        product_id: int = 0,
        do_id: int = 0,
        do_int_value: int = 0,
    ) -> None:
        """A Web API Log entry about ``record``, or about no key (``product_id``, if any)."""
        if record is not None:
            product_id = record.product_id
        with self.transaction():
            self._db.execute(
                "INSERT INTO web_api_log (product_id, key, ip, time, state, machine_code,"
                " friendly_name, do_id, do_int_value) VALUES (?, ?, ?, ?, ?, '', '', ?, ?)",
                (product_id, record.key if record else "", ip, now, state, do_id, do_int_value),
            )

    def page(self, table: Paged, query: Page) -> list[dict[str, Any]]:
        """Rows after ``starting_after`` ascending, or before ``ending_before`` descending
        (the service orders by id descending when EndingBefore is given)."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in query.equals.items():
            where.append(f"{column} = ?")
            args.append(value)
        if query.starting_after:
            where.append(f"{query.cursor} > ?")
            args.append(query.starting_after)
        if query.ending_before:
            where.append(f"{query.cursor} < ?")
            args.append(query.ending_before)
        for op, value in (query.time or {}).items():
            where.append(f"time {_TIME_OPS[op]} ?")
            args.append(value)
        if query.contains:
            column, text = query.contains
            where.append(f"instr(lower({column}), ?) > 0")
            args.append(text.lower())
        if query.states is not None:
            where.append(f"state IN ({', '.join('?' * len(query.states))})")
            args.extend(query.states)
        sql = f"SELECT * FROM {table}"  # noqa: S608 - table, columns and ops are our constants
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if query.ending_before else "ASC"
        sql += f" ORDER BY {query.cursor} {order}, id {order} LIMIT ?"
        args.append(query.limit)
        with self.transaction():
            return [dict(row) for row in self._db.execute(sql, args).fetchall()]
