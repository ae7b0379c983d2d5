"""``cryptolens-bridge bench --starts N``: how long a subscription's buyer waits for the key.

N subscriptions start at once (the chaos workload's: templates named by metadata on the
session and the subscription, by a price mapping, by price metadata over the mapping, or
by nobody). Each one's three start events are posted ``--start-gap`` seconds apart, in one
of the six orders (taken in turn), as Stripe delivers them in no fixed order. Two runs on
the same events: the worker with ``STRIPE_API_KEY``, asking a Stripe stand-in
(``devtools.stripe_standin``, answering after ``--stripe-latency-ms``), and without
it. The figure: per subscription, the time from posting its first start event to its key
in the bridge's ``license`` table (polled every 10 ms), median and worst; with the key
the target is one second plus the Cryptolens round trips, in any order. Each key must
be of its purchase's template in both runs (the same answer, asked or waited for).

Every process runs on its own, as in ``devtools.bench``; the database is a SQLite file.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine, text

from bridge.core.signing import sign
from bridge.store.db import migrate
from devtools import loadgen_requests, workload
from devtools.bench.stack import SECRET, Stack, bridge_env
from devtools.procs import free_port

_POLL = 0.01
_ORDERS = list(itertools.permutations(("checkout", "subscription", "invoice")))
_API_KEY = "sk_test_bench_standin_0001"  # the stand-in checks no key


def _starts(n: int, now: int) -> tuple[list[dict[str, dict[str, Any]]], dict[str, int]]:
    """Each subscription's three start events by name, and each ref's template."""
    load = workload.build(seed=1, now=now, one_offs=0, subscriptions=n)
    by_ref: dict[str, dict[str, dict[str, Any]]] = {p.ref: {} for p in load.purchases}
    for event in load.events:
        obj = event["data"]["object"]
        kind = event["type"]
        if kind == "checkout.session.completed":
            by_ref[f"stripe:sub:{obj['subscription']}"]["checkout"] = event
        elif kind == "customer.subscription.created":
            by_ref[f"stripe:sub:{obj['id']}"]["subscription"] = event
        elif kind == "invoice.paid" and obj.get("billing_reason") == "subscription_create":
            by_ref[f"stripe:sub:{obj['subscription']}"]["invoice"] = event
    templates = {p.ref: p.template for p in load.purchases}
    return list(by_ref.values()), templates


async def _deliver(
    url: str,
    database_url: str,
    starts: list[dict[str, dict[str, Any]]],
    gap: float,
    settle: float,
) -> tuple[dict[str, float], dict[str, int]]:
    """Post every subscription's start events, ``gap`` apart, in turned orders, while
    watching for their keys (``_watch``, from when the first events left). A one-off
    purchase first, its key awaited: the worker is up, its imports, connections and
    template cache warm (``devtools.bench.burst`` does too)."""
    refs = [f"stripe:sub:{s['subscription']['data']['object']['id']}" for s in starts]
    async with httpx.AsyncClient(timeout=30) as client:

        async def post(event: dict[str, Any]) -> None:
            body = orjson.dumps(event)
            headers = {"Stripe-Signature": sign(body, SECRET)}
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()

        warm = loadgen_requests.checkout_event("warm", 0, int(time.time()))
        warm["data"]["object"]["metadata"] = {workload.TEMPLATE_KEY: "1"}  # no Stripe call
        await post(warm)
        warm_ref = loadgen_requests.license_ref("warm", 0)
        await asyncio.to_thread(_watch, database_url, [warm_ref], time.perf_counter(), settle)
        started = time.perf_counter()
        watch = asyncio.create_task(asyncio.to_thread(_watch, database_url, refs, started, settle))
        for step in range(3):
            if step:
                await asyncio.sleep(started + step * gap - time.perf_counter())
            batch = [s[_ORDERS[i % 6][step]] for i, s in enumerate(starts)]
            await asyncio.gather(*(post(e) for e in batch))
        return await watch


def _watch(
    database_url: str, refs: list[str], started: float, timeout: float
) -> tuple[dict[str, float], dict[str, int]]:
    """When each ref's key appeared (seconds after ``started``), and its template."""
    seen: dict[str, float] = {}
    made: dict[str, int] = {}
    deadline = time.perf_counter() + timeout
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            while len(seen) < len(refs) and time.perf_counter() < deadline:
                query = text("SELECT ref, template_id FROM license WHERE key IS NOT NULL")
                made = {ref: template for ref, template in connection.execute(query)}
                connection.rollback()  # a fresh snapshot each time
                now = time.perf_counter() - started
                for ref in made.keys() & set(refs):
                    seen.setdefault(ref, now)
                time.sleep(_POLL)
    finally:
        engine.dispose()
    return seen, made


def _one(
    st: Stack,
    redis_url: str,
    *,
    name: str,
    n: int,
    gap: float,
    latency_ms: float,
    stripe_latency_ms: float,
    api: bool,
    timeout: float,
) -> dict[str, Any]:
    config = st.workdir / f"{name}.toml"
    config.write_text(workload.BRIDGE_CONFIG)
    sandbox_config = st.workdir / f"{name}-sandbox.toml"
    sandbox_config.write_text(workload.SANDBOX_CONFIG)
    database_url = f"sqlite:///{st.workdir / f'{name}.db'}"
    migrate(database_url)
    sandbox_port, web_port = free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    env = bridge_env(database_url, redis_url, config, f"{sandbox}/api/")
    args = ["-m", "bridge", "sandbox", "--port", str(sandbox_port), "--no-access-log"]
    sandbox_proc = st.python(f"{name}-sandbox", [*args, "--config", str(sandbox_config)], env)
    st.wait_http(f"{sandbox}/sandbox/faults", sandbox_proc)
    procs = [sandbox_proc]
    faults = {"latency_ms": latency_ms, "seed": 1}
    httpx.post(f"{sandbox}/sandbox/faults", json=faults, timeout=30).raise_for_status()
    now = int(time.time())
    starts, templates = _starts(n, now)
    if api:
        stripe_port = free_port()
        stripe = f"http://127.0.0.1:{stripe_port}"
        standin_args = ["-m", "devtools.stripe_standin", "--port", str(stripe_port)]
        standin_args += ["--latency-ms", str(stripe_latency_ms)]
        proc = st.python(f"{name}-stripe", standin_args, env)
        procs.append(proc)
        st.wait_http(f"{stripe}/standin/state", proc)
        known = {
            "subscriptions": [s["subscription"]["data"]["object"] for s in starts],
            "checkout_sessions": [s["checkout"]["data"]["object"] for s in starts],
        }
        httpx.post(f"{stripe}/standin/objects", json=known, timeout=30).raise_for_status()
        env = {**env, "STRIPE_API_KEY": _API_KEY, "STRIPE_API_BASE": stripe}
    web = st.python(f"{name}-web", ["-m", "bridge", "serve", "--port", str(web_port)], env)
    st.wait_http(f"http://127.0.0.1:{web_port}/healthz", web)
    procs.append(st.python(f"{name}-worker", ["-m", "bridge", "worker"], env))
    procs.append(web)
    refs = list(templates)
    url = f"http://127.0.0.1:{web_port}/webhooks/stripe"
    seen, made = asyncio.run(_deliver(url, database_url, starts, gap, timeout))
    for proc in procs:
        st.stop(proc)
    times = sorted(seen.values())
    return {
        "stripe_api_key": api,
        "keys": len(seen),
        "wrong_template": sorted(r for r in refs if r in made and made[r] != templates[r]),
        "seconds_median": round(statistics.median(times), 3) if times else None,
        "seconds_max": round(times[-1], 3) if times else None,
    }


def run(
    st: Stack,
    redis_url: str,
    *,
    n: int,
    gap: float,
    latency_ms: float,
    stripe_latency_ms: float,
    timeout: float,
) -> dict[str, Any]:
    runs = [
        _one(
            st,
            f"{redis_url}/{3 + number}",
            name=f"starts-{'api' if api else 'noapi'}",
            n=n,
            gap=gap,
            latency_ms=latency_ms,
            stripe_latency_ms=stripe_latency_ms,
            api=api,
            timeout=timeout,
        )
        for number, api in enumerate((True, False))
    ]
    return {
        "n": n,
        "gap_seconds": gap,
        "latency_ms": latency_ms,
        "stripe_latency_ms": stripe_latency_ms,
        "runs": runs,
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['n']} subscriptions started at once, their three start events "
        f"{result['gap_seconds']} s apart in turned orders; Cryptolens at "
        f"{result['latency_ms']} ms, Stripe at {result['stripe_latency_ms']} ms",
        "first start event -> key     median      max   keys  wrong template",
    ]
    for r in result["runs"]:
        label = "with STRIPE_API_KEY" if r["stripe_api_key"] else "without"
        lines.append(
            f"  {label:<26} {r['seconds_median']!s:>7} s {r['seconds_max']!s:>7} s "
            f"{r['keys']:>5}  {len(r['wrong_template'])}"
        )
    return "\n".join(lines)
