"""``bench --retention N``: webhook latency while the worker's pruning runs.

A throwaway SQLite database is seeded with N old deliveries (bodies of about 3 KB with a
buyer in them, each with its done key creation), then ``serve`` runs on it and the load
generator posts new deliveries, closed loop, twice for ``seconds``: once alone, once
while this process prunes (``bridge.store.retention.prune_batch``, batch after batch
with the worker's rests between them, ``rest_after``). Reported: the acknowledgement latency
(p50, p99, max) and acks/s of both turns, the deliveries pruned during the second and
how much of it the pruning covered.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from bridge.store import retention
from bridge.store.db import make_engine, migrate
from bridge.store.tables import Intent, WebhookEvent, utcnow
from devtools import loadgen_requests
from devtools.bench.stack import CONFIG, Stack, bridge_env, run_loadgen
from devtools.procs import free_port

_SEED_BATCH = 5_000


def seed(database_url: str, n: int) -> None:
    """N deliveries received 100 days ago, each with its done key creation."""
    engine = make_engine(database_url)
    at = utcnow() - timedelta(days=100)
    now = int(time.time())
    try:
        with engine.begin() as c:
            for start in range(0, n, _SEED_BATCH):
                events, intents = [], []
                for i in range(start, min(n, start + _SEED_BATCH)):
                    body = loadgen_requests.checkout_event("old", i, now)
                    body["data"]["object"]["customer_details"] = {
                        "email": f"buyer{i}@example.com",
                        "name": f"Buyer {i}",
                        "address": {"line1": f"{i} Bench Street", "city": "Berlin"},
                    }
                    events.append(
                        {
                            "id": i + 1,
                            "provider": "stripe",
                            "external_id": body["id"],
                            "type": body["type"],
                            "livemode": False,
                            "payload": json.dumps(body),
                            "received_at": at,
                            "outcome": "planned",
                        }
                    )
                    params = {"customer": {"email": f"buyer{i}@example.com", "name": f"Buyer {i}"}}
                    intents.append(
                        {
                            "id": f"stripe:pi:old{i}:create_key",
                            "effect": "create_key",
                            "license_ref": f"stripe:pi:old{i}",
                            "params": json.dumps(params),
                            "occurred_at": now,
                            "status": "done",
                            "attempts": 1,
                            "result": "{}",
                            "event_id": i + 1,
                            "created_at": at,
                            "updated_at": at,
                        }
                    )
                c.execute(insert(WebhookEvent), events)
                c.execute(insert(Intent), intents)
    finally:
        engine.dispose()


def run(st: Stack, n: int, *, seconds: float, concurrency: int) -> dict[str, Any]:
    config = st.workdir / "bridge.toml"
    config.write_text(CONFIG)
    database_url = f"sqlite:///{st.workdir / 'retention.db'}"
    migrate(database_url)
    seeded_from = time.perf_counter()
    seed(database_url, n)
    seeding = time.perf_counter() - seeded_from
    env = bridge_env(database_url, f"{st.start_redis()}/0", config, "http://127.0.0.1:9/api/")
    port = free_port()
    web = st.python("retention-web", ["-m", "bridge", "serve", "--port", str(port)], env)
    st.wait_http(f"http://127.0.0.1:{port}/healthz", web)

    def load(run_id: str) -> dict[str, Any]:
        args = ["closed", "--port", str(port), "--run", run_id, "--kind", "stripe"]
        return run_loadgen(
            st, [*args, "--seconds", str(seconds), "--concurrency", str(concurrency)]
        )

    alone = load("ra")
    engine = make_engine(database_url)
    stop = threading.Event()
    pruned: dict[str, float] = {"events": 0, "batches": 0, "seconds": 0.0}

    def prune() -> None:
        started = time.perf_counter()
        while not stop.is_set():
            began = time.perf_counter()
            batch = retention.prune_batch(engine, now=utcnow(), days=90)
            if batch.empty:
                break
            pruned["events"] += batch.events
            pruned["batches"] += 1
            time.sleep(retention.rest_after(time.perf_counter() - began))  # as the worker
        pruned["seconds"] = time.perf_counter() - started

    pruner = threading.Thread(target=prune)
    pruner.start()
    during = load("rb")
    stop.set()
    pruner.join()
    engine.dispose()
    window = during["seconds"] + 1.0  # the load generator's warm-up included
    return {
        "deliveries_seeded": n,
        "seeding_seconds": round(seeding, 1),
        "concurrency": concurrency,
        "alone": _turn(alone),
        "while_pruning": _turn(during),
        "pruned": int(pruned["events"]),
        "batches": int(pruned["batches"]),
        "batch_size": retention.BATCH,
        "pruning_seconds": round(pruned["seconds"], 2),
        "pruning_covered": round(min(pruned["seconds"] / window, 1.0), 2),
    }


def _turn(result: dict[str, Any]) -> dict[str, Any]:
    return {"acks_per_second": round(result["per_second"]), **result["latency_ms"]}


def report(result: dict[str, Any]) -> str:
    alone, during = result["alone"], result["while_pruning"]
    return (
        f"{result['deliveries_seeded']:,} old deliveries; concurrency {result['concurrency']}\n"
        f"alone:         p50 {alone['p50']} ms, p99 {alone['p99']} ms, max {alone['max']} ms,"
        f" {alone['acks_per_second']:,} acks/s\n"
        f"while pruning: p50 {during['p50']} ms, p99 {during['p99']} ms, max {during['max']} ms,"
        f" {during['acks_per_second']:,} acks/s\n"
        f"pruned {result['pruned']:,} deliveries in {result['batches']:,} batches of up to"
        f" {result['batch_size']} in {result['pruning_seconds']} s"
        f" (covering {result['pruning_covered']:.0%} of the measured turn)"
    )
