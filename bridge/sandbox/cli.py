"""``cryptolens-bridge sandbox``: serve the Web API sandbox under uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click
import uvicorn

from bridge.sandbox.app import create_app
from bridge.sandbox.config import ConfigError, SandboxConfig, load_config
from bridge.sandbox.faults import FaultConfig, LostReplyMode


def banner(config: SandboxConfig, base_url: str, db_path: Path | None) -> str:
    lines = [f"Cryptolens Web API sandbox at {base_url}"]
    lines.append(f"  state: {db_path or 'in memory (lost on exit)'}")
    lines.append("  access tokens:")
    lines += [f"    {t.value}  {t.scope()}" for t in config.tokens]
    lines.append("  license templates:")
    lines += [
        f"    {t.id}  {t.name}  product {t.product_id}  period {t.period} days"
        f"{'  (no expiry)' if t.period == 0 else ''}"
        for t in config.templates
    ]
    lines.append("  inspect: GET /sandbox/state   steer: POST /sandbox/faults, /sandbox/reset")
    return "\n".join(lines)


@click.command(help="Run the Cryptolens Web API sandbox.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8790, show_default=True, type=int)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file with products, templates, tokens and customers.",
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file that keeps the state across restarts (default: in memory).",
)
@click.option("--latency-ms", default=0.0, type=click.FloatRange(min=0), help="Added per call.")
@click.option(
    "--reply-delay-ms",
    default=0.0,
    type=click.FloatRange(min=0),
    help="Wait after applying a call, before answering (slow replies, read timeouts).",
)
@click.option(
    "--fail-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of calls answered 503 before being applied.",
)
@click.option(
    "--lost-reply-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of calls applied, then answered 504 or cut off.",
)
@click.option(
    "--lost-reply-mode",
    default="504",
    type=click.Choice(["504", "drop", "mixed"]),
    show_default=True,
    help="How a lost reply looks: a 504, a dropped connection, or either.",
)
@click.option(
    "--rate-limit",
    default=0.0,
    type=click.FloatRange(min=0),
    help="Calls per second above which calls get 429 with Retry-After (0: no limit).",
)
@click.option("--seed", type=int, default=None, help="Seed of the fault generator.")
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log every call (turn off under load: benchmarks).",
)
def command(
    host: str,
    port: int,
    config_path: Path | None,
    db_path: Path | None,
    latency_ms: float,
    reply_delay_ms: float,
    fail_rate: float,
    lost_reply_rate: float,
    lost_reply_mode: str,
    rate_limit: float,
    seed: int | None,
    access_log: bool,
) -> None:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    faults = FaultConfig(
        latency_ms=latency_ms,
        reply_delay_ms=reply_delay_ms,
        fail_rate=fail_rate,
        lost_reply_rate=lost_reply_rate,
        lost_reply_mode=cast(LostReplyMode, lost_reply_mode),
        rate_limit=rate_limit,
        seed=seed,
    )
    app = create_app(config, db_path=db_path, faults=faults)
    click.echo(banner(config, f"http://{host}:{port}/api/", db_path))
    # ws="none": the sandbox speaks plain HTTP and needs no websocket library.
    uvicorn.run(app, host=host, port=port, ws="none", log_level="info", access_log=access_log)
