"""The bench's child processes: a load generator and the bare reference endpoint.

Run as ``python -m devtools.loadgen closed|open|bare ...`` so that neither shares a process
(or a core's worth of event loop) with the server it measures. The client speaks just
enough HTTP/1.1 over keep-alive asyncio streams: a general client such as httpx costs
more CPU per request than the bare endpoint does, and would make the bench measure the
client instead of the server. It reads answers by ``content-length`` (Starlette always
sends one) and prints its results as one JSON object on stdout.

What it sends, and how each request is made: ``devtools.loadgen_requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.loadgen_requests import CrmRequests, Requests, UsageRequests

SECRET_ENV = "BENCH_WEBHOOK_SECRET"  # noqa: S105 - a variable name
CRM_SECRET_ENV = "BENCH_CRM_SECRET"  # noqa: S105 - a variable name
USAGE_TOKEN_ENV = "BENCH_USAGE_TOKEN"  # noqa: S105 - a variable name
# The longest a single request may take before the run is called broken.
REQUEST_TIMEOUT = 30.0
# Below uvicorn's keep-alive timeout (5 s), so the server never closes one under us.
IDLE_REUSE = 2.0


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        """Send one request and read its whole answer; returns the status code."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("answer without content-length")
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def closed_loop(
    host: str,
    port: int,
    make: Callable[[int], bytes],
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """``concurrency`` connections, each sending its next request when the last is answered,
    for ``warmup`` seconds unmeasured, then ``seconds`` measured."""
    connections = [await Connection.open(host, port) for _ in range(concurrency)]
    counter = iter(range(10**9))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    answered = 0  # warm-up included: what the server did while it was watched
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    stop = measure_from + seconds

    async def drive(conn: Connection) -> None:
        nonlocal answered
        while True:
            request = make(next(counter))
            sent = loop.time()
            if sent >= stop:
                return
            status = await asyncio.wait_for(conn.send(request), REQUEST_TIMEOUT)
            answered += 1
            done = loop.time()
            if sent >= measure_from and done <= stop:
                latencies.append(done - sent)
                statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(drive(c) for c in connections))
    for conn in connections:
        conn.close()
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": len(latencies),
        "answered": answered,
        "ok": ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "per_second": ok / seconds,
        "latency_ms": {
            "p50": _ms(_percentile(latencies, 50)),
            "p99": _ms(_percentile(latencies, 99)),
            "max": _ms(max(latencies) if latencies else None),
        },
    }


async def open_loop(
    host: str,
    port: int,
    make: Callable[[int], bytes],
    *,
    rate: float,
    seconds: float,
    first: int = 0,
    max_connections: int = 256,
) -> dict[str, Any]:
    """Send at ``rate`` per second whatever the answers, from a pool of keep-alive
    connections (a new one when all are busy, up to ``max_connections``). Each event's
    wall-clock send time goes into the result, for matching with its effects."""
    total = int(rate * seconds)
    # (connection, when it was last answered): uvicorn closes a keep-alive connection
    # idle for 5 s, so connections idle for IDLE_REUSE are closed here first.
    idle: list[tuple[Connection, float]] = []
    opened = 0
    slots = asyncio.Semaphore(max_connections)
    sent_ns: list[int | None] = [None] * total
    acked: list[float | None] = [None] * total
    statuses: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    lag_max = 0.0

    async def one(i: int) -> None:
        nonlocal opened
        request = make(first + i)
        async with slots:
            while idle and loop.time() - idle[-1][1] > IDLE_REUSE:
                idle.pop()[0].close()
            if idle:
                conn = idle.pop()[0]
            else:
                conn = await Connection.open(host, port)
                opened += 1
            started = loop.time()
            sent_ns[i] = time.time_ns()
            status = await asyncio.wait_for(conn.send(request), REQUEST_TIMEOUT)
            acked[i] = loop.time() - started
            idle.append((conn, loop.time()))
        statuses[status] = statuses.get(status, 0) + 1

    tasks: list[asyncio.Task[None]] = []
    start = loop.time()
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag_max = max(lag_max, loop.time() - due)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    for conn, _ in idle:
        conn.close()
    ack = [a for a in acked if a is not None]
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": total,
        "elapsed": elapsed,
        "first": first,
        "connections": opened,
        "schedule_lag_max_ms": _ms(lag_max),
        "statuses": {str(k): v for k, v in statuses.items()},
        "ack_ms": {"p50": _ms(_percentile(ack, 50)), "p99": _ms(_percentile(ack, 99))},
        "sent_ns": sent_ns,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def _bare(request: Request) -> Response:
    await request.body()
    return Response(b'{"received":true}', media_type="application/json")


def bare_app() -> Starlette:
    """The reference: a Starlette endpoint that reads the body and answers 200."""
    return Starlette(
        routes=[
            Route("/webhooks/stripe", _bare, methods=["POST"]),
            Route("/usage", _bare, methods=["POST"]),
        ]
    )


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.loadgen")
    sub = parser.add_subparsers(dest="mode", required=True)
    bare = sub.add_parser("bare", help="serve the bare reference endpoint")
    bare.add_argument("--port", type=int, required=True)
    for name in ("closed", "open"):
        client = sub.add_parser(name)
        client.add_argument("--port", type=int, required=True)
        client.add_argument("--run", required=True, help="id prefix, unique per run")
        client.add_argument("--seconds", type=float, required=True)
        client.add_argument("--kind", choices=["stripe", "crm"], default="stripe")
    sub.choices["closed"].add_argument("--concurrency", type=int, required=True)
    sub.choices["closed"].add_argument("--warmup", type=float, default=1.0)
    sub.choices["closed"].add_argument("--target", choices=["webhook", "usage"], default="webhook")
    sub.choices["closed"].add_argument("--batch", type=int, default=1, help="records (usage)")
    sub.choices["open"].add_argument("--rate", type=float, required=True)
    sub.choices["open"].add_argument("--first", type=int, default=0)
    args = parser.parse_args(argv)
    host = "127.0.0.1"
    if args.mode == "bare":
        from bridge.serve import run

        run(bare_app(), host, args.port)
        return
    make: Callable[[int], bytes]
    if getattr(args, "target", "webhook") == "usage":
        make = UsageRequests(host, args.port, args.run, os.environ[USAGE_TOKEN_ENV], args.batch)
    elif args.kind == "crm":
        make = CrmRequests(host, args.port, args.run, os.environ[CRM_SECRET_ENV])
    else:
        make = Requests(host, args.port, args.run, os.environ[SECRET_ENV])
    if args.mode == "closed":
        result = _run(
            closed_loop(
                host,
                args.port,
                make,
                concurrency=args.concurrency,
                seconds=args.seconds,
                warmup=args.warmup,
            )
        )
    else:
        result = _run(
            open_loop(host, args.port, make, rate=args.rate, seconds=args.seconds, first=args.first)
        )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
