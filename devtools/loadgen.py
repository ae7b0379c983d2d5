"""The bench's child processes: a load generator and the bare reference endpoint.

Run as ``python -m devtools.loadgen closed|open|bare ...`` so that neither shares a process
(or a core's worth of event loop) with the server it measures. The client speaks just
enough HTTP/1.1 over keep-alive asyncio streams: a general client such as httpx costs
more CPU per request than the bare endpoint does, and would make the bench measure the
client instead of the server. It reads answers by ``content-length`` (Starlette always
sends one) and prints its results as one JSON object on stdout.

Events are one-off Checkout payments, each with its own event id, session, payment
intent and customer, so every request implies new intents; bodies have the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.core.signing import sign

SECRET_ENV = "BENCH_WEBHOOK_SECRET"  # noqa: S105 - a variable name
CRM_SECRET_ENV = "BENCH_CRM_SECRET"  # noqa: S105 - a variable name
# The longest a single request may take before the run is called broken.
REQUEST_TIMEOUT = 30.0
# Below uvicorn's keep-alive timeout (5 s), so the server never closes one under us.
IDLE_REUSE = 2.0


def checkout_event(run: str, n: int, now: int) -> dict[str, Any]:
    """A paid one-off Checkout Session event; ``n`` makes every id in it unique."""
    suffix = f"{run}{n:08d}"
    return {
        "id": f"evt_bench{suffix}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": f"cs_test_bench{suffix}",
                "object": "checkout.session",
                "amount_subtotal": 1099,
                "amount_total": 1099,
                "automatic_tax": {"enabled": False, "liability": None, "status": None},
                "cancel_url": "https://example.com/cancel",
                "client_reference_id": None,
                "client_secret": None,
                "created": now,
                "currency": "usd",
                "custom_fields": [],
                "customer": None,
                "customer_creation": "if_required",
                "customer_details": {
                    "address": None,
                    "email": f"buyer{suffix}@example.com",
                    "name": f"Buyer {suffix}",
                    "phone": None,
                    "tax_exempt": "none",
                    "tax_ids": [],
                },
                "customer_email": None,
                "expires_at": now + 86400,
                "invoice": None,
                "livemode": False,
                "locale": None,
                "metadata": {},
                "mode": "payment",
                "payment_intent": payment_intent(run, n),
                "payment_link": None,
                "payment_method_types": ["card"],
                "payment_status": "paid",
                "shipping_address_collection": None,
                "status": "complete",
                "submit_type": None,
                "subscription": None,
                "success_url": "https://example.com/success",
                "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
                "ui_mode": "hosted",
                "url": None,
            }
        },
    }


def payment_intent(run: str, n: int) -> str:
    return f"pi_bench{run}{n:08d}"


def license_ref(run: str, n: int) -> str:
    """The license the bridge keys a one-off payment by (see ``stripe_plan._checkout``)."""
    return f"stripe:pi:{payment_intent(run, n)}"


class Requests:
    """Signed webhook requests, made on demand (signing happens at send time, as Stripe's)."""

    def __init__(self, host: str, port: int, run: str, secret: str) -> None:
        self.head = f"POST /webhooks/stripe HTTP/1.1\r\nHost: {host}:{port}\r\n"
        self.run = run
        self.secret = secret

    def __call__(self, n: int) -> bytes:
        now = int(time.time())
        body = json.dumps(checkout_event(self.run, n, now), separators=(",", ":")).encode()
        return (
            f"{self.head}Content-Type: application/json\r\n"
            f"Stripe-Signature: {sign(body, self.secret, now)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body


def deal_event(run: str, n: int, now: int) -> dict[str, Any]:
    """A won deal of the generic CRM contract (``docs/crm-contract.md``), one per ``n``."""
    return {
        "id": f"evt_{run}_{n}",
        "occurred_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "type": "deal.won",
        "deal": {"id": f"{run}-{n}", "amount": "25.30", "currency": "EUR"},
        "customer": {"email": f"buyer-{run}-{n}@example.com", "name": "Bench Buyer"},
    }


CRM_SOURCE = "bench"


class CrmRequests(Requests):
    """Signed contract deliveries to ``POST /webhooks/crm/bench`` (X-Bridge-Signature)."""

    def __init__(self, host: str, port: int, run: str, secret: str) -> None:
        super().__init__(host, port, run, secret)
        self.head = f"POST /webhooks/crm/{CRM_SOURCE} HTTP/1.1\r\nHost: {host}:{port}\r\n"

    def __call__(self, n: int) -> bytes:
        now = int(time.time())
        body = json.dumps(deal_event(self.run, n, now), separators=(",", ":")).encode()
        return (
            f"{self.head}Content-Type: application/json\r\n"
            f"X-Bridge-Signature: {sign(body, self.secret, now)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body


USAGE_TOKEN_ENV = "BENCH_USAGE_TOKEN"  # noqa: S105 - a variable name
USAGE_PRODUCT = 1001
USAGE_KEYS = 16


class UsageRequests:
    """``POST /usage`` requests of ``batch`` records each, over ``USAGE_KEYS`` keys; every
    record has its own idempotency key, so each one is new to the ledger."""

    def __init__(self, host: str, port: int, run: str, token: str, batch: int) -> None:
        self.head = (
            f"POST /usage HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        )
        self.run = run
        self.batch = batch

    def __call__(self, n: int) -> bytes:
        records = [
            {
                "key": f"BENCH-{self.run}-{(n * self.batch + i) % USAGE_KEYS}",
                "product_id": USAGE_PRODUCT,
                "quantity": 1,
                "idempotency_key": f"{self.run}-{n}-{i}",
                "timestamp": "2026-12-01T14:00:00Z",
            }
            for i in range(self.batch)
        ]
        body = json.dumps(records[0] if self.batch == 1 else records).encode()
        return (
            f"{self.head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body


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
