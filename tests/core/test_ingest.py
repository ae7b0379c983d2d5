"""The body every webhook endpoint reads: bounded, declared or streamed, and a client that
goes away refused without a body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridge.core.ingest import Refusal, read_body


def scope(length: int | None = None) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http", "headers": headers}


def messages(*items: dict[str, Any]) -> tuple[Callable[[], Awaitable[dict[str, Any]]], list[int]]:
    """A receive() that hands out ``items`` in order, and how many it handed out."""
    queue = list(items)
    taken = [0]

    async def receive() -> dict[str, Any]:
        taken[0] += 1
        return queue.pop(0)

    return receive, taken


def chunk(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_chunks_are_joined_in_order() -> None:
    receive, _ = messages(chunk(b'{"a":', True), chunk(b" 1", True), chunk(b"}"))
    assert await read_body(scope(), receive, 100) == b'{"a": 1}'


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    receive, taken = messages(chunk(b"x" * 10))
    with pytest.raises(Refusal) as refused:
        await read_body(scope(length=101), receive, 100)
    assert (refused.value.status, refused.value.error) == (413, "too_large")
    assert taken == [0]


async def test_a_stream_past_the_limit_is_refused_at_the_chunk_that_crosses_it() -> None:
    receive, taken = messages(chunk(b"x" * 60, True), chunk(b"x" * 60, True), chunk(b"x"))
    with pytest.raises(Refusal) as refused:
        await read_body(scope(), receive, 100)
    assert refused.value.status == 413
    assert taken == [2]  # the third chunk is never read


async def test_a_client_gone_mid_body_gets_an_empty_refusal() -> None:
    receive, _ = messages(chunk(b"x", True), {"type": "http.disconnect"})
    with pytest.raises(Refusal) as refused:
        await read_body(scope(), receive, 100)
    assert (refused.value.status, refused.value.error) == (400, "")
    assert refused.value.cause == ""
