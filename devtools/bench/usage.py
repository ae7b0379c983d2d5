"""``cryptolens-bridge bench --usage``: usage records accepted per second, and one call
per key and window.

1. Ingest: ``POST /usage`` records accepted per second, closed loop, beside the bare
   endpoint (same uvicorn options, client and bodies), in turns as the webhook ingest
   (``devtools.bench``); one record per request, then batches of ``--usage-batch``.
2. Aggregation: with web, worker and sandbox running, ``--usage-records`` records for each
   of a few keys arrive in one window; each key's records must become one RecordUsage
   call, and the sandbox's usage totals must equal what was posted.
"""

from __future__ import annotations

import time
from typing import Any

import click
import httpx

from bridge.store.db import migrate
from devtools import loadgen
from devtools.bench.stack import Stack, bridge_env, cpu_seconds, median, run_loadgen, summary
from devtools.procs import START_TIMEOUT, free_port

TOKEN = "bench-usage-token-not-a-secret-0001"  # noqa: S105 - local bench only
CONFIG = """[stripe]
default_template_id = 1

[[usage.product]]
id = 1001
sink = "cryptolens"
window_seconds = 2
"""
KEYS = 4


def _env(st: Stack, name: str, redis_url: str, sandbox: str) -> dict[str, str]:
    config = st.workdir / "usage.toml"
    config.write_text(CONFIG)
    database_url = f"sqlite:///{st.workdir / f'{name}.db'}"
    migrate(database_url)
    env = bridge_env(database_url, redis_url, config, sandbox)
    env["BRIDGE_USAGE_TOKENS"] = TOKEN
    return env


def ingest(
    st: Stack, redis_url: str, *, seconds: float, concurrency: int, rounds: int, batch: int
) -> dict[str, Any]:
    env = _env(st, "usage-ingest", f"{redis_url}/2", "http://127.0.0.1:9/api/")
    servers: dict[str, tuple[int, Any]] = {}
    for name, args in (
        ("bare", ["-m", "devtools.loadgen", "bare"]),
        ("bridge", ["-m", "bridge", "serve"]),
    ):
        port = free_port()
        proc = st.python(f"usage-{name}", [*args, "--port", str(port)], env)
        st.wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        servers[name] = (port, proc)
    results: dict[str, Any] = {}
    for size in sorted({1, batch}):
        turns: list[dict[str, Any]] = []
        for n in range(rounds):
            turn: dict[str, Any] = {}
            for name, (port, proc) in servers.items():
                load = ["closed", "--port", str(port), "--run", f"u{name[0]}{size}r{n}"]
                load += ["--seconds", str(seconds), "--concurrency", str(concurrency)]
                load += ["--target", "usage", "--batch", str(size)]
                before = cpu_seconds(proc.pid)
                turn[name] = run_loadgen(st, load, {loadgen.USAGE_TOKEN_ENV: TOKEN})
                after = cpu_seconds(proc.pid)
                answered = turn[name]["answered"]
                if before is not None and after is not None and answered:
                    turn[name]["cpu_us_per_request"] = (after - before) * 1e6 / answered
            bare = turn["bare"]["per_second"]
            turn["ratio"] = turn["bridge"]["per_second"] / bare if bare else None
            turns.append(turn)
        bridge = summary([t["bridge"] for t in turns])
        results[f"batch_{size}"] = {
            "rounds": turns,
            "bare": summary([t["bare"] for t in turns]),
            "bridge": bridge,
            "records_per_second": (bridge["per_second"] or 0) * size,
            "ratio": median([t["ratio"] for t in turns if t["ratio"] is not None]),
        }
    for _, proc in servers.values():
        st.stop(proc)
    return results


def aggregation(st: Stack, redis_url: str, *, records: int, settle: float) -> dict[str, Any]:
    """``records`` records per key, all in one window: one RecordUsage per key."""
    sandbox_port, web_port = free_port(), free_port()
    root = f"http://127.0.0.1:{sandbox_port}"
    env = _env(st, "usage-aggregation", f"{redis_url}/3", f"{root}/api/")
    sandbox = st.python(
        "usage-sandbox", ["-m", "bridge", "sandbox", "--port", str(sandbox_port)], env
    )
    st.wait_http(f"{root}/sandbox/faults", sandbox)
    web = st.python("usage-web", ["-m", "bridge", "serve", "--port", str(web_port)], env)
    st.wait_http(f"http://127.0.0.1:{web_port}/healthz", web)
    worker = st.python("usage-worker", ["-m", "bridge", "worker"], env)
    with httpx.Client(timeout=30) as http:
        keys = []
        for _ in range(KEYS):
            made = http.post(
                f"{root}/api/key/CreateKeyFromTemplate",
                data={"token": env["CRYPTOLENS_TOKEN"], "LicenseTemplateId": 1},
            ).json()
            http.post(
                f"{root}/sandbox/subscription-items",
                json={"product_id": 1001, "key": made["key"]},
            ).raise_for_status()
            keys.append(made["key"])
        posted = 0
        for k, key in enumerate(keys):
            for start in range(0, records, 1000):
                batch = [
                    {
                        "key": key,
                        "product_id": 1001,
                        "quantity": 1,
                        "idempotency_key": f"agg-{k}-{n}",
                        "timestamp": "2026-12-01T14:00:00Z",
                    }
                    for n in range(start, min(records, start + 1000))
                ]
                answer = http.post(
                    f"http://127.0.0.1:{web_port}/usage",
                    json=batch,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ).json()
                posted += answer["accepted"]
        deadline = time.monotonic() + settle
        while True:
            state = http.get(f"{root}/sandbox/state").json()
            if sum(state["usage"].values()) >= posted or time.monotonic() > deadline:
                break
            if worker.poll() is not None:
                raise click.ClickException("the worker stopped; see its log")
            time.sleep(0.2)
    calls = state["calls"].get("subscription/RecordUsage", {}).get("received", 0)
    return {
        "keys": KEYS,
        "records_per_key": records,
        "records_accepted": posted,
        "record_usage_calls": calls,
        "usage_recorded": sum(state["usage"].values()),
        "window_seconds": 2,
        "settle_timeout": settle or START_TIMEOUT,
    }
