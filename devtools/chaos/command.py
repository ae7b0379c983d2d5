"""``cryptolens-bridge chaos``: the runs, one line each, and a summary."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import click

from devtools.bench.stack import machine
from devtools.chaos.report import line, summary
from devtools.chaos.run import run_once


@click.command("chaos")
@click.option("--runs", default=1, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", type=int, help="Seed of the first run (then +1 per run); default random.")
@click.option(
    "--database-url",
    help="A PostgreSQL server (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres): "
    "each run creates and drops a database of its own there. Default: SQLite files.",
)
@click.option("--one-offs", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--subscriptions", default=8, show_default=True, type=click.IntRange(0, 100))
@click.option(
    "--timeout", default=90.0, show_default=True, help="Seconds a run may take to settle."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep each run's databases, logs and sandbox state under this directory.",
)
def command(
    runs: int,
    seed: int | None,
    database_url: str | None,
    one_offs: int,
    subscriptions: int,
    timeout: float,
    as_json: bool,
    keep: Path | None,
) -> None:
    """Run the bridge under redeliveries, faults, slow replies and worker kills; check
    that every purchase had each of its effects exactly once. Exit code 1 if a run failed.
    """
    first = seed if seed is not None else random.randrange(1_000_000)
    results = []
    for n in range(runs):
        run_seed = first + n
        result = run_once(
            run_seed,
            database_url=database_url,
            keep=keep / f"run-{run_seed}" if keep else None,
            one_offs=one_offs,
            subscriptions=subscriptions,
            timeout=timeout,
        )
        results.append(result)
        if not as_json:
            click.echo(line(result))
    if as_json:
        click.echo(
            json.dumps({"machine": machine(), "runs": [asdict(r) for r in results]}, indent=2)
        )
    else:
        click.echo("\n" + summary(results))
    if not all(r.passed for r in results):
        raise SystemExit(1)
