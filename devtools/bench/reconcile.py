"""``bench --reconcile N``: how long ``reconcile`` takes over N licenses, against the
sandbox answering each call after ``latency_ms`` (80 ms: a round trip to Cryptolens).

Seeding does not go through webhooks (100,000 purchases would take longer than what is
measured): the sandbox's store is filled directly (N keys of one product, linked to a
hundred customers, in one SQLite file) and so is a throwaway SQLite database of the
bridge's (per key a license and its done key creation, as the worker leaves them). One
license in a hundred has lost its key in Cryptolens (deleted) and one in a hundred was
blocked by hand there: the run must report exactly those, as ``no_key`` and
``manual_block``.

Then the sandbox runs as its own process on that file (``--latency-ms``, no access log)
and ``bridge.ops.reconcile.reconcile`` runs here, as the command does, with its own
HTTP client; the calls are counted per method at that client. Reported: wall time of the
reconcile alone (seeding excluded), calls per method, licenses per second, and the drift
found beside the drift seeded.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from bridge.core.intents import Effect, Status
from bridge.cryptolens import CryptolensClient, make_http_client
from bridge.ops import reconcile as rc
from bridge.ops.reconcile_compare import Report
from bridge.ops.reconcile_read import CONCURRENCY
from bridge.sandbox.config import DEFAULT_PRODUCT_ID, DEFAULT_TOKEN, SandboxConfig
from bridge.sandbox.store import Store
from bridge.sandbox.store_records import NewKey
from bridge.store.db import make_engine, migrate
from bridge.store.tables import Intent, License
from devtools.bench.stack import Stack
from devtools.procs import free_port

PERIOD = 30  # days
CUSTOMERS = 100
DRIFT_EVERY = 100  # one license in this many is deleted, and one blocked by hand
_BATCH = 10_000


def _deleted(i: int) -> bool:
    return i % DRIFT_EVERY == 0


def _blocked(i: int) -> bool:
    return i % DRIFT_EVERY == DRIFT_EVERY // 2


def seed_sandbox(path: Path, n: int, now: int) -> list[tuple[str, int, int]]:
    """N keys in the sandbox's file, less the deleted ones; per license its key, customer
    and expiry (a deleted license's key is one Cryptolens never had)."""
    store = Store(SandboxConfig(), path)
    try:
        with store.transaction():
            customers = [
                store.add_customer(f"Buyer {c}", f"buyer{c}@example.org", "", "", now).id
                for c in range(min(CUSTOMERS, n))
            ]
            held: list[tuple[str, int, int]] = []
            for i in range(n):
                customer = customers[i % len(customers)]
                if _deleted(i):
                    held.append((f"GONE{i:06d}-BENCH-BENCH-BENCH", customer, now))
                    continue
                spec = NewKey(
                    DEFAULT_PRODUCT_ID,
                    PERIOD,
                    (True,) + (False,) * 7,
                    notes=f"bench {i}",
                    block=_blocked(i),
                    customer_id=customer,
                )
                record = store.new_key(spec, now)
                held.append((record.key, customer, record.expires))
    finally:
        store.close()
    return held


def seed_bridge(url: str, held: list[tuple[str, int, int]], now: int) -> None:
    """Per key, a license and its done key creation (what the worker leaves)."""
    at = datetime.fromtimestamp(now, UTC)
    engine = make_engine(url)
    try:
        for start in range(0, len(held), _BATCH):
            licenses, intents = [], []
            for i in range(start, min(len(held), start + _BATCH)):
                key, customer, expires = held[i]
                ref = f"bench:pi:{i}"
                licenses.append(
                    {
                        "ref": ref,
                        "product_id": DEFAULT_PRODUCT_ID,
                        "template_id": 1,
                        "key": key,
                        "customer_id": customer,
                        "created_at": at,
                    }
                )
                params = {"template_id": 1, "expires_at": expires}
                intents.append(
                    {
                        "id": f"{ref}:create_key",
                        "effect": Effect.CREATE_KEY.value,
                        "license_ref": ref,
                        "params": json.dumps(params),
                        "occurred_at": now,
                        "status": Status.DONE.value,
                        "attempts": 1,
                        "created_at": at,
                        "updated_at": at,
                    }
                )
            with engine.begin() as connection:
                connection.execute(insert(License), licenses)
                connection.execute(insert(Intent), intents)
    finally:
        engine.dispose()


async def _reconcile(url: str, sandbox: str) -> tuple[Report, float, Counter[str]]:
    calls: Counter[str] = Counter()

    async def count(request: httpx.Request) -> None:
        calls[request.url.path.removeprefix("/api/")] += 1

    http = make_http_client(max_connections=CONCURRENCY)
    http.event_hooks["request"].append(count)
    engine = make_engine(url)
    try:
        client = CryptolensClient(http, token=DEFAULT_TOKEN, base_url=sandbox)
        started = time.perf_counter()
        report = await rc.reconcile(engine, client)
        return report, time.perf_counter() - started, calls
    finally:
        await http.aclose()
        engine.dispose()


def run(st: Stack, n: int, *, latency_ms: float) -> dict[str, Any]:
    now = int(time.time())
    started = time.perf_counter()
    held = seed_sandbox(st.workdir / "sandbox.db", n, now)
    url = f"sqlite:///{st.workdir / 'reconcile.db'}"
    migrate(url)
    seed_bridge(url, held, now)
    seeded_in = time.perf_counter() - started

    port = free_port()
    root = f"http://127.0.0.1:{port}"
    args = ["-m", "bridge", "sandbox", "--port", str(port), "--no-access-log"]
    args += ["--db", str(st.workdir / "sandbox.db"), "--latency-ms", str(latency_ms)]
    sandbox = st.python("sandbox", args, dict(os.environ))
    st.wait_http(f"{root}/sandbox/faults", sandbox)
    report, seconds, calls = asyncio.run(_reconcile(url, f"{root}/api/"))
    st.stop(sandbox)

    found = Counter(d.kind for d in report.drift)
    seeded = {
        "manual_block": sum(1 for i in range(n) if _blocked(i)),
        "no_key": sum(1 for i in range(n) if _deleted(i)),
    }
    return {
        "licenses": n,
        "latency_ms": latency_ms,
        "concurrency": CONCURRENCY,
        "seconds": round(seconds, 2),
        "licenses_per_second": round(n / seconds, 1),
        "calls": dict(sorted(calls.items())),
        "calls_total": sum(calls.values()),
        "calls_per_key_would_be": n,
        "checked": report.checked,
        "errors": len(report.errors),
        "drift_found": {kind: found.get(kind, 0) for kind in sorted(found | seeded)},
        "drift_seeded": seeded,
        "seeding_seconds": round(seeded_in, 1),
    }


def report(result: dict[str, Any]) -> str:
    calls = ", ".join(f"{method} {count:,}" for method, count in result["calls"].items())
    as_seeded = "as seeded" if result["drift_found"] == result["drift_seeded"] else "NOT as seeded"
    return (
        f"reconcile of {result['licenses']:,} licenses at {result['latency_ms']:g} ms per call "
        f"({result['concurrency']} in flight): {result['seconds']} s, "
        f"{result['licenses_per_second']:,} licenses/s; {result['calls_total']:,} calls "
        f"({calls}) where one GetKey each would make {result['calls_per_key_would_be']:,}; "
        f"drift {result['drift_found']} ({as_seeded}); {result['errors']} unreadable"
    )
