"""``cryptolens-bridge bench --burst N``: a launch burst as a buyer sees it.

N one-off purchases of one product arrive at once, against a sandbox that answers each
call after ``--latency-ms`` (80 ms is close to a real round trip to Cryptolens) and loses
``--lost-reply-rate`` of the replies after applying the call. One worker process, or
``--workers`` of them. The figures: the time from the first webhook sent to the last key
created, the last key linked to its customer, and the last purchase event registered;
that time over N x L
(the serial floor the issue measured against); and at N = 1, the round trips on the
critical path (the time to the event over L: calls that run side by side count once).

Every process runs on its own, as in production (see ``devtools.bench``); the
database is a SQLite file. Exactly once is checked too: N keys, N events, every key
held by one license and tagged once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from bridge.core.intents import TAG_PREFIX
from bridge.core.signing import sign
from bridge.cryptolens.pools import Clients
from bridge.store.db import migrate
from devtools import loadgen_requests
from devtools.bench.stack import CONFIG, SECRET, Stack, bridge_env, cpu_seconds
from devtools.procs import free_port

_POLL = 0.01  # seconds between state reads: the resolution of the figures


def _config() -> str:
    return CONFIG


async def _post_all(url: str, events: list[dict[str, Any]]) -> float:
    """Post every event at once (signed as Stripe does); the time the first left.

    Over clients of a few connections each, as the worker's Cryptolens calls are: one
    client of 64 spent 1.5 s of this process's CPU on its pool for 200 posts (the walk
    ``bridge.cryptolens.pools`` describes), so the burst measured its own sender."""

    def make(connections: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=connections))

    async with Clients.split(64, make) as client:

        async def post(event: dict[str, Any]) -> None:
            body = orjson.dumps(event)
            headers = {
                "Stripe-Signature": sign(body, SECRET),
                "Content-Type": "application/json",
            }
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post(e) for e in events))
        return started


def _watch(
    sandbox: str, n: int, started: float, timeout: float
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Poll the sandbox until N keys are linked and N events registered: when each
    count first reached N (seconds after ``started``), and the last state read."""
    reached: dict[str, float | None] = {"key": None, "customer": None, "event": None}
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=30) as client:
        while time.perf_counter() < deadline:
            # Three counts while waiting (the whole state costs the sandbox milliseconds
            # of CPU a read, beside the calls it is timing); the whole state once, at the end.
            progress = client.get(f"{sandbox}/sandbox/state", params={"view": "progress"})
            now = time.perf_counter() - started
            counts = progress.json()
            for name, field in (("key", "keys"), ("customer", "linked_keys"), ("event", "events")):
                if reached[name] is None and counts[field] >= n:
                    reached[name] = now
            if all(v is not None for v in reached.values()):
                break
            time.sleep(_POLL)
        state: dict[str, Any] = client.get(f"{sandbox}/sandbox/state").json()
    return reached, state


def run(
    st: Stack,
    redis_url: str,
    *,
    n: int,
    latency_ms: float,
    lost_reply_rate: float,
    timeout: float,
    workers: int = 1,
) -> dict[str, Any]:
    config = st.workdir / "burst.toml"
    config.write_text(_config())
    database_url = f"sqlite:///{st.workdir / 'burst.db'}"
    migrate(database_url)
    sandbox_port, web_port = free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    env = bridge_env(database_url, f"{redis_url}/2", config, f"{sandbox}/api/")
    args = ["-m", "bridge", "sandbox", "--port", str(sandbox_port), "--no-access-log"]
    sandbox_proc = st.python("burst-sandbox", [*args, "--seed", "1"], env)
    st.wait_http(f"{sandbox}/sandbox/faults", sandbox_proc)
    web = st.python("burst-web", ["-m", "bridge", "serve", "--port", str(web_port)], env)
    st.wait_http(f"http://127.0.0.1:{web_port}/healthz", web)
    procs = {"web": web, "sandbox": sandbox_proc}
    for number in range(1, workers + 1):
        name = "worker" if workers == 1 else f"worker{number}"
        procs[name] = st.python(f"burst-{name}", ["-m", "bridge", "worker"], env)
    url = f"http://127.0.0.1:{web_port}/webhooks/stripe"

    # Warm up with no latency: imports, connections, the template cache (the issue's
    # "template list cached"), one key; then the state is reset and the faults set.
    now = int(time.time())
    asyncio.run(_post_all(url, [loadgen_requests.checkout_event("warm", 0, now)]))
    _watch(sandbox, 1, time.perf_counter(), timeout)
    httpx.post(f"{sandbox}/sandbox/reset", timeout=30).raise_for_status()
    faults = {"latency_ms": latency_ms, "lost_reply_rate": lost_reply_rate, "seed": 1}
    httpx.post(f"{sandbox}/sandbox/faults", json=faults, timeout=30).raise_for_status()

    events = [loadgen_requests.checkout_event("b", i, now) for i in range(n)]
    cpu_before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    started = asyncio.run(_post_all(url, events))
    reached, state = _watch(sandbox, n, started, timeout)
    # CPU each process spent per purchase: on a shared machine, what the times rest on.
    cpu_ms: dict[str, float] = {}
    for name, proc in procs.items():
        before, after = cpu_before[name], cpu_seconds(proc.pid)
        if before is not None and after is not None:
            cpu_ms[name] = round((after - before) * 1000 / n, 2)
    serial = n * latency_ms / 1000
    last = reached["event"]
    keys = state.get("keys", [])
    return {
        "n": n,
        "workers": workers,
        "latency_ms": latency_ms,
        "lost_reply_rate": lost_reply_rate,
        "seconds_to_last": reached,
        "serial_seconds": serial,
        "ratio_to_serial": None if last is None or not serial else last / serial,
        "round_trips": None if last is None or not latency_ms else last / (latency_ms / 1000),
        "keys_created": state.get("counts", {}).get("keys_created"),
        "events": len(state.get("events", [])),
        "tagged_once": sum(1 for k in keys if (k["notes"] or "").count(TAG_PREFIX) == 1),
        "calls": state.get("counts", {}).get("calls_received"),
        "cpu_ms_per_purchase": cpu_ms,
    }


def report(result: dict[str, Any]) -> str:
    reached = result["seconds_to_last"]

    def s(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.2f} s"

    lines = [
        f"burst: {result['n']} purchases of one product, sandbox latency "
        f"{result['latency_ms']:g} ms, lost replies {result['lost_reply_rate']:.0%}, "
        + ("one worker" if result["workers"] == 1 else f"{result['workers']} workers"),
        f"  last key created        {s(reached['key'])}",
        f"  last key linked         {s(reached['customer'])}",
        f"  last purchase event     {s(reached['event'])}",
        f"  N x L (serial floor)    {result['serial_seconds']:.2f} s",
    ]
    if result["ratio_to_serial"] is not None:
        lines.append(f"  ratio to N x L          {result['ratio_to_serial']:.2f}")
    if result["n"] == 1 and result["round_trips"] is not None:
        lines.append(f"  round trips (to event)  {result['round_trips']:.1f}")
    lines.append(
        f"  exactly once: {result['keys_created']} keys created, {result['events']} events, "
        f"{result['tagged_once']} keys tagged once, {result['calls']} calls"
    )
    if result.get("cpu_ms_per_purchase"):
        lines.append(
            "  CPU per purchase: "
            + ", ".join(f"{k} {v:g} ms" for k, v in result["cpu_ms_per_purchase"].items())
        )
    return "\n".join(lines)
