"""``cryptolens-bridge bench``: ingest throughput, webhook-to-key latency and memory.

Every process the figures talk about runs on its own, as in production: the web app
(``python -m bridge serve``), the worker (``python -m bridge worker``), the sandbox
standing in for Cryptolens, a private ``redis-server`` on a free port (the machine's
Redis is never touched) and the load generator (``bridge.tools.loadgen``). The database is a
SQLite file in a temporary directory.

1. Ingest: signed events acknowledged per second by ``POST /webhooks/stripe``, closed
   loop at a fixed concurrency, as a ratio to a bare Starlette endpoint that reads the
   body and answers 200 (same uvicorn options, same client, same bodies); and the p99
   of the acknowledgement latency. The two endpoints take turns, several rounds: the
   ratio is the median of the rounds' ratios, the p99 the worst round's.
2. Webhook to key: events sent open loop at a fixed rate with web, worker and sandbox
   running; per event, the time from sending it to its key's creation in the sandbox
   (``created_ns`` in ``/sandbox/state``; the event's license ref names the key in the
   bridge's ``license`` table).
3. Memory: peak resident set (``VmHWM``) of the web and worker processes after phase 2.

It measures and reports; a missed target is printed, and the exit code stays 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import httpx
from sqlalchemy import create_engine, text

from bridge.core.db import migrate
from bridge.tools import bench_scrape, loadgen
from bridge.tools import burst as burst_mode
from bridge.tools import starts as starts_mode
from bridge.tools.procs import REDIS_HINT, free_port, redis_server_binary

SECRET = "whsec_bench_only_not_a_real_secret"  # noqa: S105 - signs local bench events
# Each source its own secret: the bridge refuses to start with one shared (the contract's
# signature does not cover the source).
CRM_SECRET = "crm_bench_only_not_a_real_secret"  # noqa: S105 - signs local bench deals
TOKEN = "sandbox-demo-token-0001"  # noqa: S105 - the sandbox default token
CONFIG = "[stripe]\ndefault_template_id = 1\n\n[crm.bench]\ndefault_template_id = 1\n"
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Figure:
    name: str
    measured: float | None
    unit: str
    target: float | None  # None: shown for context, no target
    higher_is_better: bool = False

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        if self.measured is None:
            return False
        if self.higher_is_better:
            return self.measured >= self.target
        return self.measured <= self.target


# -- processes -----------------------------------------------------------------------------


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"{url} did not start: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.05)
    raise click.ClickException(f"{url} did not answer within {START_TIMEOUT}s")


@dataclass
class Stack:
    """The child processes of one run, stopped (and logged to ``workdir``) at the end."""

    workdir: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]]

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the proc
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"


@contextlib.contextmanager
def stack(keep: Path | None) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="bridge-bench-")) if keep is None else keep
    workdir.mkdir(parents=True, exist_ok=True)
    running = Stack(workdir, [])
    try:
        yield running
    finally:
        running.stop_all()
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def start_redis(st: Stack) -> str:
    server = redis_server_binary()
    if server is None:
        raise click.ClickException(f"the bench runs a private redis-server: {REDIS_HINT}")
    port = free_port()
    log = open(st.log("redis"), "ab")  # noqa: SIM115
    proc = subprocess.Popen(  # noqa: S603
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    st.procs.append(("redis", proc))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return f"redis://127.0.0.1:{port}"
        time.sleep(0.05)
    raise click.ClickException("redis-server did not start")


def bridge_env(database_url: str, redis_url: str, config: Path, sandbox: str) -> dict[str, str]:
    own = ("BRIDGE_", "STRIPE_", "CRM_SECRET_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env.update(
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_REDIS_URL=redis_url,
        BRIDGE_CONFIG=str(config),
        STRIPE_WEBHOOK_SECRET=SECRET,
        # The generic CRM endpoint the ingest phase also drives (/webhooks/crm/bench).
        CRM_SECRET_BENCH=CRM_SECRET,
        CRYPTOLENS_API_URL=sandbox,
        CRYPTOLENS_TOKEN=TOKEN,
        PYTHONUNBUFFERED="1",
    )
    return env


def run_loadgen(st: Stack, args: list[str], extra: dict[str, str] | None = None) -> dict[str, Any]:
    env = {
        **os.environ,
        loadgen.SECRET_ENV: SECRET,
        loadgen.CRM_SECRET_ENV: CRM_SECRET,
        **(extra or {}),
    }
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "bridge.tools.loadgen", *args],
        env=env,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise click.ClickException(f"load generator failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set so far (VmHWM), in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- phases --------------------------------------------------------------------------------


def ingest(
    st: Stack, redis_url: str, *, seconds: float, concurrency: int, rounds: int = 1
) -> dict[str, Any]:
    """Both endpoints run side by side and take turns under the load, ``rounds`` times.

    The two share the machine's cores with the load generator (and the bridge with
    Redis), so what either reaches moves with whatever else runs: the bare endpoint's
    figure has varied by half between runs. Turns taken back to back see the same
    machine, and the median of the rounds' ratios is steadier than any one of them.
    """
    config = st.workdir / "bridge.toml"
    config.write_text(CONFIG)
    database_url = f"sqlite:///{st.workdir / 'ingest.db'}"
    migrate(database_url)
    env = bridge_env(database_url, f"{redis_url}/0", config, "http://127.0.0.1:9/api/")
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    for name, args in (
        ("bare", ["-m", "bridge.tools.loadgen", "bare"]),
        ("bridge", ["-m", "bridge", "serve"]),
    ):
        port = free_port()
        proc = st.start(f"ingest-{name}", [*args, "--port", str(port)], env)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, st.log(f"ingest-{name}"))
        servers[name] = (port, proc)
    # The bridge takes a turn on Stripe's endpoint and one on the generic CRM endpoint.
    turns_of = [(*servers["bare"], "bare", "stripe"), (*servers["bridge"], "bridge", "stripe")]
    turns_of.append((*servers["bridge"], "crm", "crm"))
    turns: list[dict[str, Any]] = []
    for n in range(rounds):
        turn: dict[str, Any] = {}
        for port, proc, name, kind in turns_of:
            load = ["closed", "--port", str(port), "--run", f"i{name[0]}{n}", "--kind", kind]
            load += ["--seconds", str(seconds), "--concurrency", str(concurrency)]
            before = cpu_seconds(proc.pid)
            turn[name] = run_loadgen(st, load)
            after = cpu_seconds(proc.pid)
            # The server's CPU per request, warm-up included: steadier than acks/s, which
            # also moves with what the load generator gets of the cores.
            answered = turn[name]["answered"]
            if before is not None and after is not None and answered:
                turn[name]["cpu_us_per_request"] = (after - before) * 1e6 / answered
        bare = turn["bare"]["per_second"]
        turn["ratio"] = turn["bridge"]["per_second"] / bare if bare else None
        turns.append(turn)
    for _, proc in servers.values():
        st.stop(proc)
    results: dict[str, Any] = {
        "rounds": turns,
        "bare": _summary([t["bare"] for t in turns]),
        "bridge": _summary([t["bridge"] for t in turns]),
        "crm": _summary([t["crm"] for t in turns]),
        "ratio": _median([t["ratio"] for t in turns if t["ratio"] is not None]),
    }
    with _engine(database_url) as connection:
        results["events_stored"] = connection.execute(
            text("SELECT COUNT(*) FROM webhook_event")
        ).scalar_one()
    return results


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One endpoint over all rounds: counts summed, the median rate, the worst p99."""
    statuses: dict[str, int] = {}
    for run in runs:
        for status, count in run["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    p99s = [r["latency_ms"]["p99"] for r in runs if r["latency_ms"]["p99"] is not None]
    return {
        "ok": sum(r["ok"] for r in runs),
        "statuses": statuses,
        "per_second": _median([r["per_second"] for r in runs]),
        "latency_ms": {"p99": max(p99s) if p99s else None},
        "cpu_us_per_request": _median(
            [r["cpu_us_per_request"] for r in runs if "cpu_us_per_request" in r]
        ),
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@contextlib.contextmanager
def _engine(database_url: str) -> Iterator[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _keys_made(database_url: str, refs: list[str]) -> dict[str, str]:
    with _engine(database_url) as connection:
        rows = connection.execute(text("SELECT ref, key FROM license WHERE key IS NOT NULL"))
        made = {ref: key for ref, key in rows}
    return {ref: made[ref] for ref in refs if ref in made}


def latency(
    st: Stack, redis_url: str, *, rate: float, seconds: float, settle: float
) -> dict[str, Any]:
    config = st.workdir / "bridge.toml"
    config.write_text(CONFIG)
    database_url = f"sqlite:///{st.workdir / 'latency.db'}"
    migrate(database_url)
    sandbox_port, web_port = free_port(), free_port()
    sandbox_root = f"http://127.0.0.1:{sandbox_port}"
    env = bridge_env(database_url, f"{redis_url}/1", config, f"{sandbox_root}/api/")
    sandbox = st.start(
        "sandbox", ["-m", "bridge", "sandbox", "--port", str(sandbox_port), "--no-access-log"], env
    )
    wait_http(f"{sandbox_root}/sandbox/faults", sandbox, st.log("sandbox"))
    web = st.start("web", ["-m", "bridge", "serve", "--port", str(web_port)], env)
    wait_http(f"http://127.0.0.1:{web_port}/healthz", web, st.log("web"))
    worker = st.start("worker", ["-m", "bridge", "worker"], env)

    # Warm up (imports, connections, the template cache) and prove the worker is there.
    warm = 5
    run_loadgen(st, ["open", "--port", str(web_port), "--run", "w", "--rate", "50",
                     "--seconds", str(warm / 50)])  # fmt: skip
    warm_refs = [loadgen.license_ref("w", n) for n in range(warm)]
    _wait_keys(database_url, warm_refs, worker, st, timeout=START_TIMEOUT)

    procs = {"web": web, "worker": worker, "sandbox": sandbox}
    cpu_before = {n: cpu_seconds(p.pid) for n, p in procs.items()}
    sent = run_loadgen(
        st,
        ["open", "--port", str(web_port), "--run", "l", "--rate", str(rate),
         "--seconds", str(seconds)],
    )  # fmt: skip
    refs = [loadgen.license_ref("l", n) for n in range(sent["sent"])]
    made = _wait_keys(database_url, refs, worker, st, timeout=settle)
    memory = {"web": peak_rss_mb(web.pid), "worker": peak_rss_mb(worker.pid)}
    # CPU each process spent on the measured events (from the first send to the last key),
    # per event: where the time goes when a latency figure moves.
    cpu_ms: dict[str, float] = {}
    for name, proc in procs.items():
        before, after = cpu_before[name], cpu_seconds(proc.pid)
        if before is not None and after is not None and refs:
            cpu_ms[name] = (after - before) * 1000 / len(refs)

    state = httpx.get(f"{sandbox_root}/sandbox/state", timeout=30).json()
    created = {k["key"]: k["created_ns"] for k in state["keys"]}
    to_key: list[float] = []
    for n, ref in enumerate(refs):
        key, sent_ns = made.get(ref), sent["sent_ns"][n]
        if key is not None and created.get(key) is not None and sent_ns is not None:
            to_key.append((created[key] - sent_ns) / 1e6)
    sent.pop("sent_ns")
    return {
        "load": sent,
        "events": len(refs),
        "keys_created": len(made),
        "sandbox_keys": state["counts"]["keys"],
        "sandbox_calls": state["counts"]["calls_received"],
        "webhook_to_key_ms": {
            "p50": _round(_percentile(to_key, 50)),
            "p90": _round(_percentile(to_key, 90)),
            "p99": _round(_percentile(to_key, 99)),
            "max": _round(max(to_key) if to_key else None),
        },
        "peak_rss_mb": {k: _round(v) for k, v in memory.items()},
        "cpu_ms_per_event": {k: _round(v) for k, v in cpu_ms.items()},
    }


def _wait_keys(
    database_url: str,
    refs: list[str],
    worker: subprocess.Popen[bytes],
    st: Stack,
    *,
    timeout: float,
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        made = _keys_made(database_url, refs)
        if len(made) == len(refs) or time.monotonic() > deadline:
            return made
        if worker.poll() is not None:
            raise click.ClickException(
                f"the worker stopped: {st.log('worker').read_text()[-2000:]}"
            )
        time.sleep(0.1)


def _percentile(values: list[float], q: float) -> float | None:
    return loadgen._percentile(values, q)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def figures(ingested: dict[str, Any], timed: dict[str, Any]) -> list[Figure]:
    bridge, bare, crm = ingested["bridge"], ingested["bare"], ingested["crm"]
    to_key, rss = timed["webhook_to_key_ms"], timed["peak_rss_mb"]
    return [
        Figure("ingest: bridge acks/s", _round(bridge["per_second"]), "/s", None),
        Figure("ingest: bare endpoint acks/s", _round(bare["per_second"]), "/s", None),
        # No target any more: every webhook goes through Starlette's router and middleware,
        # which a middleware added later must see; the ratio is reported, not judged.
        Figure("ingest: ratio bridge/bare", _round3(ingested["ratio"]), "", None, True),
        Figure("ingest: ack latency p99", bridge["latency_ms"]["p99"], "ms", 10.0),
        Figure("ingest: crm endpoint acks/s", _round(crm["per_second"]), "/s", None),
        Figure("ingest: crm ack latency p99", crm["latency_ms"]["p99"], "ms", 10.0),
        Figure("webhook to key: p50", to_key["p50"], "ms", 20.0),
        Figure("webhook to key: p99", to_key["p99"], "ms", 100.0),
        Figure(
            "webhook to key: events with a key",
            timed["keys_created"],
            f"of {timed['events']}",
            float(timed["events"]),
            True,
        ),
        Figure("peak RSS: web", rss["web"], "MB", 100.0),
        Figure("peak RSS: worker", rss["worker"], "MB", 120.0),
    ]


def _round3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def table(rows: list[Figure]) -> str:
    def cell(f: Figure, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:g} {f.unit}".strip()

    lines = [("figure", "measured", "target", "result")]
    for f in rows:
        op = ">=" if f.higher_is_better else "<="
        target = "-" if f.target is None else f"{op} {cell(f, f.target)}"
        result = {True: "pass", False: "MISS", None: ""}[f.passed]
        lines.append((f.name, cell(f, f.measured), target, result))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
           for line in lines]  # fmt: skip
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _usage(
    seconds: float,
    rounds: int,
    concurrency: int,
    batch: int,
    records: int,
    settle: float,
    keep: Path | None,
) -> None:
    """The usage bench (``bridge.tools.bench_usage``); prints one JSON object."""
    from bridge.tools import bench_usage

    with stack(keep) as st:
        redis_url = start_redis(st)
        report = {
            "machine": machine(),
            "ingest": bench_usage.ingest(
                st,
                redis_url,
                seconds=seconds,
                concurrency=concurrency,
                rounds=rounds,
                batch=batch,
            ),
            "aggregation": bench_usage.aggregation(st, redis_url, records=records, settle=settle),
        }
    for size in report["ingest"].values():
        for turn in size["rounds"]:
            for side in ("bare", "bridge"):
                turn[side].pop("latency_ms", None)
    click.echo(json.dumps(report, indent=2))


def _emit(
    host: dict[str, Any],
    mode: str,
    result: dict[str, Any],
    report: Callable[[dict[str, Any]], str],
    *,
    as_json: bool,
) -> None:
    """One mode's figures: as JSON beside the machine, or the machine then its report."""
    if as_json:
        click.echo(json.dumps({"machine": host, mode: result}, indent=2))
    else:
        click.echo(f"machine: {host['cores']} cores, {host['cpu']}, Python {host['python']}")
        click.echo(report(result))


@click.command("bench")
@click.option(
    "--ingest-seconds", default=5.0, show_default=True, help="Measured, per endpoint and round."
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Ingest turns per endpoint; the ratio is the median of the rounds' ratios.",
)
@click.option("--concurrency", default=8, show_default=True, help="Ingest connections.")
@click.option("--rate", default=100.0, show_default=True, help="Events/s for webhook to key.")
@click.option("--seconds", default=15.0, show_default=True, help="How long to send at --rate.")
@click.option(
    "--settle", default=60.0, show_default=True, help="How long to wait for the last keys."
)
@click.option(
    "--burst",
    type=click.IntRange(1, 100_000),
    help="Instead: N one-off purchases of one product at once (bridge.tools.burst).",
)
@click.option(
    "--starts",
    type=click.IntRange(1, 10_000),
    help="Instead: N subscriptions started at once, their start events in every order, "
    "with and without STRIPE_API_KEY (bridge.tools.starts).",
)
@click.option(
    "--start-gap", default=1.0, show_default=True, help="With --starts: seconds between events."
)
@click.option(
    "--stripe-latency-ms",
    default=250.0,
    show_default=True,
    help="With --starts: the Stripe stand-in's latency.",
)
@click.option(
    "--reconcile",
    "reconciled",
    type=click.IntRange(1, 1_000_000),
    help="Instead: reconcile N licenses seeded in the sandbox (bridge.tools.bench_reconcile).",
)
@click.option(
    "--retention",
    "retained",
    type=click.IntRange(1, 10_000_000),
    help="Instead: webhook latency while N old deliveries are pruned "
    "(bridge.tools.bench_retention; --ingest-seconds, --concurrency).",
)
@click.option(
    "--latency-ms",
    default=80.0,
    show_default=True,
    help="With --burst, --starts or --reconcile: sandbox latency per call.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="With --burst: worker processes.",
)
@click.option(
    "--lost-reply-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="With --burst: replies lost after the call was applied.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option(
    "--usage",
    is_flag=True,
    help="Measure POST /usage instead: records/s beside the bare endpoint, and one call "
    "per key and window.",
)
@click.option("--usage-batch", default=100, show_default=True, help="Records per usage batch.")
@click.option(
    "--usage-records", default=500, show_default=True, help="Records per key in one window."
)
@click.option(
    "--scrape",
    type=click.IntRange(1, 100_000_000),
    help="Instead: one /metrics scrape's database reads with N intents, before and now.",
)
@click.option(
    "--postgres",
    help="With --scrape: a PostgreSQL server URL to make a throwaway database on "
    "(default: a temporary SQLite file).",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep databases and process logs in this directory.",
)
def command(
    ingest_seconds: float,
    rounds: int,
    concurrency: int,
    rate: float,
    seconds: float,
    settle: float,
    burst: int | None,
    starts: int | None,
    start_gap: float,
    stripe_latency_ms: float,
    reconciled: int | None,
    retained: int | None,
    latency_ms: float,
    workers: int,
    lost_reply_rate: float,
    as_json: bool,
    usage: bool,
    usage_batch: int,
    usage_records: int,
    scrape: int | None,
    postgres: str | None,
    keep: Path | None,
) -> None:
    """Measure ingest throughput, webhook-to-key latency and memory against their targets.

    Starts its own redis-server, web, worker and sandbox processes on free ports. A
    missed target is reported, not an error: the exit code is 0.
    """
    host = machine()
    if scrape is not None:
        scraped = bench_scrape.run(scrape, postgres)
        _emit(host, "scrape", scraped, bench_scrape.report, as_json=as_json)
        return
    if starts is not None:
        with stack(keep) as st:
            measured = starts_mode.run(
                st,
                start_redis(st),
                n=starts,
                gap=start_gap,
                latency_ms=latency_ms,
                stripe_latency_ms=stripe_latency_ms,
                timeout=settle,
            )
        _emit(host, "starts", measured, starts_mode.report, as_json=as_json)
        return
    if reconciled is not None:
        from bridge.tools import bench_reconcile

        with stack(keep) as st:
            result = bench_reconcile.run(st, reconciled, latency_ms=latency_ms)
        _emit(host, "reconcile", result, bench_reconcile.report, as_json=as_json)
        return
    if retained is not None:
        from bridge.tools import bench_retention

        with stack(keep) as st:
            pruned = bench_retention.run(
                st, retained, seconds=ingest_seconds, concurrency=concurrency
            )
        _emit(host, "retention", pruned, bench_retention.report, as_json=as_json)
        return
    if burst is not None:
        with stack(keep) as st:
            result = burst_mode.run(
                st,
                start_redis(st),
                n=burst,
                latency_ms=latency_ms,
                lost_reply_rate=lost_reply_rate,
                timeout=settle,
                workers=workers,
            )
        _emit(host, "burst", result, burst_mode.report, as_json=as_json)
        return
    if usage:
        _usage(ingest_seconds, rounds, concurrency, usage_batch, usage_records, settle, keep)
        return
    if not as_json:
        click.echo(
            f"machine: {host['cores']} cores, {host['cpu']}, Python {host['python']}\n"
            f"ingest: {rounds} rounds of {ingest_seconds:g} s per endpoint at concurrency "
            f"{concurrency}; "
            f"webhook to key: {rate:g} events/s for {seconds:g} s\n",
            err=True,
        )
    with stack(keep) as st:
        redis_url = start_redis(st)
        ingested = ingest(
            st, redis_url, seconds=ingest_seconds, concurrency=concurrency, rounds=rounds
        )
        timed = latency(st, redis_url, rate=rate, seconds=seconds, settle=settle)
    rows = figures(ingested, timed)
    missed = [f.name for f in rows if f.passed is False]
    if as_json:
        report = {
            "machine": host,
            "options": {
                "ingest_seconds": ingest_seconds,
                "rounds": rounds,
                "concurrency": concurrency,
                "rate": rate,
                "seconds": seconds,
            },
            "figures": [{**asdict(f), "passed": f.passed} for f in rows],
            "missed": missed,
            "ingest": ingested,
            "webhook_to_key": timed,
        }
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(table(rows))
    served = {n: ingested[n]["cpu_us_per_request"] for n in ("bare", "bridge", "crm")}
    if all(v is not None for v in served.values()):
        click.echo(
            "\nServer CPU per ingest request (median of the rounds): "
            + ", ".join(f"{name} {us:.0f} µs" for name, us in served.items())
        )
    cpu = timed["cpu_ms_per_event"]
    if cpu:
        click.echo(
            "\nCPU per event at the measured rate: "
            + ", ".join(f"{name} {ms:g} ms" for name, ms in cpu.items())
        )
    click.echo(f"\nmissed: {', '.join(missed)}" if missed else "\nall targets met")
