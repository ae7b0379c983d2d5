"""One chaos run: the stack, every event delivered three times and shuffled, the worker
killed at random moments, then the check once nothing is left to do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from pathlib import Path

import httpx

from bridge.core.signing import sign
from devtools import procs, workload
from devtools.bench.stack import SECRET, bridge_env, stack
from devtools.chaos.check import check
from devtools.chaos.db import fresh_database, unfinished
from devtools.chaos.faults import ForeignKeys, SlowReplies
from devtools.chaos.report import RunResult

DELIVERIES = 3
POST_CONCURRENCY = 8
# The worker's settings: realistic in kind, short so that a run takes seconds.
WORKER_ENV = {
    "CRYPTOLENS_CONNECT_TIMEOUT": "1",
    "CRYPTOLENS_READ_TIMEOUT": "2",
    "BRIDGE_LEASE_SECONDS": "8",
    "BRIDGE_SETTLE_SECONDS": "1",
    "BRIDGE_START_WAIT_SECONDS": "3",
    "BRIDGE_MAX_ATTEMPTS": "40",
    "BRIDGE_RETRY_BASE_SECONDS": "0.2",
    "BRIDGE_RETRY_CAP_SECONDS": "2",
    "BRIDGE_RELAY_INTERVAL": "2",
    "BRIDGE_WORKER_SHUTDOWN_WAIT": "1",
}


async def _post_all(url: str, bodies: list[bytes]) -> list[int]:
    gate = asyncio.Semaphore(POST_CONCURRENCY)
    async with httpx.AsyncClient(timeout=30) as client:

        async def post(body: bytes) -> int:
            async with gate:
                headers = {
                    "Content-Type": "application/json",
                    "Stripe-Signature": sign(body, SECRET),
                }
                for _ in range(5):
                    with contextlib.suppress(httpx.TransportError):
                        response = await client.post(url, content=body, headers=headers)
                        return response.status_code
                    await asyncio.sleep(0.2)
                return 0

        return await asyncio.gather(*(post(b) for b in bodies))


def run_once(
    seed: int,
    *,
    database_url: str | None = None,
    keep: Path | None = None,
    one_offs: int = 20,
    subscriptions: int = 8,
    timeout: float = 90.0,
) -> RunResult:
    """One chaos run, checked; never raises for what it finds (see ``RunResult``)."""
    rng = random.Random(seed)
    result = RunResult(seed, "postgresql" if database_url else "sqlite")
    started = time.monotonic()
    with stack(keep) as st, fresh_database(st.workdir, database_url) as db_url:
        config = st.workdir / "bridge.toml"
        config.write_text(workload.BRIDGE_CONFIG)
        sandbox_config = st.workdir / "sandbox.toml"
        sandbox_config.write_text(workload.SANDBOX_CONFIG)
        redis_url = st.start_redis()
        sandbox_port, web_port = procs.free_port(), procs.free_port()
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        env = bridge_env(db_url, f"{redis_url}/0", config, f"{sandbox}/api/")
        env.update(WORKER_ENV)
        proc = st.python(
            "sandbox",
            ["-m", "bridge", "sandbox", "--port", str(sandbox_port), "--no-access-log",
             "--config", str(sandbox_config), "--fail-rate", "0.1", "--lost-reply-rate",
             "0.05", "--lost-reply-mode", "mixed", "--seed", str(seed)],
            env,
        )  # fmt: skip
        st.wait_http(f"{sandbox}/sandbox/faults", proc)
        web = st.python("web", ["-m", "bridge", "serve", "--port", str(web_port)], env)
        st.wait_http(f"http://127.0.0.1:{web_port}/healthz", web)
        worker = st.python("worker", ["-m", "bridge", "worker"], env)

        load = workload.build(
            seed=seed, now=int(time.time()), one_offs=one_offs, subscriptions=subscriptions
        )
        bodies = [json.dumps(e).encode() for e in load.events for _ in range(DELIVERIES)]
        rng.shuffle(bodies)
        result.deliveries = len(bodies)
        slow = SlowReplies(
            sandbox, random.Random(seed + 1), float(WORKER_ENV["CRYPTOLENS_READ_TIMEOUT"])
        )
        slow.start()
        foreign = ForeignKeys(sandbox, random.Random(seed + 2))
        foreign.start()
        t0 = time.monotonic()
        # Kills at random moments while the work is under way, each a while after the
        # worker (re)started (it takes about a second to start): at least two per run.
        kills_left = rng.randint(2, 4)
        next_kill = t0 + rng.uniform(0.3, 3.0)
        statuses = asyncio.run(_post_all(f"http://127.0.0.1:{web_port}/webhooks/stripe", bodies))
        bad = Counter(s for s in statuses if not 200 <= s < 300)
        if bad:
            result.failures.append(f"deliveries not acknowledged: {dict(bad)}")
        deadline = t0 + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if kills_left and time.monotonic() >= next_kill:
                kills_left -= 1
                result.kills_busy += unfinished(db_url) > 0
                st.kill(worker)
                result.kills += 1
                time.sleep(rng.uniform(0, 1.0))
                worker = st.python("worker", ["-m", "bridge", "worker"], env)
                next_kill = time.monotonic() + rng.uniform(1.0, 4.0)
                quiet_since = None
                continue
            if worker.poll() is not None:
                result.failures.append(f"the worker stopped by itself ({worker.returncode})")
                st.stop(worker)  # gone already: forgotten, so that it is not stopped again
                worker = st.python("worker", ["-m", "bridge", "worker"], env)
            if not kills_left and unfinished(db_url) == 0:
                # Quiet twice in a row, a moment apart: nothing was about to be re-queued.
                if quiet_since is not None and time.monotonic() - quiet_since > 1.0:
                    break
                quiet_since = quiet_since or time.monotonic()
            else:
                quiet_since = None
            time.sleep(0.25)
        else:
            result.failures.append(
                f"{unfinished(db_url)} intent(s) still unfinished after {timeout:g} s"
            )
        slow.stop()
        foreign.stop()
        result.foreign_keys = len(foreign.keys)
        state = httpx.get(f"{sandbox}/sandbox/state", timeout=30).json()
        check(result, load.purchases, state, db_url, frozenset(foreign.keys))
        result.sandbox_calls = state["counts"]["calls_received"]
        if keep is not None:
            (st.workdir / "state.json").write_text(json.dumps(state, indent=1))
            (st.workdir / "foreign.json").write_text(json.dumps(sorted(foreign.keys)))
    result.seconds = round(time.monotonic() - started, 1)
    result.passed = not result.failures
    return result
