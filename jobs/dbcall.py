"""Calling the worker's database functions from its event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from bridge.store.db import Engine, is_sqlite

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store function: in a thread, or inline when its engine is SQLite.

    SQLite is a local file with one writer at a time (one lock per process, see
    ``bridge.store.db``): a thread buys no parallelism there, and each hop back costs a
    turn of a busy event loop, which stretches every section held under a lease (a
    product's key creation above all) and with it the latency of every job behind it.
    """
    if args and isinstance(args[0], Engine) and is_sqlite(args[0]):
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
