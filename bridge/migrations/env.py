"""Alembic environment: migrations run from ``cryptolens-bridge migrate`` (and ``dev``)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import bridge.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from bridge.store.db import make_engine

target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
