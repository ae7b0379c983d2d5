"""The bench's stack: the child processes of one run and what they are given.

Every process the figures talk about runs on its own, as in production: the web app
(``python -m bridge serve``), the worker, the sandbox standing in for Cryptolens, a
private ``redis-server`` on a free port (the machine's Redis is never touched) and the
load generator (``devtools.loadgen``), under the one supervisor (``devtools.procs``),
their logs in the run's directory. Every bench mode (``devtools.bench.*``) and chaos
start their stacks from here, so that no mode imports another.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from devtools import loadgen
from devtools.procs import Supervisor

SECRET = "whsec_bench_only_not_a_real_secret"  # noqa: S105 - signs local bench events
# Each source its own secret: the bridge refuses to start with one shared (the contract's
# signature does not cover the source).
CRM_SECRET = "crm_bench_only_not_a_real_secret"  # noqa: S105 - signs local bench deals
TOKEN = "sandbox-demo-token-0001"  # noqa: S105 - the sandbox default token
CONFIG = "[stripe]\ndefault_template_id = 1\n\n[crm.bench]\ndefault_template_id = 1\n"


class Stack(Supervisor):
    """One run's children, each logging to the run's directory, where the run keeps its
    databases and configs too."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.workdir: Path = workdir


@contextlib.contextmanager
def stack(keep: Path | None) -> Iterator[Stack]:
    """A supervisor whose children log to ``keep`` (else a temporary directory, removed
    with them at the end)."""
    workdir = Path(tempfile.mkdtemp(prefix="bridge-bench-")) if keep is None else keep
    workdir.mkdir(parents=True, exist_ok=True)
    running = Stack(workdir)
    try:
        yield running
    finally:
        running.stop_all()
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


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
        # The operator port (/metrics, /readyz) on one the system picks: a bench's web
        # processes must not take a running bridge's 9464, nor each other's.
        BRIDGE_METRICS_ADDRESS="127.0.0.1:0",
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
        [sys.executable, "-m", "devtools.loadgen", *args],
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


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One endpoint over all rounds: counts summed, the median rate, the worst p99."""
    statuses: dict[str, int] = {}
    for run in runs:
        for status, count in run["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    p99s = [r["latency_ms"]["p99"] for r in runs if r["latency_ms"]["p99"] is not None]
    return {
        "ok": sum(r["ok"] for r in runs),
        "statuses": statuses,
        "per_second": median([r["per_second"] for r in runs]),
        "latency_ms": {"p99": max(p99s) if p99s else None},
        "cpu_us_per_request": median(
            [r["cpu_us_per_request"] for r in runs if "cpu_us_per_request" in r]
        ),
    }


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
