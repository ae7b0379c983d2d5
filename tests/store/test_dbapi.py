"""Plain-SQL transactions on the driver's connection, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from bridge.store.dbapi import Sql, tx

_INSERT = Sql("INSERT INTO lock (name, owner, until) VALUES (:name, :owner, :until)")
_GET = Sql("SELECT owner, until FROM lock WHERE name = :name {for_update}")


def _owners(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT owner FROM lock ORDER BY name")).scalars())


class TestRender:
    def test_sqlite_keeps_named_parameters_and_drops_row_locks(self) -> None:
        assert _GET.render("sqlite") == "SELECT owner, until FROM lock WHERE name = :name"

    def test_postgresql_gets_pyformat_parameters_and_row_locks(self) -> None:
        assert (
            _GET.render("postgresql")
            == "SELECT owner, until FROM lock WHERE name = %(name)s FOR UPDATE"
        )

    def test_casts_are_not_parameters(self) -> None:
        assert Sql("SELECT :a::text").render("postgresql") == "SELECT %(a)s::text"


class TestTransaction:
    def test_commits_when_the_block_ends(self, engine: Engine) -> None:
        moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        with tx(engine) as t:
            t.run(_INSERT, {"name": "a", "owner": "w1", "until": t.time(moment)})
        with tx(engine) as t:
            row = t.one(_GET, {"name": "a"})
            assert row is not None
            assert row[0] == "w1"
            # Written and read back as SQLAlchemy would: the same instant, aware.
            assert t.read_time(row[1]) == moment

    def test_rolls_back_when_the_block_raises(self, engine: Engine) -> None:
        with pytest.raises(RuntimeError), tx(engine) as t:
            t.run(_INSERT, {"name": "a", "owner": "w1", "until": t.time(datetime.now(UTC))})
            raise RuntimeError("stop")
        assert _owners(engine) == []

    def test_driver_errors_are_sqlalchemy_errors_and_roll_back(self, engine: Engine) -> None:
        now = datetime.now(UTC)
        with pytest.raises(IntegrityError) as caught, tx(engine) as t:
            t.run(_INSERT, {"name": "a", "owner": "w1", "until": t.time(now)})
            t.run(_INSERT, {"name": "a", "owner": "w2", "until": t.time(now)})
        assert isinstance(caught.value, DBAPIError)
        assert _owners(engine) == []
        # The connection went back to the pool usable.
        with tx(engine) as t:
            t.run(_INSERT, {"name": "b", "owner": "w3", "until": t.time(now)})
        assert _owners(engine) == ["w3"]

    def test_all_and_one(self, engine: Engine) -> None:
        now = datetime.now(UTC)
        with tx(engine) as t:
            for name in ("a", "b"):
                t.run(_INSERT, {"name": name, "owner": f"o{name}", "until": t.time(now)})
            rows = t.all(Sql("SELECT name, owner FROM lock ORDER BY name"))
            assert [tuple(r) for r in rows] == [("a", "oa"), ("b", "ob")]
            assert t.one(_GET, {"name": "missing"}) is None
            assert t.run(Sql("DELETE FROM lock WHERE owner = :owner"), {"owner": "oa"}) == 1
