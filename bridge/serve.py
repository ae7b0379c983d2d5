"""``cryptolens-bridge serve``: the webhook receiver under uvicorn."""

from __future__ import annotations

from typing import Any

import click
import uvicorn

from bridge.app import create_app
from bridge.core import logs
from bridge.core.settings import ConfigError, Settings

# One set of server options, shared with the bench's bare reference endpoint so that the
# two are compared under the same server. uvloop and httptools come with uvicorn[standard].
UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "ws": "none",
    "lifespan": "on",
    "log_level": "warning",
    "access_log": False,
}


def run(app: Any, host: str, port: int) -> None:
    uvicorn.run(app, host=host, port=port, **UVICORN_OPTIONS)


def app_from_environment() -> Any:
    """The app each uvicorn worker process builds for itself (``--workers`` > 1)."""
    settings = Settings()
    logs.configure(settings.log_level)
    logs.register_secrets(settings.stripe_webhook_secret.get_secret_value().split(","))
    return create_app(settings)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help=(
        "Server processes; each has its own database pool and group commit. For "
        "PostgreSQL: on SQLite they queue on its write lock, and one is faster."
    ),
)
def command(host: str, port: int, workers: int) -> None:
    """Receive webhooks (STRIPE_WEBHOOK_SECRET, BRIDGE_DATABASE_URL, BRIDGE_REDIS_URL)."""
    settings = Settings()
    logs.configure(settings.log_level)
    logs.register_secrets(settings.stripe_webhook_secret.get_secret_value().split(","))
    try:
        app = create_app(settings)  # validates the secrets before anything listens
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if workers == 1:
        run(app, host, port)
        return
    uvicorn.run(
        "bridge.serve:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        **UVICORN_OPTIONS,
    )
